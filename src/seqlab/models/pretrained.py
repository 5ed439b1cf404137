"""Start a model from pre-trained weights: a seqlab run directory or a Hugging Face directory.

:func:`read_pretrained` reads what a new run needs from the source — its tensors under seqlab's
names, its architecture as `model.*` config keys, and where its tokenizer is — and
:func:`load_matching` copies every tensor whose name and shape match into the new model, and
says which were loaded, which are new (a task head the source lacks), which were left out (the
source's own head) and which heads start afresh because their shape differs (another number
of classes). A body tensor whose shape differs is an error naming the key and both shapes.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

__all__ = [
    "ARCHITECTURE_KEYS",
    "LoadReport",
    "PretrainedSource",
    "freeze_parameters",
    "load_matching",
    "read_pretrained",
]

# Model config keys that decide the shapes or the function of the weights.
ARCHITECTURE_KEYS = (
    # Transformer
    "d_model", "nhead", "num_layers", "dim_feedforward", "activation", "positional",
    "max_length", "norm_first", "bias", "type_vocab_size", "embedding_norm", "layer_norm_eps",
    # recurrent
    "cell", "hidden_size", "embedding_dim", "bidirectional", "merge_mode", "nonlinearity",
    "init", "peephole", "coupled", "reset_after",
)

_BERT_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh",
                     "gelu_pytorch_tanh": "gelu_tanh"}


@dataclass
class PretrainedSource:
    """What a run takes from `model.init_from`.

    state: tensors under seqlab's names. architecture: flat `model.*` keys and values.
    family: "transformer" or "recurrent". tokenizer_file: the tokenizer to use, if any.
    kind: "run" (a seqlab run directory) or "hf" (a Hugging Face checkpoint directory).
    """

    path: Path
    kind: str
    state: dict[str, torch.Tensor]
    architecture: dict
    family: str
    tokenizer_file: Path | None


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)

    def lines(self, source: Path | str) -> list[str]:
        def names(items: list[str]) -> str:
            shown = ", ".join(items[:8])
            return shown + (f", ... ({len(items) - 8} more)" if len(items) > 8 else "")

        lines = [f"init_from {source}: {len(self.loaded)} tensors loaded"]
        if self.new:
            lines.append(f"  new (trained from scratch): {names(self.new)}")
        if self.reinitialised:
            lines.append(f"  new, shape differs from the pre-trained head: "
                         f"{names(self.reinitialised)}")
        if self.unused:
            lines.append(f"  left out (not in this model): {names(self.unused)}")
        return lines

    def to_dict(self) -> dict:
        return {"loaded": self.loaded, "new": self.new, "reinitialised": self.reinitialised,
                "unused": self.unused}


def _family_of(model_section: dict) -> str:
    return "transformer" if "d_model" in model_section else "recurrent"


def _read_run(path: Path) -> PretrainedSource:
    from seqlab.models.registry import read_weights

    config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
    model = dict(config.get("model") or {})
    family = model.get("family")
    if family in ("transformer", "recurrent") and isinstance(model.get(family), dict):
        architecture = dict(model[family])
    else:
        architecture = {k: v for k, v in model.items() if not isinstance(v, dict)}
        family = _family_of(architecture)
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise ValueError(f"model.init_from={path}: the run has no model.safetensors (it did not "
                         f"get to its first evaluation)")
    state, _ = read_weights(weights)
    tokenizer = path / "tokenizer.json"
    return PretrainedSource(path, "run", state, architecture, family,
                            tokenizer if tokenizer.is_file() else None)


def _read_hf(path: Path) -> PretrainedSource:
    from safetensors.torch import load_file

    from seqlab.models.hf import _bert_encoder_state, _strip, from_pretrained_hf

    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    kind = config.get("model_type")
    tokenizer = path / "tokenizer.json"
    tokenizer = tokenizer if tokenizer.is_file() else None
    if kind == "bert":
        weights_path = path / "model.safetensors"
        if not weights_path.is_file():
            raise ValueError(f"model.init_from={path}: no model.safetensors (seqlab reads no "
                             f"pickled *.bin weights; re-save with safe_serialization=True)")
        weights = _strip({k: v.float() for k, v in load_file(str(weights_path)).items()}, "bert.")
        layers = config["num_hidden_layers"]
        state = _bert_encoder_state(weights, layers, "encoder.")
        if "pooler.dense.weight" in weights:
            state["pooler.weight"] = weights["pooler.dense.weight"]
            state["pooler.bias"] = weights["pooler.dense.bias"]
        activation = config.get("hidden_act", "gelu")
        if activation not in _BERT_ACTIVATIONS:
            raise ValueError(f"model.init_from={path}: BERT activation {activation!r} is not "
                             f"supported ({', '.join(_BERT_ACTIVATIONS)})")
        architecture = {
            "d_model": config["hidden_size"], "nhead": config["num_attention_heads"],
            "num_layers": layers, "dim_feedforward": config["intermediate_size"],
            "activation": _BERT_ACTIVATIONS[activation], "positional": "learned",
            "max_length": config["max_position_embeddings"], "norm_first": False,
            "type_vocab_size": config.get("type_vocab_size", 2), "embedding_norm": True,
            "layer_norm_eps": config.get("layer_norm_eps", 1e-12),
        }
        return PretrainedSource(path, "hf", state, architecture, "transformer", tokenizer)
    if kind == "gpt2":
        model = from_pretrained_hf(path)
        architecture = {
            "d_model": config["n_embd"], "nhead": config["n_head"], "num_layers": config["n_layer"],
            "dim_feedforward": config.get("n_inner") or 4 * config["n_embd"],
            "activation": "gelu_tanh", "positional": "learned",
            "max_length": config["n_positions"], "bias": True,
        }
        return PretrainedSource(path, "hf", dict(model.state_dict()), architecture,
                                "transformer", tokenizer)
    raise ValueError(f"model.init_from={path}: Hugging Face model_type {kind!r} is not supported "
                     f"(supported: bert, gpt2)")


def read_pretrained(path: str | Path) -> PretrainedSource:
    """The tensors, architecture and tokenizer of a seqlab run or a Hugging Face directory."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"model.init_from={path}: no such directory; give a seqlab run "
                         f"directory or a Hugging Face checkpoint directory")
    if (path / "config.yaml").is_file():
        return _read_run(path)
    if (path / "config.json").is_file():
        return _read_hf(path)
    raise ValueError(f"model.init_from={path}: neither a seqlab run directory (config.yaml) nor a "
                     f"Hugging Face directory (config.json)")


def load_matching(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    head_modules: tuple[str, ...] = ("head",),
    source: str | Path = "the pre-trained model",
) -> LoadReport:
    """Copy the tensors of `state` whose names and shapes match into `model` (in place).

    A tensor under one of `head_modules` (top-level module names) whose shape differs starts
    afresh; any other shape difference raises ValueError naming the key and both shapes. No
    tensor in common raises ValueError (the source is another kind of model).
    """
    report = LoadReport()
    own = model.state_dict()
    # A bare Transformer encoder (an HF encoder, a seqlab encoder body) under the `encoder.` name
    # that seqlab's heads give it.
    if not set(state) & set(own) and any(k.startswith("encoder.") for k in own):
        state = {f"encoder.{k}": v for k, v in state.items()}
    updates = {}
    for name, tensor in own.items():
        if name not in state:
            report.new.append(name)
            continue
        theirs = state[name]
        if theirs.shape != tensor.shape:
            if name.split(".")[0] in head_modules:
                report.reinitialised.append(name)
                continue
            raise ValueError(
                f"model.init_from={source}: {name} has shape {tuple(theirs.shape)} in the "
                f"pre-trained model but {tuple(tensor.shape)} here; the architectures differ "
                f"(hidden size, vocabulary or number of layers)"
            )
        updates[name] = theirs.to(dtype=tensor.dtype)
        report.loaded.append(name)
    report.unused = sorted(set(state) - set(own))
    if not report.loaded:
        raise ValueError(
            f"model.init_from={source}: no tensor of the pre-trained model fits this one (its "
            f"names start {sorted(state)[:3]}, this model's {sorted(own)[:3]}); pick a recipe of "
            f"the same model family"
        )
    with torch.no_grad():
        for name, value in updates.items():
            own[name].copy_(value)
    return report


def _first_names(names: list[str], shown: int = 12) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def freeze_parameters(
    model: nn.Module, patterns: list[str], head_modules: tuple[str, ...] = ("head",)
) -> list[str]:
    """Stop gradients for the parameters whose names match a glob pattern; the pattern `body`
    means every parameter outside the head. Returns the frozen names; a pattern that matches
    nothing raises ValueError listing the names that exist."""
    names = [name for name, _ in model.named_parameters()]
    frozen = set()
    for pattern in patterns:
        if pattern == "body":
            matched = [n for n in names if n.split(".")[0] not in head_modules]
        else:
            matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise ValueError(f"trainer.freeze pattern {pattern!r} matches no parameter; "
                             f"the parameters are: {_first_names(names)}")
        frozen.update(matched)
    if len(frozen) == len(names):
        heads = [n for n in names if n.split(".")[0] in head_modules]
        why = ("its head has no weights of its own (an output layer tied to the token embedding "
               "is named after the embedding)" if "body" in patterns and not heads else
               "every parameter matches")
        raise ValueError(f"trainer.freeze={','.join(patterns)} leaves nothing to train: {why}; "
                         f"name the parameters to freeze by pattern instead; they are: "
                         f"{_first_names(names)}")
    for name, parameter in model.named_parameters():
        if name in frozen:
            parameter.requires_grad_(False)
    return sorted(frozen)
