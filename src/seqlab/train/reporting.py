"""What a run reports while it trains: `metrics.jsonl` lines and a rich progress bar."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

__all__ = ["MetricsLog", "ProgressDisplay", "read_metrics"]


def _clean(value):
    """JSON has no NaN / inf: write them as null so every line stays standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class MetricsLog:
    """Appends one JSON object per log step: step, epoch, split, metrics, lr, grad_norm, elapsed.

    `keep_until_step` > 0 (resuming) first drops lines written after the checkpoint's step, so a
    resumed run's file reads as if the run had never stopped.
    """

    def __init__(self, path: Path, enabled: bool = True, keep_until_step: int = 0):
        self.path = Path(path)
        self.enabled = enabled
        self.handle = None
        if not enabled:
            return
        if keep_until_step > 0 and self.path.exists():
            kept = [line for line in read_metrics(self.path) if line["step"] <= keep_until_step]
            text = "".join(json.dumps(line) + "\n" for line in kept)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)
        elif keep_until_step == 0 and self.path.exists():
            self.path.unlink()
        self.handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the run)

    def write(self, step: int, epoch: int, split: str, metrics: dict, lr: float,
              elapsed: float, grad_norm: float | None = None) -> None:
        if self.handle is None:
            return
        record = {"step": step, "epoch": epoch, "split": split, "metrics": _clean(metrics),
                  "lr": lr, "grad_norm": _clean(grad_norm), "elapsed": round(elapsed, 3)}
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a `metrics.jsonl` (a torn last line from a crash is skipped)."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


class ProgressDisplay:
    """A rich progress bar with the live loss and throughput on a terminal; on a pipe or a log
    file, one plain line per `every` steps instead. Silent when disabled."""

    def __init__(self, total_steps: int, unit: str, enabled: bool = True, console=None, every: int = 10):
        self.total_steps = total_steps
        self.unit = unit
        self.enabled = enabled
        self.every = every
        self.progress = None
        self.console = console
        self.items = 0
        self.started = time.monotonic()

    def start(self, step: int) -> None:
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = self.console or Console(stderr=True)
        self.started = time.monotonic()
        if not self.console.is_terminal:
            return
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), console=self.console, transient=False,
        )
        self.task = self.progress.add_task("train", total=self.total_steps, completed=step, info="")
        self.progress.start()

    def update(self, step: int, loss: float, count: int) -> None:
        if not self.enabled:
            return
        self.items += count
        rate = self.items / max(time.monotonic() - self.started, 1e-9)
        info = f"loss {loss:.4f}  {rate:,.0f} {self.unit}/s"
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=info)
        elif self.console is not None and (step % self.every == 0 or step == self.total_steps):
            self.console.print(f"step {step}/{self.total_steps}  {info}", highlight=False)

    def note(self, text: str) -> None:
        if self.enabled and self.console is not None:
            self.console.print(text, highlight=False)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
