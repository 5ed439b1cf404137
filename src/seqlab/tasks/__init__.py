"""Task kinds: the glue from a run config to data, model, metrics and predictions.

Each kind lives in its own module and registers itself here; `seqlab.train` looks kinds up by
the config's `task:` name. Adding a kind = one module below + one line in `_MODULES` + a recipe.
"""

from __future__ import annotations

import importlib

from seqlab.tasks.base import NoPredictConfig, RecurrentModelConfig, StepOutput, Task

__all__ = [
    "NoPredictConfig",
    "RecurrentModelConfig",
    "StepOutput",
    "Task",
    "get_task",
    "register_task",
    "task_names",
]

# Modules that define built-in task kinds, imported on first lookup.
_MODULES = [
    "seqlab.tasks.classify",
    "seqlab.tasks.tag",
    "seqlab.tasks.language_model",
    "seqlab.tasks.adding",
    "seqlab.tasks.copy_memory",
    "seqlab.tasks.digits",
    "seqlab.tasks.forecast",
    "seqlab.tasks.bio",
    "seqlab.tasks.translate",
    "seqlab.tasks.transformer",
    "seqlab.tasks.fill_blank",
    "seqlab.tasks.caption",
    "seqlab.tasks.video_caption",
    "seqlab.tasks.vision",
    "seqlab.tasks.pretrain",
    "seqlab.tasks.causal_lm",
    "seqlab.tasks.sft", "seqlab.tasks.reward_model", "seqlab.tasks.dpo", "seqlab.tasks.rl",
    "seqlab.tasks.asr",
]

_REGISTRY: dict[str, type[Task]] = {}
_loaded = False


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make `cls` available as `task: <cls.name>` in configs."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name`")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # A task module not written yet (e.g. translate) is simply absent.
            if exc.name != module:
                raise


def task_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_task(name: str) -> type[Task]:
    """The task class registered as `name`; ValueError listing the known kinds otherwise."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"task={name!r} is not one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]
