"""Forecast against truth: a series' tail with a model's multi-step forecasts and a baseline's."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["plot_forecast"]


def plot_forecast(
    series: torch.Tensor,
    forecasts: torch.Tensor,
    baseline: torch.Tensor | None,
    first_target: int,
    path: str | Path,
    title: str = "",
    context: int | None = None,
) -> Path:
    """Write a PNG of the truth with the forecasts made every H steps, joined into one path.

    The forecasts come from consecutive origins (one step apart): row i forecasts
    series[first_target + i : first_target + i + H]. Drawing the rows i = 0, H, 2H, ... gives a
    path of H-step forecasts that covers the split without overlap, each segment starting
    again from the truth known at its origin.

    ============ ======================================================
    series       (T,) the whole series, original units
    forecasts    (K, H) model forecasts from K consecutive origins
    baseline     (K, H) the same for a baseline (seasonal naive), or None
    ============ ======================================================
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count, horizon = forecasts.shape
    end = first_target + count + horizon - 1
    start = max(0, first_target - (context if context is not None else max(2 * horizon, count // 2)))
    steps = torch.arange(start, end)
    figure, axes = plt.subplots(figsize=(9, 4))
    axes.plot(steps.tolist(), series[start:end].tolist(), color="black", linewidth=1.2, label="truth")
    for name, values, style in (("model", forecasts, "-"), ("seasonal naive", baseline, "--")):
        if values is None:
            continue
        color = "tab:blue" if name == "model" else "tab:orange"
        for row in range(0, count, horizon):
            x = list(range(first_target + row, first_target + row + horizon))
            axes.plot(x, values[row].tolist(), style, color=color, linewidth=1.2,
                      label=name if row == 0 else None)
    axes.axvline(first_target - 0.5, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xlabel("step")
    axes.set_title(title)
    axes.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
