"""Optimizers and learning-rate schedules: linear warm-up, then constant, cosine or plateau.

Warm-up + cosine (Loshchilov & Hutter 2017, "SGDR", without restarts), for step s (0-based,
the number of optimizer steps already taken), warm-up W steps, total S steps::

    lr(s) = lr · (s + 1) / W                                          s < W
    lr(s) = min_lr + (lr − min_lr) · ½ · (1 + cos(π · (s − W) / (S − W)))   W ≤ s ≤ S

With a time budget (``trainer.max_time_minutes``) the cosine runs over whichever ends first,
the steps or the time: its position is max((s − W) / (S − W), (t / T − m) / (1 − m)), t the
training time so far, T the budget and m = 0.1, so a run that its budget stops still ends at
min_lr (decaying over the budget, as in Li, Yumer & Ramanan 2020, "Budgeted Training"). The
first tenth of the budget never moves the schedule: a run on pace to finish its steps in time
keeps the rates of its steps alone, the same in every run and after a resume. Only a run that
its budget binds has rates that depend on the machine's speed.

Layer-wise learning-rate decay (`trainer.layer_lr_decay` = ξ, for fine-tuning a pre-trained
encoder; Howard & Ruder 2018's discriminative rates, Clark et al. 2020's ELECTRA recipe): with
D numbered layers, a parameter of layer i (0-based) trains at lr · ξ^(D − i), the embeddings at
lr · ξ^(D + 1) and everything else (the task head, a final norm) at lr, so the layers the
pre-training shaped most generally move least. Every schedule multiplies these scales.

"plateau" multiplies the learning rate by `plateau_factor` when the validation metric has not
improved for `plateau_patience` evaluations (after the warm-up, which is linear as above).
"""

from __future__ import annotations

import math
import re

import torch

from seqlab.schema import ConfigError

__all__ = [
    "LRSchedule", "build_optimizer", "clip_gradients", "layer_lr_scales", "warmup_cosine_factor",
]

# The share of a time budget that never moves the cosine (m in the module doc).
TIME_MARGIN = 0.1

# `layers.3.` / `blocks.3.` / `h.3.` / `_l3` (torch.nn's recurrent weights): the layer's number.
_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|blocks|h)\.(\d+)\.|_l(\d+)(?:_reverse)?$")
_EMBEDDING = re.compile(r"embed|(?:^|\.)(?:wte|wpe)\.|position")


def layer_lr_scales(model: torch.nn.Module, decay: float) -> dict[torch.nn.Parameter, float]:
    """Each trainable parameter's learning-rate factor under layer-wise decay `decay` (module doc).

    The layer of a parameter is the first number after `layers.` / `blocks.` / `h.` in its
    name (or torch.nn's `_l<k>` suffix); names with `embed` or `position` outside a layer are the
    embeddings. A model with no numbered layer has depth 0: its embeddings get `decay`, the rest 1.
    """
    depth, found = {}, []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        match = _LAYER.search(name)
        if match:
            layer = int(match.group(1) or match.group(2))
            depth[parameter] = layer
            found.append(layer)
        elif _EMBEDDING.search(name):
            depth[parameter] = -1
        else:
            depth[parameter] = None
    if decay < 1 and all(d is None for d in depth.values()):
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        raise ConfigError(
            f"trainer.layer_lr_decay={decay} would change nothing: no parameter name has a layer "
            f"number (layers.N, blocks.N, h.N or torch.nn's _lN) or an embedding; the parameters "
            f"are: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}")
    layers = max(found) + 1 if found else 0
    return {p: 1.0 if d is None else decay ** (layers - d) for p, d in depth.items()}


def build_optimizer(
    parameters,
    name: str,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    lr_scales: dict[torch.nn.Parameter, float] | None = None,
) -> torch.optim.Optimizer:
    """One of sgd / adam / adamw / rmsprop over `parameters`.

    Weight decay applies to weight matrices and embeddings (parameters with two or more
    dimensions) and not to biases or normalisation gains, whose decay would only pull a layer's
    offset or scale towards zero (as in BERT and GPT-2 training). `betas` are Adam's (β1, β2).
    Adam and AdamW run torch's fused kernel (one pass over all parameters, the same update to
    rounding) when every parameter is a floating-point tensor on the CPU or a CUDA device.
    `lr_scales` (parameter -> factor, from `layer_lr_scales`) puts each factor in its own
    parameter groups as `lr_scale`, which `LRSchedule` multiplies into every step's rate.
    """
    parameters = [p for p in parameters if p.requires_grad]
    groups = parameters
    if weight_decay > 0 or lr_scales:
        # one group per (rate factor, decayed or not), in the parameters' order within each
        by_kind: dict[tuple[float, bool], list] = {}
        for p in parameters:
            scale = (lr_scales or {}).get(p, 1.0)
            by_kind.setdefault((scale, p.dim() >= 2), []).append(p)
        order = sorted(by_kind, key=lambda kind: (-kind[0], not kind[1]))  # decayed group first
        groups = [{"params": by_kind[scale, decays], "lr_scale": scale, "lr": lr * scale,
                   "weight_decay": weight_decay if decays else 0.0} for scale, decays in order]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    fused = bool(parameters) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in parameters
    )
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"optimizer={name!r} is not one of: sgd, adam, adamw, rmsprop")


def clip_gradients(parameters, max_norm: float | None = None, max_value: float | None = None) -> float:
    """Clip gradients in place and return the total L2 norm measured before norm clipping.

    By value first (each entry into [-max_value, max_value]), then by norm: when the total norm
    ‖g‖₂ over all parameters exceeds `max_norm`, every gradient is scaled by max_norm / ‖g‖₂
    (Pascanu et al. 2013). The returned norm is what the log's `grad_norm` shows.
    """
    parameters = [p for p in parameters if p.grad is not None]
    if max_value is not None:
        torch.nn.utils.clip_grad_value_(parameters, max_value)
    limit = max_norm if max_norm is not None else math.inf
    return float(torch.nn.utils.clip_grad_norm_(parameters, limit))


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float,
                         time_fraction: float | None = None) -> float:
    """lr(step) / lr for linear warm-up then cosine decay to `min_ratio` (formula in the module
    doc); `time_fraction` t / T, when given, moves the decay on if time runs out first."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    by_time = ((time_fraction or 0.0) - TIME_MARGIN) / (1.0 - TIME_MARGIN)
    progress = min(1.0, max((step - warmup_steps) / span, by_time))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class LRSchedule:
    """Sets the learning rate of every param group before each step; state is plain numbers.

    kind: "constant" | "cosine" | "plateau". Call `lr_for(step)` / `apply(step)` before the
    optimizer step and `observe(value)` after each evaluation (used by "plateau").
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        kind: str,
        lr: float,
        total_steps: int,
        warmup_steps: int = 0,
        min_lr: float = 0.0,
        plateau_factor: float = 0.5,
        plateau_patience: int = 1,
        mode: str = "min",
    ):
        if kind not in ("constant", "cosine", "plateau"):
            raise ValueError(f"scheduler={kind!r} is not one of: constant, cosine, plateau")
        if mode not in ("min", "max"):
            raise ValueError(f"mode={mode!r} is not one of: min, max")
        self.optimizer = optimizer
        self.kind = kind
        self.lr = lr
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.min_lr = min_lr
        self.plateau_factor = plateau_factor
        self.plateau_patience = plateau_patience
        self.mode = mode
        self.scale = 1.0  # product of plateau reductions so far
        self.best: float | None = None
        self.bad_evals = 0

    def lr_for(self, step: int, time_fraction: float | None = None) -> float:
        """The rate of step `step`; `time_fraction`, the share of a time budget used so far,
        counts for the cosine only."""
        if self.kind == "cosine":
            return self.lr * warmup_cosine_factor(
                step, self.warmup_steps, self.total_steps, self.min_lr / self.lr, time_fraction
            )
        warm = (step + 1) / self.warmup_steps if step < self.warmup_steps else 1.0
        return max(self.min_lr, self.lr * self.scale) * warm if self.kind == "plateau" else self.lr * warm

    def apply(self, step: int, time_fraction: float | None = None) -> float:
        lr = self.lr_for(step, time_fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def observe(self, value: float) -> None:
        """Record one validation value; a plateau schedule may reduce its scale."""
        if self.kind != "plateau":
            return
        improved = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if improved:
            self.best, self.bad_evals = value, 0
            return
        self.bad_evals += 1
        if self.bad_evals > self.plateau_patience:
            self.scale *= self.plateau_factor
            self.bad_evals = 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict) -> None:
        self.scale = float(state["scale"])
        self.best = state["best"]
        self.bad_evals = int(state["bad_evals"])
