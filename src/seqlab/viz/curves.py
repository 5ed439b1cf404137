"""Training curves from a run's `metrics.jsonl`: loss and every other metric, one PNG each."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

__all__ = ["plot_metrics"]


def plot_metrics(records: list[dict], out_dir: str | Path) -> list[Path]:
    """Write `loss.png` (train and valid loss against step), one PNG per other valid metric,
    and `lr.png`; returns the paths written. Uses matplotlib's Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    series: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    learning_rates = []
    for record in records:
        for name, value in (record.get("metrics") or {}).items():
            if isinstance(value, (int, float)):
                series[(record["split"], name)].append((record["step"], float(value)))
        if record.get("split") == "train" and record.get("lr") is not None:
            learning_rates.append((record["step"], record["lr"]))

    written = []
    names = sorted({name for _, name in series})
    for name in names:
        figure, axes = plt.subplots(figsize=(6, 4))
        for split in ("train", "valid"):
            points = series.get((split, name))
            if points:
                steps, values = zip(*points)
                axes.plot(steps, values, marker="o" if split == "valid" else None,
                          markersize=3, label=split)
        axes.set_xlabel("step")
        axes.set_ylabel(name)
        axes.set_title(name)
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        path = out_dir / f"{name.replace('/', '_')}.png"  # TRL names: rewards/chosen
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    if learning_rates:
        figure, axes = plt.subplots(figsize=(6, 3))
        steps, values = zip(*learning_rates)
        axes.plot(steps, values)
        axes.set_xlabel("step")
        axes.set_ylabel("learning rate")
        axes.grid(alpha=0.3)
        figure.tight_layout()
        path = out_dir / "lr.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written
