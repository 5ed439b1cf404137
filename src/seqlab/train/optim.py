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

"plateau" multiplies the learning rate by `plateau_factor` when the validation metric has not
improved for `plateau_patience` evaluations (after the warm-up, which is linear as above).
"""

from __future__ import annotations

import math

import torch

__all__ = ["LRSchedule", "build_optimizer", "clip_gradients", "warmup_cosine_factor"]

# The share of a time budget that never moves the cosine (m in the module doc).
TIME_MARGIN = 0.1


def build_optimizer(
    parameters,
    name: str,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """One of sgd / adam / adamw / rmsprop over `parameters`.

    Weight decay applies to weight matrices and embeddings (parameters with two or more
    dimensions) and not to biases or normalisation gains, whose decay would only pull a layer's
    offset or scale towards zero (as in BERT and GPT-2 training). `betas` are Adam's (β1, β2).
    Adam and AdamW run torch's fused kernel (one pass over all parameters, the same update to
    rounding) when every parameter is a floating-point tensor on the CPU or a CUDA device.
    """
    parameters = [p for p in parameters if p.requires_grad]
    groups = [
        {"params": [p for p in parameters if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0},
    ]
    groups = [group for group in groups if group["params"]] if weight_decay > 0 else parameters
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
            group["lr"] = lr
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
