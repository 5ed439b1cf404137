"""Tuning inside `seqlab train`: `tune.method` on runs started from `model.init_from`, adapter-only
run directories that eval / predict / resume / compare / merge read, and one-line user errors."""

import json
import random
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from seqlab.cli import main
from seqlab.models import load as load_model
from seqlab.tasks.base import to_device
from seqlab.train.config import load_config
from seqlab.train.run import evaluate_run, load_run_config, open_run, predict_run, train

GOOD = ["good", "great", "fine", "superb", "lovely", "fun"]
BAD = ["bad", "awful", "dull", "poor", "boring", "weak"]
FILLER = ["the", "film", "a", "plot", "was", "very", "and", "story", "cast", "it", "is", "this"]


def _sentences(count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.choice(["positive", "negative"])
        words = rng.sample(FILLER, 4) + [rng.choice(GOOD if label == "positive" else BAD)]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    (folder / "corpus.txt").write_text(
        "\n".join(text for text, _ in _sentences(200, 0)) + "\n", encoding="utf-8")
    for split, count, seed in (("train", 64, 1), ("valid", 16, 2), ("test", 16, 3)):
        rows = ["sentence\tlabel"] + [f"{t}\t{label}" for t, label in _sentences(count, seed)]
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


TINY = ["trainer.batch_size=8", "trainer.progress=false", "trainer.warmup_steps=0"]
PRETRAIN = {
    "transformer": ["model.transformer.d_model=16", "model.transformer.nhead=2",
                    "model.transformer.num_layers=1", "model.transformer.max_length=16",
                    "model.transformer.dropout=0.0"],
    "recurrent": ["model.family=recurrent", "model.recurrent.embedding_dim=8",
                  "model.recurrent.hidden_size=8", "model.recurrent.dropout=0.0"],
}
RECIPES = {"transformer": "bert-classify", "recurrent": "classify-bilstm"}


@pytest.fixture(scope="module")
def bases(data, tmp_path_factory):
    """A tiny masked-LM run of each family: the pre-trained models every test tunes."""
    folder = tmp_path_factory.mktemp("bases")
    runs = {}
    for family, overrides in PRETRAIN.items():
        config = load_config("pretrain-mlm", [
            f"data.train={data / 'corpus.txt'}", "data.vocab_size=60", "data.max_length=16",
            "trainer.max_steps=2", "trainer.eval_every=2", *TINY, *overrides])
        runs[family] = train(config, folder / family).run_dir
    return runs


def _overrides(data, base, *extra):
    """The fine-tuning overrides, `extra` replacing keys given here."""
    overrides = [f"data.train={data / 'train.tsv'}", f"data.valid={data / 'valid.tsv'}",
                 f"data.test={data / 'test.tsv'}", "data.text_column=sentence",
                 f"model.init_from={base}", "model.dropout=0.0", "trainer.max_steps=4",
                 "trainer.eval_every=2", "trainer.lr=0.01", *TINY, *extra]
    return list({text.split("=")[0]: text for text in overrides}.values())


def _tune(data, bases, family, run_dir, *extra, stop_after_step=None, resume=False):
    config = load_config(RECIPES[family], _overrides(data, bases[family], *extra))
    return train(config, run_dir, resume=resume, stop_after_step=stop_after_step)


@pytest.fixture(scope="module")
def lora_run(data, bases, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lora") / "run"
    result = _tune(data, bases, "transformer", run_dir, "tune.method=lora", "tune.r=2",
                   "tune.alpha=4")
    return run_dir, result


def _first_batch(run_dir):
    """The run's model and a padded batch of three sentences, as the task encodes them."""
    from seqlab.data.batching import pad_sequences

    _, task, model, device = open_run(run_dir)
    ids = [task.tokenizer.encode(text) for text in ("a good film", "the plot was dull and weak",
                                                    "fun")]
    inputs, lengths = pad_sequences(ids, pad_value=task.tokenizer.pad_id)
    return model, to_device({"inputs": inputs, "lengths": lengths}, device)


def _logits(model, batch):
    with torch.no_grad():
        return model(batch["inputs"], lengths=batch["lengths"]).logits


def test_a_lora_run_keeps_only_what_it_trained(lora_run, bases):
    run_dir, result = lora_run
    assert not (run_dir / "model.safetensors").exists()
    adapter = json.loads((run_dir / "adapter.json").read_text())
    assert adapter["method"] == "lora" and adapter["settings"]["r"] == 2
    assert adapter["base"]["run"] == str(bases["transformer"].resolve())
    assert adapter["base_checksum"].startswith("sha256:")
    tensors = load_file(str(run_dir / "adapter.safetensors"))
    assert all(".lora_" in name or name.startswith("head.") for name in tensors)
    # one layer: the q and v rows of in_proj_weight, A (2, 16) and B (16, 2) each, + head (2, 16)
    assert sum(t.numel() for t in tensors.values()) == 2 * (2 * 16 + 16 * 2) + 2 * 16 + 2
    assert result.summary["run"]["trainable_parameters"] == adapter["parameters"]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["tune"]["method"] == "lora"


def test_frozen_weights_stay_the_base_run_and_the_update_is_the_formula(lora_run, bases):
    run_dir, _ = lora_run
    model, _ = _first_batch(run_dir)
    base = load_file(str(bases["transformer"] / "model.safetensors"))
    state = model.state_dict()
    name = "encoder.encoder.layers.0.self_attn"
    original = state[f"{name}.parametrizations.in_proj_weight.original"]
    assert torch.equal(original, base[f"{name}.in_proj_weight"])
    assert torch.equal(state["encoder.embedding.token.weight"],
                       base["encoder.embedding.token.weight"])
    # W' = W + (alpha / r) B A on the q and v rows (E = 16 each), k rows untouched
    lora = model.encoder.encoder.layers[0].self_attn.parametrizations.in_proj_weight[0]
    weight = model.encoder.encoder.layers[0].self_attn.in_proj_weight.detach()
    delta = weight - original
    assert torch.equal(delta[16:32], torch.zeros(16, 16))
    for part, rows in (("q", slice(0, 16)), ("v", slice(32, 48))):
        lora_A, lora_B = getattr(lora, f"lora_A_{part}"), getattr(lora, f"lora_B_{part}")
        expected = (4 / 2) * lora_B @ lora_A  # alpha / r
        assert float(expected.detach().abs().max()) > 0  # it trained
        torch.testing.assert_close(delta[rows], expected, atol=1e-6, rtol=0)


def test_eval_and_predict_read_the_tuned_run(lora_run, capsys):
    run_dir, result = lora_run
    assert evaluate_run(run_dir) == {k: result.summary[k] for k in ("valid", "test")}
    lines = predict_run(run_dir, ["a good film", "a boring plot"])
    assert len(lines) == 2 and all(line.split("\t")[0] in ("positive", "negative")
                                   for line in lines)
    assert main(["eval", str(run_dir)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["test"] == result.summary["test"]


def test_merge_folds_lora_into_a_normal_run(lora_run, tmp_path, capsys):
    run_dir, result = lora_run
    out = tmp_path / "merged"
    assert main(["merge", str(run_dir), "--out", str(out)]) == 0
    for name in ("config.yaml", "tokenizer.json", "labels.json", "model.safetensors"):
        assert (out / name).is_file(), name
    assert not (out / "adapter.json").exists()
    assert "tune" not in yaml.safe_load((out / "config.yaml").read_text())
    tuned, batch = _first_batch(run_dir)
    merged = load_model(out)  # rebuilt from the spec stored with the weights
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(_logits(merged, batch), _logits(tuned, batch), atol=1e-5, rtol=0)
    merged_eval = evaluate_run(out)
    for split in ("valid", "test"):
        assert merged_eval[split]["accuracy"] == result.summary[split]["accuracy"]
        assert merged_eval[split]["loss"] == pytest.approx(result.summary[split]["loss"], abs=1e-5)
    # a second merge into the same directory writes nothing
    before = (out / "model.safetensors").read_bytes()
    capsys.readouterr()
    code = main(["merge", str(run_dir), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("seqlab: error:") and "not empty" in err
    assert (out / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("family,method", [
    ("recurrent", ["tune.method=lora", "tune.r=2"]),
    ("recurrent", ["tune.method=adapter", "tune.reduction_factor=2"]),
    ("recurrent", ["tune.method=prefix"]),
    ("transformer", ["tune.method=adapter", "tune.placement=houlsby"]),
    ("transformer", ["tune.method=prefix", "tune.num_virtual_tokens=2"]),
    ("transformer", ["tune.method=prompt", "tune.num_virtual_tokens=3", "tune.init=text",
                     "tune.init_text=a good film"]),
])
def test_every_method_trains_saves_and_reopens(family, method, data, bases, tmp_path, capsys):
    result = _tune(data, bases, family, tmp_path / "run", *method, "trainer.max_steps=2",
                   "trainer.progress=true")
    err = capsys.readouterr().err
    name = method[0].split("=")[1]
    report = next(line for line in err.splitlines() if line.startswith("seqlab: tune "))
    assert f"tune {name}: {result.summary['run']['trainable_parameters']:,} trainable" in report
    assert "heads trained: head" in report
    run_dir = result.run_dir
    assert (run_dir / "adapter.safetensors").is_file()
    assert not (run_dir / "model.safetensors").exists()
    assert evaluate_run(run_dir) == {k: result.summary[k] for k in ("valid", "test")}
    if "tune.init=text" in method:
        # 16 positions: data.max_length shrank to 16 - 3 for the prompt
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["max_length"] == 13


def test_merge_refuses_what_cannot_fold(data, bases, tmp_path, capsys):
    run_dir = _tune(data, bases, "recurrent", tmp_path / "adapter", "tune.method=adapter",
                    "trainer.max_steps=2").run_dir
    capsys.readouterr()
    code = main(["merge", str(run_dir), "--out", str(tmp_path / "merged")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("seqlab: error:") and len(err.splitlines()) == 1
    assert "tune.method=adapter" in err and "only LoRA" in err
    assert not (tmp_path / "merged").exists()


def test_a_lora_run_resumed_after_a_stop_matches_an_uninterrupted_one(data, bases, tmp_path):
    extra = ["tune.method=lora", "tune.r=2", "trainer.max_steps=6", "trainer.eval_every=3",
             "trainer.save_every=2"]
    # no data.test: a classify run resumed with data.valid and data.test both given does not
    # read its training file again (ClassifyTask.prepare with fit_vocab=False)
    extra.append("data.test=null")
    stopped = _tune(data, bases, "recurrent", tmp_path / "stopped", *extra, stop_after_step=4)
    assert stopped.fit.stop_reason == "interrupted" and not (tmp_path / "stopped" / "summary.json").exists()
    # the checkpoint holds the trained tensors and the optimizer, not the frozen base
    state = json.loads((tmp_path / "stopped" / "checkpoint" / "state.json").read_text())
    tensors = load_file(str(tmp_path / "stopped" / "checkpoint" / state["tensors"]))
    model_tensors = [name for name in tensors if name.startswith("model.")]
    assert model_tensors and all("lora_" in name or name.startswith("model.head.")
                                 for name in model_tensors)
    resumed = train(load_run_config(tmp_path / "stopped"), tmp_path / "stopped", resume=True)
    whole = _tune(data, bases, "recurrent", tmp_path / "whole", *extra)
    assert resumed.summary["valid"] == whole.summary["valid"]
    assert resumed.fit.best_step == whole.fit.best_step
    assert (load_file(str(tmp_path / "stopped" / "adapter.safetensors")).keys()
            == load_file(str(tmp_path / "whole" / "adapter.safetensors")).keys())


def test_compare_runs_a_grid_of_methods(data, bases, tmp_path):
    from seqlab.compare import compare

    comparison = compare(RECIPES["recurrent"],
                         _overrides(data, bases["recurrent"], "trainer.max_steps=2")
                         + ["tune.method=full,lora"], out_dir=tmp_path / "grid",
                         diagnostics=False)
    rows = {row.settings["tune.method"]: row for row in comparison.rows}
    assert set(rows) == {"full", "lora"} and all(row.status == "done" for row in rows.values())
    assert (rows["full"].run_dir / "model.safetensors").is_file()
    assert (rows["lora"].run_dir / "adapter.safetensors").is_file()
    assert "lora" in (tmp_path / "grid" / "table.md").read_text()


def _user_error(capsys, args, *fragments):
    code = main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("seqlab: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_bad_settings_are_one_line_errors_and_write_nothing(data, bases, tmp_path, capsys):
    run_dir = tmp_path / "run"

    def train_args(*extra, base=True):
        overrides = _overrides(data, bases["transformer"], *extra)
        if not base:
            overrides = [o for o in overrides if not o.startswith("model.init_from=")]
        return ["train", "bert-classify", *overrides, "--run-dir", str(run_dir)]

    _user_error(capsys, train_args("tune.method=bitfit"), "tune.method", "'lora'", "'prompt'")
    _user_error(capsys, train_args("tune.method=lora", base=False), "model.init_from")
    _user_error(capsys, train_args("tune.method=adapter", "tune.r=4"), "tune.r",
                "method lora")
    _user_error(capsys, train_args("tune.method=lora", "trainer.freeze=body"), "trainer.freeze")
    line = _user_error(capsys, train_args("tune.method=lora", "tune.targets=decoder*"),
                       "'decoder*' matches no weight", "in_proj_weight", "linear1")
    assert "encoder.encoder.layers.0.linear2.weight" in line  # lists what exists
    assert not run_dir.exists()


def test_a_missing_or_changed_base_is_refused(lora_run, tmp_path, capsys):
    source, _ = lora_run
    base = tmp_path / "base"
    shutil.copytree(json.loads((source / "adapter.json").read_text())["base"]["run"], base)
    run_dir = tmp_path / "tuned"
    shutil.copytree(source, run_dir)
    adapter = json.loads((run_dir / "adapter.json").read_text())
    adapter["base"]["run"] = str(base)
    (run_dir / "adapter.json").write_text(json.dumps(adapter))
    assert main(["eval", str(run_dir)]) == 0
    capsys.readouterr()

    weights = load_file(str(base / "model.safetensors"))
    from safetensors.torch import save_file

    weights["encoder.embedding.token.weight"] = weights["encoder.embedding.token.weight"] + 0.01
    save_file(weights, str(base / "model.safetensors"))
    before = (run_dir / "adapter.safetensors").read_bytes()
    _user_error(capsys, ["eval", str(run_dir)], "other base weights", "checksum", str(base))
    shutil.rmtree(base)
    _user_error(capsys, ["predict", str(run_dir), "a good film"], "base model", str(base))
    assert (run_dir / "adapter.safetensors").read_bytes() == before


def test_export_asks_for_a_merge_first(lora_run, tmp_path, capsys):
    pytest.importorskip("onnx", reason="the onnx extra is needed")
    run_dir, _ = lora_run
    for fmt in ("onnx", "hf"):
        _user_error(capsys, ["export", str(run_dir), "--format", fmt, "--out",
                             str(tmp_path / fmt)], "is a tuned run", "seqlab merge")
        assert not (tmp_path / fmt).exists()


def test_a_classifier_with_valid_and_test_files_resumes(data, bases, tmp_path):
    whole = _tune(data, bases, "recurrent", tmp_path / "whole")
    _tune(data, bases, "recurrent", tmp_path / "cut", stop_after_step=2)
    resumed = _tune(data, bases, "recurrent", tmp_path / "cut", resume=True)
    assert resumed.summary["valid"] == whole.summary["valid"]
    assert resumed.summary["test"] == whole.summary["test"]
