"""Models that rebuild themselves: each records its class and constructor arguments.

A model class decorated with :func:`register_model` keeps the arguments it was built with
(``model_spec(model)``), a JSON tree such as::

    {"class": "TransformerClassifier",
     "args": {"encoder": {"class": "TransformerEncoderModel", "args": {"vocab_size": 8000, ...}},
              "num_classes": 2, "pooling": "mean", "dropout": 0.1}}

:func:`build_model` turns such a tree back into a module, and :func:`load` rebuilds a run
directory's model from the tree stored in the metadata of its ``model.safetensors``, so a run's
model can be used without knowing the task that trained it. Only registered seqlab classes can
be named, and the arguments are plain JSON: nothing is unpickled.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "SPEC_METADATA_KEY",
    "build_model",
    "load",
    "model_spec",
    "read_weights",
    "register_model",
    "registered_models",
]

SPEC_METADATA_KEY = "seqlab.model"

_MODELS: dict[str, type[nn.Module]] = {}


def register_model(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: record each instance's constructor arguments and make the class
    buildable by name from a spec."""
    original_init = cls.__init__
    signature = inspect.signature(original_init)

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        if type(self) is cls:  # a subclass records its own arguments, if registered
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            arguments.pop("self")
            object.__setattr__(self, "_seqlab_build_args", arguments)

    cls.__init__ = __init__
    _MODELS[cls.__name__] = cls
    return cls


def registered_models() -> list[str]:
    """Names of the classes :func:`build_model` can build."""
    return sorted(_MODELS)


def _encode(value: Any, where: str) -> Any:
    if isinstance(value, nn.Module):
        return model_spec(value)
    if isinstance(value, (list, tuple)):
        return [_encode(item, where) for item in value]
    if isinstance(value, dict):
        return {str(key): _encode(item, where) for key, item in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"argument {where} of type {type(value).__name__} cannot be stored in a spec")


def model_spec(model: nn.Module) -> dict[str, Any]:
    """The JSON tree that rebuilds `model` (class name + constructor arguments, nested).

    Raises TypeError for a module that was not built by a registered class.
    """
    model = getattr(model, "module", model)  # a DDP wrapper holds the model as .module
    arguments = getattr(model, "_seqlab_build_args", None)
    if arguments is None:
        raise TypeError(
            f"{type(model).__name__} does not record its arguments; decorate the class with "
            f"seqlab.models.register_model to store and rebuild it"
        )
    name = type(model).__name__
    return {
        "class": name,
        "args": {key: _encode(value, f"{name}.{key}") for key, value in arguments.items()},
    }


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"class", "args"}:
        return build_model(value)
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


def build_model(spec: dict[str, Any]) -> nn.Module:
    """A freshly initialised module from a spec written by :func:`model_spec`."""
    import seqlab.models  # noqa: F401  (registers every built-in model class)

    if not isinstance(spec, dict) or "class" not in spec or "args" not in spec:
        raise ValueError(f"not a seqlab model spec (expected {{'class', 'args'}}): {spec!r:.120}")
    name = spec["class"]
    if name not in _MODELS:
        raise ValueError(
            f"model class {name!r} is not a registered seqlab model "
            f"(known: {', '.join(registered_models())})"
        )
    arguments = {key: _decode(value) for key, value in spec["args"].items()}
    return _MODELS[name](**arguments)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a seqlab weights file; tied tensors appear under every name.

    Raises FileNotFoundError for a missing file and ValueError for one that does not parse.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"corrupt weights file {path}: {exc}") from None
    for name, target in json.loads(metadata.get("aliases", "{}")).items():
        tensors[name] = tensors[target]
    return tensors, metadata


def load(run_dir: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The model of a run directory (or a weights file), weights loaded, in eval mode.

    The class and arguments come from the spec stored with the weights, so no config, task or
    data is needed. Raises ValueError for a path with no seqlab weights or a file written
    before specs were stored (open such a run with ``seqlab.train.run.open_run``).
    """
    path = Path(run_dir)
    weights_path = path / "model.safetensors" if path.is_dir() else path
    if not weights_path.is_file():
        raise ValueError(f"{path} holds no model.safetensors; give a seqlab run directory")
    tensors, metadata = read_weights(weights_path)
    if SPEC_METADATA_KEY not in metadata:
        raise ValueError(
            f"{weights_path} does not store its model's spec (written by an older seqlab); "
            f"open it with seqlab.train.run.open_run({str(path)!r})"
        )
    model = build_model(json.loads(metadata[SPEC_METADATA_KEY]))
    model.load_state_dict(tensors, strict=True)
    return model.to(map_location).eval()
