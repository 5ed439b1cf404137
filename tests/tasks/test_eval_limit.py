"""`max_batches` (trainer.eval_max_batches): a quicker evaluation on batches spread over a split."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from tests.tasks.test_tasks import write_classification, write_parallel

from seqlab.tasks.base import spread
from seqlab.train.config import load_config
from seqlab.train.run import build_task, train


def test_spread_takes_evenly_spaced_items():
    assert spread(list(range(10)), 3) == [0, 3, 6]
    assert spread(list(range(10)), 4) == [0, 2, 5, 7]
    assert spread(list(range(4)), 9) == [0, 1, 2, 3]
    assert spread(range(0, 20, 5), None) == [0, 5, 10, 15]


def _prepared(recipe, overrides):
    torch.manual_seed(0)
    task = build_task(load_config(recipe, overrides))
    task.prepare()
    return task, task.build_model().eval()


def test_language_model_limit_reads_the_first_chunks_of_every_row():
    task, model = _prepared("gpt-charlm", ["data.max_chars=3000", "data.bptt=8", "model.d_model=8",
                                           "model.nhead=2", "model.num_layers=1", "model.max_length=8"])
    full = task.evaluate(model, "valid", 4, torch.device("cpu"))
    assert task.evaluate(model, "valid", 4, torch.device("cpu"), max_batches=10**6) == full
    limited = task.evaluate(model, "valid", 4, torch.device("cpu"), max_batches=2)
    stream = task.streams["valid"]
    rows = stream[: 4 * (stream.numel() // 4)].view(4, -1)
    with torch.no_grad():
        logits = model(rows[:, :8]).logits  # two chunks of 8; each chunk sees only itself
        first = F.cross_entropy(logits.reshape(-1, logits.size(-1)), rows[:, 1:9].reshape(-1))
        logits2 = model(rows[:, 8:16]).logits
        second = F.cross_entropy(logits2.reshape(-1, logits.size(-1)), rows[:, 9:17].reshape(-1))
    assert limited["loss"] == pytest.approx(float(first + second) / 2, rel=1e-5)
    assert limited["loss"] != pytest.approx(full["loss"], rel=1e-6)


def test_classifier_limit_averages_over_the_examples_it_read(tmp_path):
    path = write_classification(tmp_path / "train.csv", rows=60)
    task, model = _prepared("classify-bilstm", [f"data.train={path}", "data.valid_fraction=0.5",
                                                "model.hidden_size=4", "model.embedding_dim=4"])
    device = torch.device("cpu")
    full = task.evaluate(model, "valid", 4, device)
    assert task.evaluate(model, "valid", 4, device, max_batches=100) == pytest.approx(full)
    one = task.evaluate(model, "valid", 30, device, max_batches=1)
    assert one == pytest.approx(task.evaluate(model, "valid", 30, device))  # one batch is all of it
    # Two batches of 4: the first and the middle one of the length-sorted order, averaged by hand.
    from seqlab.tasks.base import eval_batches

    examples = task.examples["valid"]
    keys = eval_batches([len(ids) for ids, _ in examples], 4)
    chosen = [i for key in (keys[0], keys[len(keys) // 2]) for i in key]
    with torch.no_grad():
        losses = [float(model(**{k: v for k, v in task._collate([examples[i]]).items()}).loss)
                  for i in chosen]
    limited = task.evaluate(model, "valid", 4, device, max_batches=2)
    assert limited["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_translation_limit_keeps_hypotheses_beside_their_references(tmp_path, monkeypatch):
    path = write_parallel(tmp_path / "train.tsv", rows=40)
    task, model = _prepared("reverse-gru", [f"data.train={path}", "data.valid_fraction=0.5",
                                            "data.min_frequency=1", "model.hidden_size=4"])

    def oracle(model, src, src_lengths, beam_size):
        # The targets are the sources reversed: a perfect "decoder" for checking the bookkeeping.
        return [src[i, : int(src_lengths[i])].flip(0).tolist() for i in range(src.size(0))]

    monkeypatch.setattr(task, "_decode", oracle)
    device = torch.device("cpu")
    for max_batches in (None, 1, 3):
        metrics = task.evaluate(model, "valid", 3, device, max_batches=max_batches)
        assert metrics["exact_match"] == 1.0 and metrics["chrf"] == pytest.approx(100.0)


def test_training_evaluates_limited_then_scores_the_best_weights_on_the_whole_split(tmp_path):
    path = write_classification(tmp_path / "train.csv", rows=60)
    config = load_config("classify-bilstm", [
        f"data.train={path}", "data.valid_fraction=0.5", "model.hidden_size=4", "model.embedding_dim=4",
        "trainer.max_steps=4", "trainer.eval_every=2", "trainer.batch_size=4", "trainer.eval_batch_size=4",
        "trainer.eval_max_batches=1", "trainer.progress=false",
    ])
    train(config, tmp_path / "run")
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [row["metrics"] for row in logged if row["split"] == "valid"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    task, model = _prepared("classify-bilstm", [f"data.train={path}", "data.valid_fraction=0.5",
                                                "model.hidden_size=4", "model.embedding_dim=4"])
    from seqlab.train.checkpoint import load_weights

    load_weights(tmp_path / "run" / "model.safetensors", model)
    whole = task.evaluate(model.eval(), "valid", 4, torch.device("cpu"))
    limited = task.evaluate(model, "valid", 4, torch.device("cpu"), max_batches=1)
    assert len(valid) == 2 and math.isfinite(valid[-1]["loss"])
    assert summary["valid"] == pytest.approx(whole)
    assert any(v == pytest.approx(limited) for v in valid)
