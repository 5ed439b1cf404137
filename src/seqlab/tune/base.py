"""What every tuning method shares: parameter names, freezing, the task heads, the base weights.

Every parameter a method adds lives in a module or parameter whose name starts with one of
:data:`TUNING_PREFIXES` (``lora_``, ``adapter_``, ``prefix_``, ``prompt_``), so the trained
tensors are found by name alone (as PEFT's ``lora_`` prefix). Methods that wrap a layer keep it
as ``base_layer`` (PEFT's idea) and methods that re-parametrise a weight keep it as
``parametrizations.<name>.original`` (``torch.nn.utils.parametrize``); :func:`base_name` maps
both back to the name the weight had before tuning, so the base model's state dict and its
checksum stay what they were.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "HEAD_NAMES",
    "METHODS",
    "TUNING_PREFIXES",
    "TuningModule",
    "TuningReport",
    "base_checksum",
    "base_name",
    "base_state_dict",
    "count_parameters",
    "default_heads",
    "is_tuning_name",
]

METHODS = ("full", "lora", "adapter", "prefix", "prompt")
TUNING_PREFIXES = ("lora_", "adapter_", "prefix_", "prompt_")
# Task heads: the small layers on top of a body that a new task trains from scratch.
HEAD_NAMES = ("head", "pooler", "classifier", "score")


class TuningModule(nn.Module):
    """A module a tuning method added. ``disabled`` makes it act as if it were not there."""

    disabled: bool = False


def is_tuning_name(name: str) -> bool:
    """Whether a parameter name belongs to a tuning method (a part starts with a tuning prefix)."""
    return any(part.startswith(TUNING_PREFIXES) for part in name.split("."))


def base_name(name: str) -> str:
    """The name a base weight had before tuning.

    ``linear1.base_layer.weight`` -> ``linear1.weight`` (a wrapped layer);
    ``rnn.parametrizations.weight_hh_l0.original`` -> ``rnn.weight_hh_l0`` (a parametrised one).
    """
    parts = [part for part in name.split(".") if part != "base_layer"]
    if "parametrizations" in parts:
        index = parts.index("parametrizations")
        if parts[index + 2:] == ["original"]:
            parts = parts[:index] + [parts[index + 1]]
    return ".".join(parts)


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under their names before tuning, without what a method added.

    After :func:`seqlab.tune.merge` these are the merged weights: a plain model of the same
    class loads them with ``load_state_dict``.
    """
    state = {}
    for name, tensor in model.state_dict().items():
        if is_tuning_name(name):
            continue
        state[base_name(name)] = tensor
    return state


def base_checksum(model: nn.Module, exclude: tuple[str, ...] | list[str] = ()) -> str:
    """sha256 over the base weights' names, shapes, dtypes and bytes, sorted by name.

    `exclude` names weights left out (the task heads an adapter file carries itself: a new head
    starts at random, so it is not part of what the adapter needs from its base).
    """
    digest = hashlib.sha256()
    state = base_state_dict(model)
    for name in sorted(set(state) - set(exclude)):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return "sha256:" + digest.hexdigest()


def _language_model_classes() -> tuple[type, ...]:
    from seqlab.models import (
        LanguageModel,
        Seq2Seq,
        TransformerLM,
        TransformerMaskedLM,
        TransformerSeq2Seq,
    )

    return (LanguageModel, TransformerLM, TransformerMaskedLM, Seq2Seq, TransformerSeq2Seq)


def default_heads(model: nn.Module) -> tuple[str, ...]:
    """Names of the model's task heads: its direct children named in :data:`HEAD_NAMES`.

    Language models have none: their output layer is the vocabulary projection (often the
    embedding matrix itself), which the base model already trained and a tuning method leaves
    frozen, as PEFT does.
    """
    if isinstance(model, _language_model_classes()):
        return ()
    return tuple(
        name for name, child in model.named_children()
        if name in HEAD_NAMES and child is not None and any(True for _ in child.parameters())
    )


def _unique_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) once per tensor (a tied matrix counts once)."""
    seen, unique = set(), []
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) not in seen:
            seen.add(id(parameter))
            unique.append((name, parameter))
    return unique


_SHOWN_TARGETS = 4  # targets a report names before it counts the rest


@dataclass
class TuningReport:
    """What :func:`seqlab.tune.apply_tuning` did.

    method / settings: as given (with defaults filled in). trainable / total: parameter counts
    (each tensor once). trainable_names: every trained parameter. heads: the task heads left
    trainable. targets: the weights or layers the method attached to.
    """

    method: str
    settings: dict
    trainable: int
    total: int
    trainable_names: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()
    targets: tuple[str, ...] = field(default_factory=tuple)

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)

    def __str__(self) -> str:
        heads = f"; heads trained: {', '.join(self.heads)}" if self.heads else ""
        # where it attached, so that a name pattern that caught other weights than meant shows
        shown = ", ".join(self.targets[:_SHOWN_TARGETS])
        if len(self.targets) > _SHOWN_TARGETS:
            shown += f" and {len(self.targets) - _SHOWN_TARGETS} more"
        on = f"; on {shown}" if shown else ""
        return (
            f"{self.method}: {self.trainable:,} trainable of {self.total:,} parameters "
            f"({self.trainable_percent:.2f}%){on}{heads}"
        )


def count_parameters(model: nn.Module) -> tuple[int, int, tuple[str, ...]]:
    """(trainable, total, names of trainable parameters), each tensor counted once."""
    unique = _unique_parameters(model)
    trainable = [(name, p) for name, p in unique if p.requires_grad]
    return (
        sum(p.numel() for _, p in trainable),
        sum(p.numel() for _, p in unique),
        tuple(name for name, _ in trainable),
    )
