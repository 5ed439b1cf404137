"""metrics.jsonl writing / truncation on resume, plots, autocast choice."""

import json
from contextlib import nullcontext

import torch

from seqlab.train.loop import autocast_context, detach_carry
from seqlab.train.reporting import MetricsLog, read_metrics
from seqlab.viz import plot_metrics


def test_metrics_log_lines_and_resume_truncation(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for step in (1, 2, 3):
        log.write(step=step, epoch=0, split="train", metrics={"loss": 1.0 / step}, lr=0.1, elapsed=0.5,
                  grad_norm=float("inf") if step == 3 else 2.0)
    log.close()
    records = read_metrics(path)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[2]["grad_norm"] is None  # non-finite values are written as JSON null
    with open(path, "a") as handle:
        handle.write('{"step": 4, "spl')  # a line torn by a crash
    resumed = MetricsLog(path, keep_until_step=2)
    resumed.write(step=3, epoch=0, split="valid", metrics={"loss": 0.3}, lr=0.1, elapsed=1.0)
    resumed.close()
    assert [(r["step"], r["split"]) for r in read_metrics(path)] == [(1, "train"), (2, "train"), (3, "valid")]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_plots_are_png_files(tmp_path):
    records = [
        {"step": 1, "split": "train", "metrics": {"loss": 2.0}, "lr": 0.1},
        {"step": 2, "split": "train", "metrics": {"loss": 1.5}, "lr": 0.05},
        {"step": 2, "split": "valid", "metrics": {"loss": 1.7, "accuracy": 0.5}, "lr": 0.05},
    ]
    paths = plot_metrics(records, tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["accuracy.png", "loss.png", "lr.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_autocast_choice_and_detach():
    assert isinstance(autocast_context(torch.device("cpu"), "auto"), nullcontext)
    assert isinstance(autocast_context(torch.device("cpu"), "fp32"), nullcontext)
    with autocast_context(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    h = torch.ones(2, requires_grad=True) * 2
    carried = detach_carry((h, h))
    assert isinstance(carried, tuple) and not carried[0].requires_grad and detach_carry(None) is None
