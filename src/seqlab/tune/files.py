"""Adapter files: what a tuning run trained, and what it needs from its base model.

A directory holds two files:

``adapter.safetensors``
    the tensors of :func:`seqlab.tune.tuned_state_dict` under the tuned model's names
    (kilobytes for LoRA, prefix and prompt tuning; the whole model for ``full``).
``adapter.json``
    ``{"format": "seqlab-adapter", "version": 1, "method": ..., "settings": {...},
    "heads": [...], "base": {...}, "base_checksum": "sha256:..."}``: the method and its
    settings (enough to attach it again), the task heads it carries, what the caller says
    about the base (e.g. ``{"run": "runs/pretrain"}``) and a checksum of the frozen base
    weights (heads excepted), so an adapter is never applied to another base by mistake.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from seqlab.tune.apply import apply_tuning, tuned_state_dict, tuning_of
from seqlab.tune.base import TuningReport, base_checksum, count_parameters

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "load_adapter", "read_adapter_config",
           "save_adapter"]

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"
FORMAT = "seqlab-adapter"
VERSION = 1


def save_adapter(model: nn.Module, directory: str | Path, base_info: dict | None = None) -> Path:
    """Write ``adapter.safetensors`` + ``adapter.json`` for a tuned model into `directory`.

    `base_info` is stored as given (JSON values): where the base model comes from, e.g.
    ``{"run": "runs/pretrain", "builder": "transformer_classifier"}``. Returns the directory.
    """
    from seqlab.train.checkpoint import _atomic_save_tensors, atomic_write_text

    tuning = tuning_of(model)
    if tuning is None:
        raise ValueError(f"{type(model).__name__} is not tuned: call apply_tuning first")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # safetensors wants each tensor alone in its memory: clone the views (tied or sliced ones).
    tensors = {name: t.detach().to("cpu").contiguous().clone()
               for name, t in tuned_state_dict(model).items()}
    config = {
        "format": FORMAT,
        "version": VERSION,
        "method": tuning["method"],
        "settings": tuning["settings"],
        "heads": tuning["heads"],
        "head_tensors": tuning["head_tensors"],
        "model_class": type(model).__name__,
        "base": base_info or {},
        "base_checksum": tuning["base_checksum"],
        "tensors": len(tensors),
        "parameters": sum(t.numel() for t in tensors.values()),
    }
    _atomic_save_tensors(directory / ADAPTER_WEIGHTS, tensors, metadata={"format": "pt"})
    atomic_write_text(directory / ADAPTER_CONFIG, json.dumps(config, indent=2) + "\n")
    return directory


def read_adapter_config(directory: str | Path) -> dict:
    """adapter.json of an adapter directory, checked for its format."""
    directory = Path(directory)
    path = directory / ADAPTER_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"no {ADAPTER_CONFIG} in {str(directory)!r}: not an adapter "
                                f"directory written by seqlab.tune.save_adapter")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(path)!r} is not valid JSON ({exc}): write the adapter again "
                         f"with seqlab.tune.save_adapter") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT or config.get("version") != VERSION:
        raise ValueError(f"{str(path)!r} is not a {FORMAT} file of version {VERSION}")
    return config


def _describe_base(config: dict) -> str:
    base = config.get("base") or {}
    return ", ".join(f"{k}={v}" for k, v in base.items()) or "(not recorded)"


def load_adapter(model: nn.Module, directory: str | Path) -> TuningReport:
    """Attach the adapter saved in `directory` to `model` (its base) and load its tensors.

    An untuned model gets the recorded method and settings first; a tuned one must carry the
    same. Nothing is changed when the files are missing, the base weights differ from the ones
    the adapter was trained on (checksum), or a tensor does not fit.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    config = read_adapter_config(directory)
    weights_path = directory / ADAPTER_WEIGHTS
    if not weights_path.is_file():
        raise FileNotFoundError(f"{ADAPTER_WEIGHTS} is missing from {str(directory)!r}")
    tuning = tuning_of(model)
    if tuning is not None:
        same = (tuning["method"], tuning["settings"], tuning["heads"]) == (
            config["method"], config["settings"], config["heads"])
        if not same:
            raise ValueError(
                f"the model is tuned with {tuning['method']!r} {tuning['settings']}, the adapter "
                f"in {str(directory)!r} with {config['method']!r} {config['settings']}"
            )
        checksum = tuning["base_checksum"]
    else:
        checksum = base_checksum(model, exclude=config["head_tensors"])
    if checksum != config["base_checksum"]:
        raise ValueError(
            f"the adapter in {str(directory)!r} was trained on other base weights (base: "
            f"{_describe_base(config)}; checksum {config['base_checksum']}, this model's "
            f"{checksum}): load the base it names"
        )
    tensors = load_file(str(weights_path))
    if tuning is None:
        apply_tuning(model, config["method"], heads=config["heads"], **config["settings"])
    state = model.state_dict()
    wrong = [name for name, t in tensors.items()
             if name not in state or tuple(state[name].shape) != tuple(t.shape)]
    if wrong:
        raise ValueError(f"adapter tensors that do not fit the model: {', '.join(wrong)}")
    with torch.no_grad():
        for name, tensor in tensors.items():
            state[name].copy_(tensor)
    tuning = tuning_of(model)
    trainable, total, names = count_parameters(model)
    return TuningReport(tuning["method"], tuning["settings"], trainable, total, names,
                        tuple(tuning["heads"]))
