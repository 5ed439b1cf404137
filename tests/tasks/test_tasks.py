"""Task glue: every recipe trains a few steps, then eval and predict work on its run dir."""

import json

import pytest
import torch

from seqlab.tasks import get_task, task_names
from seqlab.train.config import load_config
from seqlab.train.run import build_task, evaluate_run, predict_run, train

TRAINER = ["trainer.max_steps=2", "trainer.progress=false", "trainer.batch_size=4", "trainer.eval_batch_size=8"]


def write_classification(path, rows=24):
    words = {"pos": ["good", "great", "fine"], "neg": ["bad", "awful", "dull"]}
    lines = ["text,label"]
    for i in range(rows):
        label = "pos" if i % 2 else "neg"
        lines.append(f"the film was {words[label][i % 3]} and long,{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_conll(path, sentences=12):
    nouns = ["cat", "dog", "ball"]
    blocks = [f"the DT\n{nouns[i % 3]} NN\nruns VB\n" for i in range(sentences)]
    path.write_text("\n".join(blocks))
    return path


def write_parallel(path, rows=16):
    words = ["a", "b", "c", "d"]
    lines = [" ".join(words[(i + j) % 4] for j in range(3)) for i in range(rows)]
    path.write_text("".join(f"{line}\t{' '.join(reversed(line.split()))}\n" for line in lines))
    return path


TINY_TRANSFORMER = ["model.d_model=8", "model.nhead=2", "model.num_layers=1",
                    "model.dim_feedforward=16"]


def recipe_overrides(name, tmp_path):
    if name == "gpt-charlm":
        return TINY_TRANSFORMER + ["data.max_chars=2000", "data.bptt=8", "model.max_length=8",
                                   "predict.num_samples=1", "predict.max_new_tokens=5"]
    if name == "bert-classify":
        return TINY_TRANSFORMER + [f"data.train={write_classification(tmp_path / 'train.csv')}",
                                   "data.max_length=16", "model.max_length=16"]
    if name == "translate-transformer":
        return TINY_TRANSFORMER + [f"data.train={write_parallel(tmp_path / 'train.tsv')}",
                                   "data.min_frequency=1", "predict.beam_size=2"]
    small = ["model.hidden_size=4"]
    if name == "classify-bilstm":
        return small + [f"data.train={write_classification(tmp_path / 'train.csv')}", "model.embedding_dim=4"]
    if name == "tag-bilstm":
        return small + [f"data.train={write_conll(tmp_path / 'train.conll')}", "model.embedding_dim=4"]
    if name == "charlm-lstm":
        return small + ["data.max_chars=2000", "data.bptt=8", "model.embedding_dim=4",
                        "predict.num_samples=1", "predict.max_new_tokens=5"]
    if name in ("adding-lstm", "copy-lstm"):
        return small + ["data.length=4", "data.train_size=16", "data.valid_size=8", "data.test_size=8"]
    if name == "forecast-gru":
        return small + ["data.synthetic_length=200", "data.window=8"]
    return small


PREDICT_INPUTS = {
    "classify-bilstm": ["the film was good"],
    "tag-bilstm": ["the dog runs"],
    "charlm-lstm": ["The "],
    "adding-lstm": ["0.5 0.25 0.1 0.9 | 0 3"],
    "copy-lstm": ["1 2 3 4 5 6 7 8 1 2"],
    "digits-gru": [" ".join(["0.5"] * 64)],
    "forecast-gru": ["0.1 0.2 0.3"],
    "gpt-charlm": ["The "],
    "bert-classify": ["the film was good"],
    "translate-transformer": ["a b c"],
}


@pytest.mark.parametrize("name", sorted(PREDICT_INPUTS))
def test_recipe_trains_evaluates_and_predicts(tmp_path, name):
    config = load_config(name, recipe_overrides(name, tmp_path) + TRAINER)
    result = train(config, tmp_path / "run")
    run_dir = tmp_path / "run"
    assert result.fit.step == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "valid" in summary and all(isinstance(v, float) for v in summary["valid"].values())
    # Evaluating the saved run reproduces the summary's numbers exactly.
    assert evaluate_run(run_dir)["valid"] == pytest.approx(summary["valid"], rel=1e-6)
    outputs = predict_run(run_dir, PREDICT_INPUTS[name])
    # A two-step translator may end its output at once: an empty translation is still one line.
    assert len(outputs) == 1 and (outputs[0] or name == "translate-transformer")
    assert isinstance(outputs[0], str)


def test_task_registry():
    assert {"classify", "tag", "lm", "adding", "copy", "digits", "forecast"} <= set(task_names())
    with pytest.raises(ValueError, match="not one of"):
        get_task("nope")


def test_language_model_chunks_continue_each_row():
    config = load_config("charlm-lstm", ["data.max_chars=2000", "data.bptt=5"])
    task = build_task(config)
    task.prepare()
    keys = task.train_batches(epoch=0, batch_size=3)
    stream = task.streams["train"]
    width = stream.numel() // 3
    rows = stream[: 3 * width].view(3, width)
    first, second = task.collate(keys[0]), task.collate(keys[1])
    start = keys[0]
    assert torch.equal(first["inputs"], rows[:, start:start + 5])
    assert torch.equal(first["targets"], rows[:, start + 1:start + 6])
    assert keys[1] == start + 5 and torch.equal(second["inputs"][:, 0], first["targets"][:, -1])
    # The epoch's offset is a function of (seed, epoch) only.
    assert task.train_batches(epoch=0, batch_size=3) == keys
    # Data-parallel ranks take disjoint rows of the same layout.
    rank_rows = [task.train_batches(0, 3, rank, 2) and task._train_rows for rank in (0, 1)]
    both = stream[: 6 * (stream.numel() // 6)].view(6, -1)
    assert torch.equal(rank_rows[0], both[:3]) and torch.equal(rank_rows[1], both[3:])


def test_forecast_windows_are_shifted_and_standardised():
    config = load_config("forecast-gru", ["data.synthetic_length=300", "data.window=10", "data.stride=1"])
    task = build_task(config)
    task.prepare()
    x, y = task.tensors["train"]
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(x[1, :-1], x[0, 1:])
    train_part = (x[0, 0] * task.std + task.mean)
    assert train_part.shape == (1,)
    scaled_train = torch.cat([x[:, 0], y[-1]])  # every training step once
    assert abs(float(scaled_train.mean())) < 0.05


def test_classify_holds_out_a_seeded_validation_split(tmp_path):
    path = write_classification(tmp_path / "train.csv", rows=40)
    task = build_task(load_config("classify-bilstm", [f"data.train={path}", "data.valid_fraction=0.25"]))
    task.prepare()
    again = build_task(load_config("classify-bilstm", [f"data.train={path}", "data.valid_fraction=0.25"]))
    again.prepare()
    assert len(task.examples["valid"]) == 10 and len(task.examples["train"]) == 30
    assert task.examples["valid"] == again.examples["valid"]


def test_unknown_label_in_valid_is_a_data_error(tmp_path):
    from seqlab.data.readers import DataError

    train_path = write_classification(tmp_path / "train.csv")
    valid_path = tmp_path / "valid.csv"
    valid_path.write_text("text,label\nsomething,neutral\n")
    task = build_task(load_config("classify-bilstm", [f"data.train={train_path}", f"data.valid={valid_path}"]))
    with pytest.raises(DataError, match=r"'neutral'.*known labels: neg, pos"):
        task.prepare()


def _prepared(name, overrides):
    torch.manual_seed(0)
    task = build_task(load_config(name, overrides))
    task.prepare()
    return task, task.build_model().eval()


def test_classify_metrics_equal_one_example_at_a_time(tmp_path):
    import torch.nn.functional as F

    path = write_classification(tmp_path / "train.csv", rows=30)
    task, model = _prepared("classify-bilstm", [f"data.train={path}", "data.valid_fraction=0.4",
                                                "model.hidden_size=4", "model.embedding_dim=4"])
    metrics = task.evaluate(model, "valid", batch_size=5, device=torch.device("cpu"))
    losses, hits = [], []
    with torch.no_grad():
        for ids, label in task.examples["valid"]:
            logits = model(torch.tensor([ids])).logits  # no padding at all
            losses.append(float(F.cross_entropy(logits, torch.tensor([label]))))
            hits.append(float(logits.argmax(-1).item() == label))
    assert metrics["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert metrics["accuracy"] == pytest.approx(sum(hits) / len(hits))


def test_tag_metrics_count_real_tokens_only(tmp_path):
    import torch.nn.functional as F

    path = tmp_path / "train.conll"
    path.write_text("the DT\ncat NN\n\nthe DT\nbig JJ\nred JJ\ndog NN\nruns VB\n\na DT\ndog NN\n\n" * 3)
    task, model = _prepared("tag-bilstm", [f"data.train={path}", "data.valid_fraction=0.5",
                                           "model.hidden_size=4", "model.embedding_dim=4"])
    metrics = task.evaluate(model, "valid", batch_size=3, device=torch.device("cpu"))
    loss_sum, hits, count = 0.0, 0.0, 0
    with torch.no_grad():
        for ids, tags in task.examples["valid"]:
            logits = model(torch.tensor([ids])).logits[0]  # (L, C)
            loss_sum += float(F.cross_entropy(logits, torch.tensor(tags), reduction="sum"))
            hits += float((logits.argmax(-1) == torch.tensor(tags)).sum())
            count += len(tags)
    assert metrics["loss"] == pytest.approx(loss_sum / count, rel=1e-5)
    assert metrics["accuracy"] == pytest.approx(hits / count)


def test_language_model_evaluation_equals_one_pass_over_each_row():
    import math

    import torch.nn.functional as F

    task, model = _prepared("charlm-lstm", ["data.max_chars=3000", "data.bptt=7", "model.hidden_size=6",
                                            "model.embedding_dim=4"])
    metrics = task.evaluate(model, "valid", batch_size=3, device=torch.device("cpu"))
    stream = task.streams["valid"]
    rows = stream[: 3 * (stream.numel() // 3)].view(3, -1)
    with torch.no_grad():
        logits = model(rows[:, :-1]).logits  # whole rows at once == chunks with carried state
    expected = F.cross_entropy(logits.reshape(-1, logits.size(-1)), rows[:, 1:].reshape(-1))
    assert metrics["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))
    assert metrics["bits_per_token"] == pytest.approx(metrics["loss"] / math.log(2))


def test_transformer_lm_reads_shuffled_blocks_once_per_epoch():
    task = build_task(load_config("gpt-charlm", ["data.max_chars=3000", "data.bptt=8"]))
    task.prepare()
    stream = task.streams["train"]
    keys = task.train_batches(epoch=0, batch_size=4)
    starts = sorted(start for key in keys for start in key)
    # Blocks of bptt + 1 tokens every bptt tokens from the epoch's offset: each token once.
    assert starts == list(range(starts[0], stream.numel() - 8, 8)) and starts[0] < 8
    assert [start for key in keys for start in key] != starts  # shuffled
    batch = task.collate(keys[0])
    first = keys[0][0]
    assert torch.equal(batch["inputs"][0], stream[first:first + 8])
    assert torch.equal(batch["targets"][0], stream[first + 1:first + 9])
    assert task.train_batches(epoch=0, batch_size=4) == keys
    assert task.train_batches(epoch=1, batch_size=4) != keys
    ranks = [task.train_batches(0, 4, rank, 2) for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) and not set(map(tuple, ranks[0])) & set(map(tuple, ranks[1]))


def test_transformer_lm_warns_about_positions_it_never_trains():
    task = build_task(load_config("gpt-charlm", ["data.max_chars=3000", "data.bptt=8", "model.max_length=12"]))
    task.prepare()
    with pytest.warns(UserWarning, match="positions 8..11 are never trained.*model.max_length=8"):
        task.build_model()
