"""The training loop: one readable function, resumable at any saved step.

For each step: set the scheduled learning rate, forward under autocast, stop on a non-finite
loss, backward, clip (by value and/or by norm), optimizer step, carry the detached recurrent state
to the next batch (truncated BPTT). Every `eval_every` steps (or at each epoch end) evaluate on the
validation split, keep the best weights in `model.safetensors`, update the plateau schedule and
early stopping (a run tuned with a parameter-efficient method keeps only what it trains:
`adapter.safetensors` + `adapter.json`, see `seqlab.train.tuning`). Every `save_every` steps (or at each epoch end) write the full training state to
`checkpoint/` so that `--resume` continues exactly where the run stopped: batch order depends only
on (seed, epoch), and the RNG states, optimizer, schedule, carried state, position in the epoch
and best / early-stopping counters are all restored.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqlab.tasks.base import Task, to_device
from seqlab.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_weights,
    rng_state,
    save_checkpoint,
    save_weights,
    set_rng_state,
)
from seqlab.train.config import TrainerConfig
from seqlab.train.distributed import DistContext
from seqlab.train.optim import LRSchedule, build_optimizer, clip_gradients, layer_lr_scales
from seqlab.train.reporting import MetricsLog, ProgressDisplay

__all__ = ["FitResult", "TrainingError", "autocast_context", "detach_carry", "fit",
           "load_best_weights", "save_best_weights"]


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss or gradients); the message says what to try."""


@dataclass
class FitResult:
    step: int
    epoch: int
    stop_reason: str  # "completed" | "max_steps" | "early_stopping" | "time_budget" | "interrupted"
    best_step: int | None
    best_metrics: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0


def map_carry(function, carry: Any) -> Any:
    """`function` applied to every tensor of a carried state (a tensor, or a tuple, list or dict
    of them, nested; other values and None pass through)."""
    if isinstance(carry, torch.Tensor):
        return function(carry)
    if isinstance(carry, dict):
        return {key: map_carry(function, value) for key, value in carry.items()}
    if isinstance(carry, (tuple, list)):
        return type(carry)(map_carry(function, c) for c in carry)
    return carry


def detach_carry(carry: Any) -> Any:
    """Cut the autograd graph of a carried state (see :func:`map_carry`)."""
    return map_carry(torch.Tensor.detach, carry)


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast on CUDA when supported ('auto'), or when asked ('bf16'); fp32 otherwise."""
    if precision == "fp32":
        return nullcontext()
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _tuned(model: torch.nn.Module) -> bool:
    """Whether a parameter-efficient method (not full fine-tuning) is attached to `model`."""
    from seqlab.tune import tuning_of

    tuning = tuning_of(model)
    return tuning is not None and tuning["method"] != "full"


def save_best_weights(run_dir: Path, model: torch.nn.Module, base_info: dict | None = None) -> None:
    """`model.safetensors`, or for a tuned model `adapter.safetensors` + `adapter.json`
    (what it trained, and `base_info`: where its frozen base comes from)."""
    if _tuned(model):
        from seqlab.tune import save_adapter

        save_adapter(model, run_dir, base_info)
    else:
        save_weights(run_dir / "model.safetensors", model)


def load_best_weights(run_dir: Path, model: torch.nn.Module) -> None:
    """Read back what :func:`save_best_weights` wrote (a tuned model's base stays as it is)."""
    if _tuned(model):
        from seqlab.tune import load_adapter

        load_adapter(model, run_dir)
    else:
        load_weights(run_dir / "model.safetensors", model)


def _model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint keeps: all of them, or what a tuning method trains (the
    frozen base comes back from the base run on resume)."""
    if _tuned(model):
        from seqlab.tune import tuned_state_dict

        return tuned_state_dict(model)
    return model.state_dict()


def _restore_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    if not _tuned(model):
        model.load_state_dict(state)
        return
    from seqlab.tune import tuned_state_dict

    expected = set(tuned_state_dict(model))
    if set(state) != expected:
        raise CheckpointError(
            f"the checkpoint's tensors do not match the tuned model's (missing: "
            f"{sorted(expected - set(state))[:4]}, unexpected: {sorted(set(state) - expected)[:4]})"
        )
    model.load_state_dict(state, strict=False)


def _total_steps(cfg: TrainerConfig, steps_per_epoch: int) -> int:
    total = cfg.epochs * steps_per_epoch
    return min(total, cfg.max_steps) if cfg.max_steps else total


def _improved(value: float, best: float | None, mode: str) -> bool:
    if math.isnan(value):
        return False
    return best is None or (value < best if mode == "min" else value > best)


def fit(
    task: Task,
    model: torch.nn.Module,
    cfg: TrainerConfig,
    run_dir: Path,
    context: DistContext,
    resume: bool = False,
    stop_after_step: int | None = None,
    console=None,
    base_info: dict | None = None,
) -> FitResult:
    """Train `model` on `task` as `cfg` says, writing into `run_dir` (rank 0 only).

    `resume=True` continues from `run_dir/checkpoint`. `stop_after_step` ends the run right after
    that step's checkpoint, as an interruption would (used to test resuming). `base_info` goes
    into a tuned model's `adapter.json` (its base run).
    """
    device = context.device
    model.to(device)
    train_model = context.wrap(model)
    scales = layer_lr_scales(model, cfg.layer_lr_decay) if cfg.layer_lr_decay else None
    optimizer = build_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum,
                                tuple(cfg.betas), lr_scales=scales)
    batch_size = cfg.batch_size
    eval_batch_size = cfg.eval_batch_size or cfg.batch_size
    steps_per_epoch = len(task.train_batches(0, batch_size, context.rank, context.world_size))
    if steps_per_epoch == 0:
        raise TrainingError(
            f"the training split gives no batch of trainer.batch_size={batch_size} per process; "
            "use a smaller trainer.batch_size or more data"
        )
    total_steps = _total_steps(cfg, steps_per_epoch)
    schedule = LRSchedule(
        optimizer, cfg.scheduler, cfg.lr, total_steps, cfg.warmup_steps, cfg.min_lr,
        cfg.plateau_factor, cfg.plateau_patience, mode=task.mode,
    )
    checkpoint_dir = run_dir / "checkpoint"

    step, epoch, position = 0, 0, 0
    carry = None
    best_value: float | None = None
    best_step: int | None = None
    best_metrics: dict[str, float] = {}
    bad_evals = 0
    window_loss, window_count = 0.0, 0
    elapsed_before = 0.0
    if resume:
        state = load_checkpoint(checkpoint_dir)
        _restore_model_state(model, state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        counters = state["counters"]
        step, epoch, position = counters["step"], counters["epoch"], counters["position"]
        best_value, best_step, bad_evals = counters["best_value"], counters["best_step"], counters["bad_evals"]
        best_metrics = counters["best_metrics"]
        window_loss, window_count = counters["window"]
        elapsed_before = counters["elapsed"]
        carry = map_carry(lambda t: t.to(device), state.get("carry"))
        set_rng_state(state["rng"])
        if counters.get("finished") and not (step < total_steps and epoch < cfg.epochs):
            # Nothing left to do, unless the resumed config asks for more steps or epochs.
            return FitResult(step, epoch, "completed", best_step, best_metrics, elapsed_before)

    log = MetricsLog(run_dir / "metrics.jsonl", enabled=context.is_main, keep_until_step=step if resume else 0)
    progress = ProgressDisplay(total_steps, task.unit, enabled=cfg.progress and context.is_main,
                               console=console, every=cfg.log_every)
    start = time.monotonic()
    budget = 60 * cfg.max_time_minutes if cfg.max_time_minutes is not None else None
    # Training time every process agrees on (the mean of theirs), for a schedule that follows
    # the time budget: each process must set the same learning rate.
    clock = elapsed_before
    lr = schedule.lr_for(step, clock / budget if budget else None)

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - start

    def save_state(finished: bool = False) -> None:
        if not context.is_main:
            return
        state = {
            "model": _model_state(model),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "rng": rng_state(),
            "carry": carry,
            "counters": {
                "step": step, "epoch": epoch, "position": position, "best_value": best_value,
                "best_step": best_step, "best_metrics": best_metrics, "bad_evals": bad_evals,
                "window": [window_loss, window_count], "elapsed": elapsed(),
                "finished": finished,
            },
        }
        save_checkpoint(checkpoint_dir, state, step)

    def run_eval() -> bool:
        """Evaluate on valid, keep the best weights; True when early stopping says stop."""
        nonlocal best_value, best_step, best_metrics, bad_evals
        with autocast_context(device, cfg.precision):
            metrics = task.evaluate(model, "valid", eval_batch_size, device, cfg.eval_max_batches)
        model.train()
        value = metrics[task.metric]
        log.write(step=step, epoch=epoch, split="valid", metrics=metrics,
                  lr=lr, elapsed=elapsed())
        progress.note(f"step {step}: valid " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        schedule.observe(value)
        if _improved(value, best_value, task.mode):
            best_value, best_step, best_metrics, bad_evals = value, step, metrics, 0
            if context.is_main:
                save_best_weights(run_dir, model, base_info)
            return False
        bad_evals += 1
        return cfg.early_stopping_patience is not None and bad_evals >= cfg.early_stopping_patience

    stop_reason = "completed"
    last_eval_step = -1
    model.train()
    progress.start(step)
    try:
        while epoch < cfg.epochs and step < total_steps and stop_reason == "completed":
            keys = task.train_batches(epoch, batch_size, context.rank, context.world_size)
            if position == 0:
                carry = None
            for index in range(position, len(keys)):
                batch = to_device(task.collate(keys[index]), device)
                lr = schedule.apply(step, clock / budget if budget else None)
                with autocast_context(device, cfg.precision):
                    out = task.training_step(train_model, batch, carry)
                loss_sum, count, clock_sum = context.all_reduce_sum(
                    [out.loss.item(), 1.0, elapsed()])
                loss_value, clock = loss_sum / count, clock_sum / count
                if not math.isfinite(loss_value):
                    raise TrainingError(
                        f"the training loss became {loss_value} at step {step + 1} (epoch {epoch + 1}); "
                        f"stopped, the last good checkpoint is kept in {checkpoint_dir}. "
                        "Try a smaller trainer.lr or set trainer.clip_grad_norm"
                    )
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                grad_norm = clip_gradients(model.parameters(), cfg.clip_grad_norm, cfg.clip_grad_value)
                if context.any(not math.isfinite(grad_norm)):
                    raise TrainingError(
                        f"the gradient norm became {grad_norm} at step {step + 1}; stopped, the last good "
                        f"checkpoint is kept in {checkpoint_dir}. Try a smaller trainer.lr or set "
                        "trainer.clip_grad_norm"
                    )
                optimizer.step()
                carry = detach_carry(out.carry)
                step += 1
                position = index + 1
                window_loss += loss_value
                window_count += 1
                progress.update(step, loss_value, out.count)

                if step % cfg.log_every == 0:
                    log.write(step=step, epoch=epoch, split="train",
                              metrics={"loss": window_loss / window_count}, lr=lr,
                              grad_norm=grad_norm, elapsed=elapsed())
                    window_loss, window_count = 0.0, 0
                stop = False
                if cfg.eval_every is not None and step % cfg.eval_every == 0:
                    stop = run_eval()
                    last_eval_step = step
                if position == len(keys):
                    epoch, position, carry = epoch + 1, 0, None
                    if cfg.eval_every is None and not stop:
                        stop = run_eval()
                        last_eval_step = step
                out_of_time = cfg.max_time_minutes is not None and elapsed() > 60 * cfg.max_time_minutes
                out_of_time = context.any(out_of_time)
                if stop:
                    stop_reason = "early_stopping"
                elif step >= total_steps:
                    stop_reason = "max_steps" if cfg.max_steps and step == cfg.max_steps else "completed"
                elif out_of_time:
                    stop_reason = "time_budget"
                due = (cfg.save_every is not None and step % cfg.save_every == 0) or (
                    cfg.save_every is None and position == 0
                )
                saved = due and stop_reason == "completed" and step < total_steps
                if saved:
                    save_state()
                if stop_after_step is not None and step >= stop_after_step:
                    if not saved:
                        save_state()
                    progress.stop()
                    return FitResult(step, epoch, "interrupted", best_step, best_metrics, elapsed())
                if stop_reason != "completed" or step >= total_steps:
                    break
        if last_eval_step != step:
            run_eval()
        save_state(finished=True)
    finally:
        progress.stop()
        log.close()
    context.barrier()
    return FitResult(step, epoch, stop_reason, best_step, best_metrics, elapsed())
