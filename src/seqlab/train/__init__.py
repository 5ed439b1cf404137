"""Training: strict configs, the resumable loop, safetensors checkpoints, run directories."""

from seqlab.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
)
from seqlab.train.config import ConfigError, RunConfig, TrainerConfig, list_recipes, load_config
from seqlab.train.distributed import DistContext, setup_distributed
from seqlab.train.optim import LRSchedule, build_optimizer, clip_gradients

# The loop and run modules use seqlab.tasks, whose task kinds import seqlab.train.config; they are
# loaded on first use so that either package can be imported first.
_LAZY = {
    "FitResult": "seqlab.train.loop", "TrainingError": "seqlab.train.loop", "fit": "seqlab.train.loop",
    "RunDirError": "seqlab.train.run", "RunResult": "seqlab.train.run", "evaluate_run": "seqlab.train.run",
    "open_run": "seqlab.train.run", "predict_run": "seqlab.train.run", "train": "seqlab.train.run",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'seqlab.train' has no attribute {name!r}")

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DistContext",
    "FitResult",
    "LRSchedule",
    "RunConfig",
    "RunDirError",
    "RunResult",
    "TrainerConfig",
    "TrainingError",
    "build_optimizer",
    "clip_gradients",
    "evaluate_run",
    "fit",
    "list_recipes",
    "load_checkpoint",
    "load_config",
    "load_weights",
    "open_run",
    "predict_run",
    "save_checkpoint",
    "save_weights",
    "setup_distributed",
    "train",
]
