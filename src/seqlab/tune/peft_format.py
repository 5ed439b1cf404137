"""Hugging Face PEFT's LoRA files, read and written for models from
:func:`seqlab.models.from_pretrained_hf` (GPT-2 and BERT).

PEFT saves a LoRA adapter as ``adapter_config.json`` (r, lora_alpha, lora_dropout,
target_modules, use_rslora, modules_to_save, ...) and ``adapter_model.safetensors`` with
``base_model.model.<module>.lora_A.weight`` (r, in) and ``.lora_B.weight`` (out, r) per target
module, plus the full weights of each module in ``modules_to_save`` (a classifier head). The
update of a target is the same B A (alpha / r) as seqlab's; only the module names differ:

================================= =================================== =======================
Hugging Face module               seqlab weight                       note
================================= =================================== =======================
transformer.h.i.attn.c_attn       blocks.layers.i.self_attn           fused q/k/v (Conv1D:
                                  .in_proj_weight                     its weight is stored
                                                                      transposed; A and B
                                                                      are not)
transformer.h.i.attn.c_proj       blocks.layers.i.self_attn.out_proj
transformer.h.i.mlp.c_fc / c_proj blocks.layers.i.linear1 / linear2
bert.encoder.layer.i.attention    encoder.encoder.layers.i.self_attn  one part (q / k / v)
.self.query / key / value         .in_proj_weight : q / k / v         of the fused matrix
...attention.output.dense         ...self_attn.out_proj
...intermediate.dense / .output   ...linear1 / linear2
.dense
bert.pooler.dense, classifier     pooler, head
================================= =================================== =======================

A fused seqlab update on a BERT in_proj_weight is written as three PEFT modules sharing A
(B's rows split by q, k, v), which is the same update.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from seqlab.tune.apply import apply_tuning, tuning_of
from seqlab.tune.base import TuningReport
from seqlab.tune.lora import PARTS, LoraLinear, LoraParametrization, lora_layers

__all__ = ["PEFT_CONFIG", "PEFT_WEIGHTS", "load_peft", "save_peft"]

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."


def _family(model: nn.Module) -> str:
    from seqlab.models import TransformerClassifier, TransformerLM, TransformerMaskedLM

    if isinstance(model, TransformerLM):
        return "gpt2"
    if isinstance(model, TransformerClassifier | TransformerMaskedLM):
        return "bert"
    raise ValueError(
        f"PEFT's format is read and written for GPT-2 (TransformerLM) and BERT "
        f"(TransformerClassifier, TransformerMaskedLM) models from from_pretrained_hf; got "
        f"{type(model).__name__}"
    )


def _module_table(model: nn.Module) -> tuple[dict[str, tuple[str, str | None]], dict[str, str]]:
    """({Hugging Face module: (seqlab weight, part)}, {Hugging Face head module: seqlab head})."""
    table: dict[str, tuple[str, str | None]] = {}
    if _family(model) == "gpt2":
        for i in range(len(model.blocks.layers)):
            ours, theirs = f"blocks.layers.{i}.", f"transformer.h.{i}."
            table[f"{theirs}attn.c_attn"] = (f"{ours}self_attn.in_proj_weight", None)
            table[f"{theirs}attn.c_proj"] = (f"{ours}self_attn.out_proj.weight", None)
            table[f"{theirs}mlp.c_fc"] = (f"{ours}linear1.weight", None)
            table[f"{theirs}mlp.c_proj"] = (f"{ours}linear2.weight", None)
        return table, {}
    for i in range(len(model.encoder.encoder.layers)):
        ours, theirs = f"encoder.encoder.layers.{i}.", f"bert.encoder.layer.{i}."
        for part, name in zip(PARTS, ("query", "key", "value")):
            table[f"{theirs}attention.self.{name}"] = (f"{ours}self_attn.in_proj_weight", part)
        table[f"{theirs}attention.output.dense"] = (f"{ours}self_attn.out_proj.weight", None)
        table[f"{theirs}intermediate.dense"] = (f"{ours}linear1.weight", None)
        table[f"{theirs}output.dense"] = (f"{ours}linear2.weight", None)
    heads = {}
    if getattr(model, "pooler", None) is not None:
        table["bert.pooler.dense"] = ("pooler.weight", None)
        heads["bert.pooler.dense"] = "pooler"
    if hasattr(model, "head"):
        heads["classifier"] = "head"
    return table, heads


def _lora_tensor_name(model: nn.Module, weight: str, part: str | None, matrix: str) -> str:
    """The tuned model's state-dict name of A or B (`matrix`) for a seqlab weight (and part)."""
    owner, _, parameter = weight.rpartition(".")
    module = model.get_submodule(owner)
    if isinstance(module, LoraLinear):
        return f"{owner}.lora_{matrix}"
    suffix = f"_{part}" if part else ""
    return f"{owner}.parametrizations.{parameter}.0.lora_{matrix}{suffix}"


def _check_config(config: dict, path: Path) -> None:
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{str(path)!r}: only LoRA adapters are read, got peft_type="
                         f"{config.get('peft_type')!r}")
    unsupported = {
        "bias": config.get("bias", "none") != "none",
        "use_dora": bool(config.get("use_dora")),
        "rank_pattern": bool(config.get("rank_pattern")),
        "alpha_pattern": bool(config.get("alpha_pattern")),
        "lora_bias": bool(config.get("lora_bias")),
    }
    bad = [key for key, is_bad in unsupported.items() if is_bad]
    if bad:
        raise ValueError(f"{str(path)!r}: LoRA options not supported: "
                         f"{', '.join(f'{k}={config.get(k)!r}' for k in bad)}")


def load_peft(model: nn.Module, adapter_dir: str | Path) -> TuningReport:
    """Apply a LoRA adapter saved by PEFT (``save_pretrained``) to a GPT-2 or BERT model built by
    :func:`seqlab.models.from_pretrained_hf`; the logits then equal PEFT's."""
    from safetensors.torch import load_file

    directory = Path(adapter_dir)
    config_path, weights_path = directory / PEFT_CONFIG, directory / PEFT_WEIGHTS
    for needed in (config_path, weights_path):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed.name} is missing from {str(directory)!r}")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    _check_config(config, config_path)
    table, head_table = _module_table(model)
    tensors = {name.removeprefix(_PREFIX): t for name, t in load_file(str(weights_path)).items()}
    lora_modules, head_tensors = {}, {}
    for name, tensor in tensors.items():
        for matrix in ("A", "B"):
            if name.endswith(f".lora_{matrix}.weight"):
                module = name.removesuffix(f".lora_{matrix}.weight")
                lora_modules.setdefault(module, {})[matrix] = tensor
                break
        else:
            module, _, parameter = name.rpartition(".")
            if module not in head_table:
                raise ValueError(f"{str(weights_path)!r}: tensor {name!r} has no seqlab "
                                 f"counterpart; known heads: {', '.join(head_table) or 'none'}")
            head_tensors[f"{head_table[module]}.{parameter}"] = tensor
    unknown = [module for module in lora_modules if module not in table]
    if unknown:
        raise ValueError(f"{str(weights_path)!r}: LoRA on modules seqlab does not map: "
                         f"{', '.join(unknown)}")
    targets = sorted(
        weight + (f":{part}" if part else "")
        for weight, part in (table[module] for module in lora_modules)
    )
    heads = sorted({name.split(".")[0] for name in head_tensors})
    report = apply_tuning(
        model, "lora", heads=heads, r=int(config["r"]), alpha=float(config["lora_alpha"]),
        dropout=float(config.get("lora_dropout", 0.0)), targets=targets,
        rslora=bool(config.get("use_rslora", False)),
    )
    state = model.state_dict()
    with torch.no_grad():
        for module, pair in lora_modules.items():
            weight, part = table[module]
            for matrix, tensor in pair.items():
                state[_lora_tensor_name(model, weight, part, matrix)].copy_(tensor)
        for name, tensor in head_tensors.items():
            state[name].copy_(tensor)
    return report


def save_peft(model: nn.Module, adapter_dir: str | Path,
              base_model_name_or_path: str | None = None) -> Path:
    """Write a LoRA-tuned GPT-2 or BERT model's adapter in PEFT's format, loadable with
    ``peft.PeftModel.from_pretrained(hf_model, adapter_dir)``."""
    from safetensors.torch import save_file

    tuning = tuning_of(model)
    if tuning is None or tuning["method"] != "lora":
        raise ValueError("save_peft writes LoRA adapters: tune the model with method='lora'")
    family = _family(model)
    table, head_table = _module_table(model)
    reverse = {value: module for module, value in table.items()}
    names = {id(m): n for n, m in model.named_modules()}
    tensors: dict[str, torch.Tensor] = {}
    settings = tuning["settings"]

    def put(module: str, lora_A: torch.Tensor, lora_B: torch.Tensor) -> None:
        tensors[f"{_PREFIX}{module}.lora_A.weight"] = lora_A
        tensors[f"{_PREFIX}{module}.lora_B.weight"] = lora_B

    for layer in lora_layers(model):
        if isinstance(layer, LoraLinear):
            weight = f"{names[id(layer)]}.weight"
            if (weight, None) not in reverse:
                raise ValueError(f"LoRA on {weight!r} has no PEFT counterpart")
            put(reverse[weight, None], layer.lora_A, layer.lora_B)
            continue
        module, parameter, lora = layer
        assert isinstance(lora, LoraParametrization)
        weight = f"{names[id(module)]}.{parameter}"
        if isinstance(module, nn.Embedding):
            raise ValueError(  # noqa: TRY004 (a setting the format cannot hold, not a wrong type)
                f"LoRA on the embedding table {weight!r} is not written in PEFT's "
                "format here: tune without embedding targets to save for PEFT")
        if lora.parts:
            for part in lora.parts:
                if (weight, part) not in reverse:
                    raise ValueError(f"LoRA on part {part} of {weight!r} has no PEFT counterpart "
                                     f"(GPT-2's c_attn takes one update for q, k and v together)")
                put(reverse[weight, part], *lora.pair(part))
        elif (weight, None) in reverse:
            put(reverse[weight, None], lora.lora_A, lora.lora_B)
        else:
            # BERT: one update of [W_q; W_k; W_v] is three with A shared and B split by rows.
            for part, rows in zip(PARTS, lora.lora_B.chunk(len(PARTS))):
                put(reverse[weight, part], lora.lora_A, rows)
    modules_to_save = []
    state = model.state_dict()
    for module, head in head_table.items():
        if head in tuning["heads"]:
            modules_to_save.append(module.split(".")[-2] if module.endswith(".dense") else module)
            for name, tensor in state.items():
                if name.split(".")[0] == head and "lora_" not in name:
                    parameter = name.rpartition(".")[2]
                    tensors[f"{_PREFIX}{module}.{parameter}"] = tensor
    target_modules = sorted({key.removeprefix(_PREFIX).rsplit(".lora_", 1)[0]
                             for key in tensors if ".lora_" in key})
    config = {
        "peft_type": "LORA",
        "task_type": {"gpt2": "CAUSAL_LM"}.get(family, "SEQ_CLS" if hasattr(model, "head")
                                              else None),
        "base_model_name_or_path": base_model_name_or_path,
        "r": settings["r"],
        "lora_alpha": settings["alpha"],
        "lora_dropout": settings["dropout"],
        "use_rslora": settings["rslora"],
        "target_modules": target_modules,
        "modules_to_save": modules_to_save or None,
        "fan_in_fan_out": family == "gpt2",
        "bias": "none",
        "init_lora_weights": True,
        "inference_mode": True,
    }
    directory = Path(adapter_dir)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    save_file(tensors, str(directory / PEFT_WEIGHTS), metadata={"format": "pt"})
    (directory / PEFT_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return directory
