"""Checkpoints as safetensors + a JSON sidecar, written atomically, never loaded with pickle.

A training state is a nested structure (model and optimizer state dicts, RNG states, counters).
`flatten_state` splits it into flat tensor keys (`optimizer.state.0.exp_avg`) for the safetensors
file and a JSON tree where each tensor is replaced by a reference, so loading needs only
`safetensors.torch.load_file` and `json.load`.

Layout of a checkpoint directory::

    state-<step>.safetensors   every tensor of the state
    state.json                 the non-tensor tree, the tensors file's name and its sha256

`state.json` is replaced last (write to a temporary file in the same directory, fsync,
`os.replace`), so a crash at any moment leaves either the previous complete checkpoint or the
new one; a tensors file whose hash does not match is reported as corrupt.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

__all__ = [
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_text",
    "flatten_state",
    "load_checkpoint",
    "load_weights",
    "rng_state",
    "save_checkpoint",
    "save_weights",
    "set_rng_state",
    "unflatten_state",
]

_TENSOR = "__tensor__"


class CheckpointError(ValueError):
    """A missing, unreadable or corrupt checkpoint / weights file; the message is for the user."""


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the whole new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata=None) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(tensors, str(tmp), metadata=metadata)
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def flatten_state(state: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested dict/list state into (JSON tree with tensor references, flat tensors).

    Tensors that share storage (tied weights) are stored once; the JSON tree points every use
    at the same key.
    """
    tensors: dict[str, torch.Tensor] = {}
    seen: dict[tuple, str] = {}

    def walk(node: Any, key: str) -> Any:
        if isinstance(node, torch.Tensor):
            identity = (node.data_ptr(), node.dtype, tuple(node.shape), tuple(node.stride()))
            if node.numel() > 0 and identity in seen:
                return {_TENSOR: seen[identity]}
            seen[identity] = key
            tensors[key] = node.detach().to("cpu").contiguous().clone()
            return {_TENSOR: key}
        if isinstance(node, dict):
            return {"__dict__": [[k, walk(v, f"{key}.{k}" if key else str(k))] for k, v in node.items()]}
        if isinstance(node, (list, tuple)):
            items = [walk(v, f"{key}.{i}" if key else str(i)) for i, v in enumerate(node)]
            return {"__tuple__": items} if isinstance(node, tuple) else items
        if isinstance(node, np.ndarray):
            return walk(torch.from_numpy(node.copy()), key)
        if isinstance(node, (np.integer, np.floating)):
            return node.item()
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot store a {type(node).__name__} at {key!r} in a checkpoint")

    return walk(state, prefix), tensors


def unflatten_state(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `flatten_state`."""
    if isinstance(tree, dict):
        if _TENSOR in tree:
            return tensors[tree[_TENSOR]]
        if "__dict__" in tree:
            return {k: unflatten_state(v, tensors) for k, v in tree["__dict__"]}
        if "__tuple__" in tree:
            return tuple(unflatten_state(v, tensors) for v in tree["__tuple__"])
        return {k: unflatten_state(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [unflatten_state(v, tensors) for v in tree]
    return tree


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(directory: str | Path, state: dict[str, Any], step: int) -> Path:
    """Write `state` into `directory` atomically; older tensor files are removed afterwards."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tree, tensors = flatten_state(state)
    tensors_name = f"state-{step:08d}.safetensors"
    _atomic_save_tensors(directory / tensors_name, tensors)
    sidecar = {
        "format": "seqlab-checkpoint-1",
        "step": step,
        "tensors": tensors_name,
        "sha256": _sha256(directory / tensors_name),
        "state": tree,
    }
    atomic_write_text(directory / "state.json", json.dumps(sidecar))
    for old in directory.glob("state-*.safetensors"):
        if old.name != tensors_name:
            old.unlink(missing_ok=True)
    return directory / "state.json"


def load_checkpoint(directory: str | Path) -> dict[str, Any]:
    """Read the state written by `save_checkpoint`; CheckpointError when missing or corrupt."""
    directory = Path(directory)
    sidecar_path = directory / "state.json"
    if not sidecar_path.is_file():
        raise CheckpointError(f"no checkpoint in {directory} (state.json is missing)")
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
        tensors_path = directory / sidecar["tensors"]
        expected = sidecar["sha256"]
        tree = sidecar["state"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"corrupt checkpoint {sidecar_path}: {exc}") from None
    if not tensors_path.is_file():
        raise CheckpointError(f"corrupt checkpoint in {directory}: {tensors_path.name} is missing")
    if _sha256(tensors_path) != expected:
        raise CheckpointError(f"corrupt checkpoint {tensors_path}: its checksum does not match state.json")
    try:
        tensors = load_file(str(tensors_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt checkpoint {tensors_path}: {exc}") from None
    return unflatten_state(tree, tensors)


def save_weights(path: str | Path, module: torch.nn.Module, metadata: dict[str, str] | None = None) -> None:
    """Model weights alone as one safetensors file (tied tensors stored once, listed in metadata).

    The metadata also holds the model's spec (class and constructor arguments) when its class
    is registered, so :func:`seqlab.models.load` rebuilds it from the file alone.
    """
    from seqlab.models.registry import SPEC_METADATA_KEY, model_spec

    tree, tensors = flatten_state(module.state_dict())
    aliases = {k: v[_TENSOR] for k, v in tree["__dict__"] if v[_TENSOR] != k}
    meta = {"format": "seqlab-weights-1", "aliases": json.dumps(aliases)}
    try:
        meta[SPEC_METADATA_KEY] = json.dumps(model_spec(module))
    except TypeError:
        pass  # a module of the user's own: the weights alone are saved
    meta.update(metadata or {})
    _atomic_save_tensors(Path(path), tensors, metadata=meta)


def load_weights(path: str | Path, module: torch.nn.Module) -> None:
    """Load weights written by `save_weights` into `module` (strict: names and shapes must match)."""
    from seqlab.models.registry import read_weights

    try:
        tensors, _ = read_weights(path)
    except FileNotFoundError:
        raise CheckpointError(f"weights file {path} does not exist") from None
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0:2]
        raise CheckpointError(f"weights in {path} do not fit the model: {' '.join(first)}") from None


def rng_state() -> dict[str, Any]:
    """The torch, CUDA, numpy and python random states, storable by `flatten_state`."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"].to(torch.uint8))
    numpy_state = state["numpy"]
    np.random.set_state((
        numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
        numpy_state["has_gauss"], numpy_state["cached"],
    ))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"]), python_state["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])
