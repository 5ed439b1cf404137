"""The training loop end to end on tiny generated tasks: resume, NaN stop, early stopping."""

import json

import pytest
import torch

from seqlab.train.checkpoint import CheckpointError, load_checkpoint, load_weights
from seqlab.train.config import load_config
from seqlab.train.loop import TrainingError
from seqlab.train.reporting import read_metrics
from seqlab.train.run import RunDirError, open_run, train

TINY_ADDING = [
    "model.hidden_size=8", "data.length=6", "data.train_size=96", "data.valid_size=16",
    "data.test_size=16", "trainer.batch_size=8", "trainer.progress=false", "trainer.log_every=2",
]
TINY_LM = [
    "model.hidden_size=8", "model.embedding_dim=4", "model.num_layers=2", "model.dropout=0.3",
    "data.max_chars=3000", "data.bptt=8", "trainer.batch_size=4", "trainer.eval_batch_size=4",
    "trainer.progress=false", "trainer.log_every=2", "predict.num_samples=0",
]


def _without_elapsed(path):
    return [{k: v for k, v in record.items() if k != "elapsed"} for record in read_metrics(path)]


@pytest.mark.parametrize(
    "recipe, overrides",
    [
        ("adding-lstm", TINY_ADDING + ["trainer.epochs=2", "trainer.eval_every=5", "trainer.save_every=4",
                                       "trainer.scheduler=cosine", "trainer.warmup_steps=3"]),
        ("charlm-lstm", TINY_LM + ["trainer.max_steps=14", "trainer.eval_every=5", "trainer.save_every=4"]),
    ],
)
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, recipe, overrides):
    config = load_config(recipe, overrides)
    whole = train(config, tmp_path / "whole")
    part = train(config, tmp_path / "part", stop_after_step=9)
    assert part.fit.stop_reason == "interrupted" and part.fit.step == 9
    assert not (tmp_path / "part" / "summary.json").exists()
    resumed = train(config, tmp_path / "part", resume=True)

    assert resumed.summary["valid"] == whole.summary["valid"]
    assert resumed.summary["test"] == whole.summary["test"]
    assert resumed.fit.step == whole.fit.step and resumed.fit.best_step == whole.fit.best_step
    assert _without_elapsed(tmp_path / "part" / "metrics.jsonl") == _without_elapsed(tmp_path / "whole" / "metrics.jsonl")
    _, _, model_a, _ = open_run(tmp_path / "whole")
    _, _, model_b, _ = open_run(tmp_path / "part")
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert torch.equal(a, b), name


def test_metrics_log_and_summary_layout(tmp_path):
    config = load_config("adding-lstm", TINY_ADDING + ["trainer.max_steps=6", "trainer.eval_every=3"])
    result = train(config, tmp_path / "run")
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [(r["step"], r["split"]) for r in records] == [
        (2, "train"), (3, "valid"), (4, "train"), (6, "train"), (6, "valid")]
    for record in records:
        assert set(record) == {"step", "epoch", "split", "metrics", "lr", "grad_norm", "elapsed"}
    assert records[1]["metrics"]["mse"] == pytest.approx(records[1]["metrics"]["loss"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["valid"] == result.summary["valid"] and set(summary["valid"]) == {"loss", "mse", "mae"}
    assert summary["run"]["steps"] == 6 and summary["run"]["stop_reason"] == "max_steps"
    assert {p.name for p in (tmp_path / "run" / "plots").iterdir()} >= {"loss.png", "mse.png"}
    # model.safetensors holds the best weights: evaluating them gives the best valid metrics.
    best = min((r for r in records if r["split"] == "valid"), key=lambda r: r["metrics"]["mse"])
    assert summary["valid"]["mse"] == pytest.approx(best["metrics"]["mse"], rel=1e-6)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from seqlab.tasks.adding import AddingTask

    original = AddingTask.training_step
    calls = {"n": 0}

    def poisoned(self, model, batch, carry):
        out = original(self, model, batch, carry)
        calls["n"] += 1
        if calls["n"] == 5:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(AddingTask, "training_step", poisoned)
    config = load_config("adding-lstm", TINY_ADDING + ["trainer.save_every=2"])
    with pytest.raises(TrainingError, match=r"loss became nan at step 5.*last good checkpoint"):
        train(config, tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert state["counters"]["step"] == 4
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_huge_learning_rate_stops_with_error(tmp_path):
    config = load_config("adding-lstm", TINY_ADDING + ["trainer.lr=1e30", "trainer.save_every=1"])
    with pytest.raises(TrainingError, match="became"):
        train(config, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoint" / "state.json").is_file()


def test_early_stopping_and_time_budget(tmp_path):
    config = load_config("adding-lstm", TINY_ADDING + [
        "trainer.lr=1e-9", "trainer.optimizer=sgd", "trainer.eval_every=1", "trainer.early_stopping_patience=2"])
    result = train(config, tmp_path / "early")
    assert result.fit.stop_reason == "early_stopping" and result.fit.step <= 4

    config = load_config("adding-lstm", TINY_ADDING + ["trainer.max_time_minutes=0.00001"])
    result = train(config, tmp_path / "budget")
    assert result.fit.stop_reason == "time_budget" and result.fit.step == 1
    assert read_metrics(tmp_path / "budget" / "metrics.jsonl")[-1]["split"] == "valid"
    assert "valid" in result.summary


def test_a_cosine_under_a_time_budget_decays_over_the_budget(tmp_path, monkeypatch):
    from seqlab.train import loop

    ticks = iter(range(10**6))  # a clock that moves 0.05 s each time it is read
    monkeypatch.setattr(loop.time, "monotonic", lambda: 0.05 * next(ticks))
    config = load_config("adding-lstm", TINY_ADDING + [
        "trainer.max_time_minutes=0.05", "trainer.scheduler=cosine", "trainer.lr=0.01",
        "trainer.warmup_steps=0",
        "trainer.epochs=1000", "trainer.log_every=1"])
    result = train(config, tmp_path / "budget")
    assert result.fit.stop_reason == "time_budget"
    records = [r for r in read_metrics(tmp_path / "budget" / "metrics.jsonl")
               if r["split"] == "train"]
    steps_total = 1000 * 12  # epochs x batches: a step-based cosine would barely have moved
    assert result.fit.step < steps_total / 20
    assert records[0]["lr"] > 0.009 and records[-1]["lr"] < 0.0005  # decayed with the clock
    lrs = [r["lr"] for r in records]
    assert lrs == sorted(lrs, reverse=True)


def test_a_run_on_pace_within_its_budget_keeps_the_rates_of_its_steps(tmp_path):
    options = TINY_ADDING + ["trainer.scheduler=cosine", "trainer.max_steps=12",
                             "trainer.log_every=1", "trainer.warmup_steps=2"]
    runs = {}
    for name, budget in (("none", "null"), ("budget", "60")):
        train(load_config("adding-lstm", options + [f"trainer.max_time_minutes={budget}"]),
              tmp_path / name)
        runs[name] = _without_elapsed(tmp_path / name / "metrics.jsonl")
    assert runs["budget"] == runs["none"]  # the same rates, so the same losses, bit for bit


def test_existing_run_dir_is_not_overwritten(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    config = load_config("adding-lstm", TINY_ADDING + ["trainer.max_steps=1"])
    with pytest.raises(RunDirError, match="--resume"):
        train(config, tmp_path / "run")
    with pytest.raises(RunDirError, match="no checkpoint"):
        train(config, tmp_path / "run", resume=True)


def test_resume_of_finished_run_changes_nothing(tmp_path):
    config = load_config("adding-lstm", TINY_ADDING + ["trainer.max_steps=3"])
    first = train(config, tmp_path / "run")
    again = train(config, tmp_path / "run", resume=True)
    assert again.summary["valid"] == first.summary["valid"] and again.fit.step == 3
    with pytest.raises(CheckpointError, match="do not fit"):
        load_weights(tmp_path / "run" / "model.safetensors", torch.nn.Linear(2, 2))


def test_resume_with_more_steps_continues_a_finished_run(tmp_path):
    short = load_config("adding-lstm", TINY_ADDING + ["trainer.max_steps=4"])
    train(short, tmp_path / "run")
    longer = load_config("adding-lstm", TINY_ADDING + ["trainer.max_steps=8"])
    result = train(longer, tmp_path / "run", resume=True)
    assert result.fit.step == 8
    steps = [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["split"] == "train"]
    assert steps == [2, 4, 6, 8]
