"""Why a recurrent network does or does not learn: gradient flow through time, gradient norms, gates.

Three pictures, each the course's diagnosis of one failure mode:

* **‖∂L/∂h_t‖ over t** (Bengio et al. 1994; Pascanu et al. 2013). Backpropagation through time
  multiplies the gradient by the step Jacobian ∂h_t/∂h_{t-1} = diag(f'(·)) W_hh once per step, so
  for a loss read at the last step the norm at step t behaves like ‖W_hhᵀ diag(f')‖^(T−t): it
  vanishes (tanh RNN) or explodes, while the LSTM / GRU additive state keeps it flat. Recorded by
  :func:`seqlab.nn.scan.record_scans` from the visible time loop, so every seqlab.nn recurrent
  layer is switched to ``fused = False`` for the diagnostic batch and restored afterwards.
* **The gradient-norm history** ‖g‖₂ of every training step as logged (before clipping), beside
  what the optimizer used after clipping by norm, min(‖g‖₂, max_norm): spikes are the exploding
  gradients that clipping tames.
* **Gate activity over time**: each LSTM / GRU gate's mean activation at each step (over the batch
  and units), e.g. a forget gate near 1 keeps the cell state; for a plain RNN the mean of h_t.

Shapes: L steps of the diagnostic batch, G gates of the cell (LSTM i, f, g, o or f, g, o when
coupled; GRU r, z, n; RNN h).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = [
    "Diagnostics",
    "collect_diagnostics",
    "diagnose_task",
    "plot_gate_activity",
    "plot_grad_norm_history",
    "plot_gradient_flow",
    "recurrent_layers",
    "write_run_diagnostics",
]

GATE_NAMES = {"LSTM": ("i", "f", "g", "o"), "LSTM coupled": ("f", "g", "o"), "GRU": ("r", "z", "n"),
              "RNN": ("h",)}


@dataclass
class Diagnostics:
    """One diagnostic batch: per recurrent run (``"<module> layer k[ reverse]"``) the norms
    ‖∂L/∂h_t‖ (L,) and each gate's mean activation (L,), both in time order (a reverse run is
    flipped back, exact for sequences that fill the batch's length)."""

    loss: float
    gradient_norms: dict[str, list[float]] = field(default_factory=dict)
    gates: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"loss": self.loss, "gradient_norms": self.gradient_norms, "gates": self.gates}

    @classmethod
    def from_dict(cls, data: dict) -> Diagnostics:
        return cls(float(data["loss"]), dict(data.get("gradient_norms", {})), dict(data.get("gates", {})))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict()) + "\n", encoding="utf-8")
        return path


def recurrent_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of every seqlab.nn RNN / LSTM / GRU layer inside `model`."""
    from seqlab.nn import GRU, LSTM, RNN

    return [(name, module) for name, module in model.named_modules() if isinstance(module, (RNN, LSTM, GRU))]


def collect_diagnostics(model: torch.nn.Module, compute_loss: Callable[[], torch.Tensor]) -> Diagnostics:
    """Run `compute_loss()` forward and backward once through the visible time loop and record
    per-step state-gradient norms and gate means of every recurrent layer of `model`.

    The model runs in eval mode (no dropout noise), each layer's ``fused`` flag and the model's
    mode are restored afterwards and the gradients it made are dropped, so training can go on.
    Raises ValueError when `model` has no seqlab.nn recurrent layer.
    """
    from seqlab.nn.scan import record_scans

    layers = recurrent_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no seqlab.nn RNN / LSTM / GRU layer to diagnose")
    flags = [layer.fused for _, layer in layers]
    was_training = model.training
    # The tags of scan records only name the layer within a module; remember which module ran.
    owners = []
    hooks = [layer.register_forward_pre_hook(lambda module, args, name=name: owners.append(name))
             for name, layer in layers]
    try:
        for _, layer in layers:
            layer.fused = False
        model.eval()
        with torch.enable_grad(), record_scans() as recorder:
            loss = compute_loss()
            loss.backward()
    finally:
        for hook in hooks:
            hook.remove()
        for (_, layer), flag in zip(layers, flags):
            layer.fused = flag
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    result = Diagnostics(loss=float(loss.detach()))
    kinds = {name: layer for name, layer in layers}
    records = recorder.records
    # Each forward call of a layer yields num_layers x directions records, in order.
    index = 0
    for owner in owners:
        layer = kinds[owner]
        runs = layer.num_layers * (2 if layer.bidirectional else 1)
        for record in records[index:index + runs]:
            label = f"{owner} {record.tag}".strip() if len(layers) > 1 else record.tag
            reverse = record.tag.endswith("reverse")
            norms = record.state_gradient_norms
            if norms is not None:
                values = norms.flip(0) if reverse else norms
                result.gradient_norms[label] = [float(v) for v in values]
            kind = "LSTM coupled" if record.cell == "LSTM" and getattr(layer, "coupled", False) else record.cell
            gates = record.gates.flip(0) if reverse else record.gates  # (L, G)
            result.gates[label] = {name: [float(v) for v in gates[:, g]]
                                   for g, name in enumerate(GATE_NAMES[kind])}
        index += runs
    return result


def diagnose_task(task, model: torch.nn.Module, device: torch.device, batch_size: int) -> Diagnostics:
    """Diagnostics on the first training batch of a seqlab task (its `train_batches`, `collate`
    and `training_step`), at the model's current weights."""
    keys = task.train_batches(0, batch_size)
    if not keys:
        raise ValueError(f"the training split has no batch of size {batch_size} to diagnose")
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in task.collate(keys[0]).items()}
    return collect_diagnostics(model, lambda: task.training_step(model, batch, None).loss)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    _pyplot().close(figure)
    return path


def plot_gradient_flow(series: dict[str, list[float]], path: str | Path, title: str | None = None) -> Path:
    """‖∂L/∂h_t‖ against t, one line per entry of `series`, log scale (vanishing = falling left)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.5, 4))
    for label, values in series.items():
        positive = [v if v > 0 and math.isfinite(v) else float("nan") for v in values]
        style = "--" if label.startswith("init") else "-"
        axes.plot(range(1, len(values) + 1), positive, style, label=label)
    axes.set_yscale("log")
    axes.set_xlabel("time step t")
    axes.set_ylabel("‖∂L/∂h_t‖ (mean over the batch)")
    axes.set_title(title or "gradient reaching each step")
    axes.grid(alpha=0.3, which="both")
    if series:
        axes.legend(fontsize=7)
    return _save(figure, path)


def plot_gate_activity(gates: dict[str, dict[str, list[float]]], path: str | Path,
                       title: str | None = None) -> Path:
    """Each gate's mean activation against t, one panel per recurrent run (layer, direction)."""
    plt = _pyplot()
    panels = max(1, len(gates))
    figure, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.5), squeeze=False)
    for axis, (label, by_gate) in zip(axes[0], gates.items()):
        for name, values in by_gate.items():
            axis.plot(range(1, len(values) + 1), values, label=name)
        axis.set_xlabel("time step t")
        axis.set_ylabel("mean activation")
        axis.set_title(label, fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_grad_norm_history(records: list[dict], path: str | Path, clip_grad_norm: float | None = None,
                           title: str | None = None) -> Path:
    """Logged ‖g‖₂ per train log step (before clipping) and, with `clip_grad_norm`, the norm the
    optimizer used after clipping, min(‖g‖₂, clip_grad_norm); log scale."""
    plt = _pyplot()
    points = [(r["step"], r["grad_norm"]) for r in records
              if r.get("split") == "train" and r.get("grad_norm") is not None]
    figure, axes = plt.subplots(figsize=(6.5, 3.5))
    if points:
        steps, norms = zip(*points)
        axes.plot(steps, norms, label="before clipping (logged)")
        if clip_grad_norm is not None:
            axes.plot(steps, [min(n, clip_grad_norm) for n in norms], label=f"after clipping at {clip_grad_norm:g}")
            axes.axhline(clip_grad_norm, color="grey", linestyle=":", linewidth=1)
        axes.set_yscale("log")
        axes.legend(fontsize=8)
    axes.set_xlabel("step")
    axes.set_ylabel("‖g‖₂")
    axes.set_title(title or "gradient norm")
    axes.grid(alpha=0.3, which="both")
    return _save(figure, path)


def write_run_diagnostics(run_dir: str | Path, stage: str, task, model: torch.nn.Module,
                          device: torch.device, batch_size: int,
                          clip_grad_norm: float | None = None) -> list[Path]:
    """Record the diagnostics of a training run at `stage` ("init" or "final") into
    ``run_dir/diagnostics.json``; at "final" also draw ``plots/gradient_flow.png`` (init dashed,
    final solid), ``plots/gates.png`` and ``plots/grad_norm.png``. Returns the plots written.

    The global random state is left as it was, so a run with diagnostics trains exactly as one
    without. A model with no seqlab.nn recurrent layer gets no diagnostics (an empty list).
    """
    run_dir = Path(run_dir)
    if not recurrent_layers(model):
        return []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        diagnostics = diagnose_task(task, model, device, batch_size)
    path = run_dir / "diagnostics.json"
    stages = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    stages[stage] = diagnostics.to_dict()
    path.write_text(json.dumps(stages) + "\n", encoding="utf-8")
    if stage != "final":
        return []
    from seqlab.train.reporting import read_metrics

    plots_dir = run_dir / "plots"
    series = {}
    for name in ("init", "final"):
        if name in stages:
            for label, values in Diagnostics.from_dict(stages[name]).gradient_norms.items():
                series[f"{name} {label}"] = values
    written = [plot_gradient_flow(series, plots_dir / "gradient_flow.png"),
               plot_gate_activity(diagnostics.gates, plots_dir / "gates.png",
                                  title="gate activity after training")]
    metrics_path = run_dir / "metrics.jsonl"
    if metrics_path.is_file():
        written.append(plot_grad_norm_history(read_metrics(metrics_path), plots_dir / "grad_norm.png",
                                              clip_grad_norm))
    return written
