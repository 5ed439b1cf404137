"""One entry point for every tuning method, and what is done to a tuned model afterwards.

    report = apply_tuning(model, "lora", r=8, alpha=16)   # freezes the rest, heads stay trainable
    print(report)                                         # lora: 12,288 trainable of ... (1.2%)
    ...train...
    tuned_state_dict(model)                               # only what was trained
    merge(model); unmerge(model)                          # fold LoRA in and out of the weights
    with disable_adapters(model): ...                     # the base model (DPO's reference)
    merge_and_unload(model)                               # a plain model again, LoRA folded in

A method attaches to a model once; its name and settings are kept on the model
(``model.seqlab_tuning``) so that :func:`seqlab.tune.save_adapter` can record them.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from seqlab.tune.adapters import apply_adapters
from seqlab.tune.base import (
    METHODS,
    TuningModule,
    TuningReport,
    base_checksum,
    count_parameters,
    default_heads,
    is_tuning_name,
)
from seqlab.tune.lora import apply_lora, default_lora_targets, merge_lora, unmerge_lora
from seqlab.tune.prefix import apply_prefix
from seqlab.tune.prompt import apply_prompt

__all__ = [
    "apply_tuning",
    "disable_adapters",
    "merge",
    "merge_and_unload",
    "tuned_state_dict",
    "tuning_of",
    "unmerge",
]

_APPLY = {
    "lora": apply_lora,
    "adapter": apply_adapters,
    "prefix": apply_prefix,
    "prompt": apply_prompt,
}


def tuning_of(model: nn.Module) -> dict | None:
    """What :func:`apply_tuning` recorded on the model (method, settings, heads), or None."""
    return getattr(model, "seqlab_tuning", None)


def _settings(method: str, model: nn.Module, settings: dict) -> dict:
    """The method's settings with its defaults filled in; an unknown key is an error."""
    if method == "full":
        if settings:
            raise ValueError(f"method 'full' takes no settings, got {', '.join(settings)}")
        return {}
    signature = inspect.signature(_APPLY[method])
    allowed = [name for name in signature.parameters if name != "model"]
    unknown = [name for name in settings if name not in allowed]
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(map(repr, unknown))} for method {method!r}; "
            f"allowed: {', '.join(allowed)}"
        )
    full = {name: signature.parameters[name].default for name in allowed}
    full.update(settings)
    if method == "lora":
        if full["alpha"] is None:
            full["alpha"] = full["r"]
        if isinstance(full["targets"], str):
            full["targets"] = [full["targets"]]
        full["targets"] = list(full["targets"] or default_lora_targets(model))
    if method == "prompt" and full["init_text"] is not None:
        full["init_text"] = [int(i) for i in full["init_text"]]
    return full


def apply_tuning(
    model: nn.Module, method: str = "full", heads: Sequence[str] | None = None, **settings
) -> TuningReport:
    """Attach a tuning method to `model` and freeze what it does not train.

    Args:
        model: any seqlab model (Transformer or recurrent), usually built from a pre-trained run.
        method: one of :data:`METHODS`: ``full`` (every weight trains), ``lora``
            (:func:`~seqlab.tune.lora.apply_lora`: r, alpha, dropout, targets, rslora),
            ``adapter`` (:func:`~seqlab.tune.adapters.apply_adapters`: reduction_factor,
            placement, activation), ``prefix`` (:func:`~seqlab.tune.prefix.apply_prefix`:
            num_virtual_tokens, reparameterize, hidden_size), ``prompt``
            (:func:`~seqlab.tune.prompt.apply_prompt`: num_virtual_tokens, init, init_text).
        heads: names of the model's children that stay trainable (the task heads); None = the
            defaults of :func:`~seqlab.tune.base.default_heads` (``head``, ``pooler`` ... of a
            classifier or tagger; none for a language model).
        settings: the method's keyword arguments.

    Returns:
        a :class:`TuningReport` with trainable / total parameter counts.

    Raises:
        ValueError: an unknown method or setting, a LoRA target that matches nothing (the
            message lists the weights that exist), a model tuned already.
    """
    if method not in METHODS:
        raise ValueError(
            f"tuning method should be one of {', '.join(map(repr, METHODS))}, got {method!r}"
        )
    if tuning_of(model) is not None or any(isinstance(m, TuningModule) for m in model.modules()):
        raise ValueError(
            f"{type(model).__name__} is tuned already (method "
            f"{(tuning_of(model) or {}).get('method')!r}); build a fresh model to tune again"
        )
    heads = default_heads(model) if heads is None else tuple(heads)
    children = dict(model.named_children())
    for head in heads:
        if children.get(head) is None:
            raise ValueError(
                f"head {head!r} is not a child of {type(model).__name__}; children: "
                f"{', '.join(name for name, child in children.items() if child is not None)}"
            )
    settings = _settings(method, model, settings)
    # Heads excepted: a new head starts at random, so an adapter carries it and a base run
    # need not match it.
    head_names = tuple(
        name for name, _ in model.named_parameters()
        if name.split(".")[0] in heads
    )
    checksum = base_checksum(model, exclude=head_names)
    targets: tuple[str, ...] = ()
    if method != "full":
        targets = _APPLY[method](model, **settings)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(is_tuning_name(name) or name.split(".")[0] in heads)
    model.seqlab_tuning = {
        "method": method, "settings": settings, "heads": list(heads),
        "head_tensors": list(head_names), "base_checksum": checksum,
    }
    trainable, total, names = count_parameters(model)
    return TuningReport(method, settings, trainable, total, names, heads, targets)


def _require_tuning(model: nn.Module) -> dict:
    tuning = tuning_of(model)
    if tuning is None:
        raise ValueError(f"{type(model).__name__} is not tuned: call apply_tuning first")
    return tuning


def tuned_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """What the method trained, by the tuned model's parameter names: the ``lora_`` /
    ``adapter_`` / ``prefix_`` / ``prompt_`` tensors and the task heads (for ``full``: all)."""
    tuning = _require_tuning(model)
    state = model.state_dict()
    if tuning["method"] == "full":
        return dict(state)
    heads = tuple(tuning["heads"])
    return {
        name: tensor for name, tensor in state.items()
        if is_tuning_name(name) or name.split(".")[0] in heads
    }


def _foldable(model: nn.Module, action: str) -> str:
    method = _require_tuning(model)["method"]
    if method not in ("lora", "full"):
        raise ValueError(
            f"{action}: method {method!r} adds computation that no weight can absorb; only "
            f"LoRA folds into the weights (full fine-tuning has nothing to fold)"
        )
    return method


def merge(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its weight, W <- W + s·B A: the model then runs at the base
    model's speed with the same outputs (to float rounding). A no-op for ``full``."""
    if _foldable(model, "merge") == "lora":
        merge_lora(model)
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Take the LoRA updates out of the weights again (W <- W - s·B A)."""
    if _foldable(model, "unmerge") == "lora":
        unmerge_lora(model)
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Fold LoRA into the weights and take every trace of tuning off the model: wrapped layers
    become their ``base_layer`` again, parametrised weights plain parameters. The model is then
    of its own class with its own parameter names (what export and ``seqlab merge`` want);
    returns it."""
    merge(model)
    from torch.nn.utils import parametrize

    from seqlab.tune.lora import LoraLinear, LoraParametrization

    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoraLinear):
                setattr(module, child_name, child.base_layer)
        if parametrize.is_parametrized(module):
            for weight in list(module.parametrizations):
                if any(isinstance(p, LoraParametrization) for p in module.parametrizations[weight]):
                    # merged: the parametrisation returns the merged original as it is
                    parametrize.remove_parametrizations(module, weight, leave_parametrized=True)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    del model.seqlab_tuning
    return model


@contextmanager
def disable_adapters(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the model computes as its base model (every tuning module switched
    off, merged LoRA taken out); task heads keep their trained weights. Used as the reference
    model of DPO without a second copy of the weights."""
    method = _require_tuning(model)["method"]
    if method == "full":
        raise ValueError(
            "full fine-tuning changes the weights themselves, so there is nothing to switch "
            "off: keep a copy of the base model as the reference"
        )
    modules = [m for m in model.modules() if isinstance(m, TuningModule)]
    was_merged = method == "lora" and unmerge_lora(model) > 0
    previous = [m.disabled for m in modules]
    for module in modules:
        module.disabled = True
    try:
        yield model
    finally:
        for module, state in zip(modules, previous):
            module.disabled = state
        if was_merged:
            merge_lora(model)
