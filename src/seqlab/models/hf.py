"""Build seqlab Transformers from Hugging Face checkpoints (GPT-2, BERT) on local disk.

A checkpoint directory holds ``config.json`` (the architecture and its sizes) and
``model.safetensors`` (the weights). :func:`from_pretrained_hf` reads both (weights through
``safetensors`` only: no pickle is ever loaded), builds the matching seqlab model and copies each
tensor to its seqlab name. transformers itself is not needed.

========================== ============================ =====================================
architecture               seqlab model                 weights that change form
========================== ============================ =====================================
GPT2LMHeadModel            TransformerLM                Conv1D (in, out) matrices transposed
BertForMaskedLM            TransformerMaskedLM          query / key / value stacked in_proj
BertForSequenceClassification TransformerClassifier     (the same)
========================== ============================ =====================================

Calling the model on ``input_ids`` (N, L) (and ``attention_mask`` (N, L), 1 = real token) gives
the same ``.logits`` as the transformers model, up to float rounding. For fine-tuning, the
model's one dropout rate is the checkpoint's residual / hidden one (``resid_pdrop``,
``hidden_dropout_prob``), also used on the attention weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from seqlab.models.transformer import (
    TransformerClassifier,
    TransformerEncoderModel,
    TransformerLM,
    TransformerMaskedLM,
)

__all__ = ["SUPPORTED_ARCHITECTURES", "from_pretrained_hf"]

GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
                    "relu": "relu"}
BERT_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu"}


def _strip(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Drop a model-class prefix ("transformer.", "bert.") and old LayerNorm names gamma / beta."""
    renamed = {}
    for name, tensor in weights.items():
        name = name.removeprefix(prefix)
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
            "LayerNorm.beta", "LayerNorm.bias"
        )
        renamed[name] = tensor
    return renamed


def _activation(config: dict, key: str, table: dict[str, str]) -> str:
    name = config.get(key, "gelu")
    if name not in table:
        raise ValueError(
            f"{key}={name!r} in config.json is not supported; supported: {', '.join(table)}"
        )
    return table[name]


def _load_into(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A tied output matrix is stored once, under the embedding's name.
    missing = [name for name in missing if name not in ("head.weight", "decoder.weight")]
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not fit the model built from config.json: missing {missing}, "
            f"unexpected {unexpected}"
        )
    return model.eval()


def _gpt2(config: dict, weights: dict[str, torch.Tensor]) -> TransformerLM:
    for flag in (
        "scale_attn_by_inverse_layer_idx",
        "reorder_and_upcast_attn",
        "add_cross_attention",
    ):
        if config.get(flag):
            raise ValueError(f"GPT-2 with {flag}=True is not supported")
    if not config.get("scale_attn_weights", True):
        raise ValueError("GPT-2 with scale_attn_weights=False is not supported")
    d_model, num_layers = config["n_embd"], config["n_layer"]
    tied = config.get("tie_word_embeddings", True)
    model = TransformerLM(
        config["vocab_size"],
        d_model=d_model,
        nhead=config["n_head"],
        num_layers=num_layers,
        dim_feedforward=config.get("n_inner") or 4 * d_model,
        dropout=config.get("resid_pdrop", 0.1),
        activation=_activation(config, "activation_function", GPT2_ACTIVATIONS),
        positional="learned",
        max_length=config["n_positions"],
        layer_norm_eps=config.get("layer_norm_epsilon", 1e-5),
        tie_weights=tied,
    )
    weights = _strip(weights, "transformer.")
    state = {
        "embedding.token.weight": weights["wte.weight"],
        "embedding.position.embedding.weight": weights["wpe.weight"],
        "blocks.norm.weight": weights["ln_f.weight"],
        "blocks.norm.bias": weights["ln_f.bias"],
    }
    if not tied:
        state["head.weight"] = weights["lm_head.weight"]
    for i in range(num_layers):
        old, new = f"h.{i}.", f"blocks.layers.{i}."
        # GPT-2 stores its projections as Conv1D, weight (in, out): nn.Linear wants (out, in).
        pairs = {
            "attn.c_attn": "self_attn.in_proj",  # q, k, v stacked in that order, as in_proj
            "attn.c_proj": "self_attn.out_proj.",
            "mlp.c_fc": "linear1.",
            "mlp.c_proj": "linear2.",
        }
        for theirs, ours in pairs.items():
            separator = "_" if ours.endswith("in_proj") else ""
            state[f"{new}{ours}{separator}weight"] = weights[f"{old}{theirs}.weight"].t()
            state[f"{new}{ours}{separator}bias"] = weights[f"{old}{theirs}.bias"]
        for theirs, ours in (("ln_1", "norm1"), ("ln_2", "norm2")):
            state[f"{new}{ours}.weight"] = weights[f"{old}{theirs}.weight"]
            state[f"{new}{ours}.bias"] = weights[f"{old}{theirs}.bias"]
    return _load_into(model, state)


def _bert_encoder_state(weights: dict[str, torch.Tensor], num_layers: int, prefix: str) -> dict:
    """BERT's embeddings and layers under seqlab names, with `prefix` before each name."""
    state = {
        f"{prefix}embedding.token.weight": weights["embeddings.word_embeddings.weight"],
        f"{prefix}embedding.position.embedding.weight": weights[
            "embeddings.position_embeddings.weight"
        ],
        f"{prefix}embedding.token_type.weight": weights["embeddings.token_type_embeddings.weight"],
        f"{prefix}embedding.norm.weight": weights["embeddings.LayerNorm.weight"],
        f"{prefix}embedding.norm.bias": weights["embeddings.LayerNorm.bias"],
    }
    for i in range(num_layers):
        old, new = f"encoder.layer.{i}.", f"{prefix}encoder.layers.{i}."
        parts = [f"{old}attention.self.{p}" for p in ("query", "key", "value")]
        state[f"{new}self_attn.in_proj_weight"] = torch.cat([weights[f"{p}.weight"] for p in parts])
        state[f"{new}self_attn.in_proj_bias"] = torch.cat([weights[f"{p}.bias"] for p in parts])
        renames = {
            "attention.output.dense": "self_attn.out_proj",
            "attention.output.LayerNorm": "norm1",
            "intermediate.dense": "linear1",
            "output.dense": "linear2",
            "output.LayerNorm": "norm2",
        }
        for theirs, ours in renames.items():
            state[f"{new}{ours}.weight"] = weights[f"{old}{theirs}.weight"]
            state[f"{new}{ours}.bias"] = weights[f"{old}{theirs}.bias"]
    return state


def _bert_encoder(config: dict) -> TransformerEncoderModel:
    position_type = config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(
            f"BERT with position_embedding_type={position_type!r} is not supported; "
            f"supported: 'absolute'"
        )
    return TransformerEncoderModel(
        config["vocab_size"],
        d_model=config["hidden_size"],
        nhead=config["num_attention_heads"],
        num_layers=config["num_hidden_layers"],
        dim_feedforward=config["intermediate_size"],
        dropout=config.get("hidden_dropout_prob", 0.1),
        activation=_activation(config, "hidden_act", BERT_ACTIVATIONS),
        norm_first=False,
        positional="learned",
        max_length=config["max_position_embeddings"],
        type_vocab_size=config.get("type_vocab_size", 2),
        embedding_norm=True,
        layer_norm_eps=config.get("layer_norm_eps", 1e-12),
        padding_idx=config.get("pad_token_id"),
    )


def _bert_masked_lm(config: dict, weights: dict[str, torch.Tensor]) -> TransformerMaskedLM:
    model = TransformerMaskedLM(
        _bert_encoder(config),
        activation=_activation(config, "hidden_act", BERT_ACTIVATIONS),
        layer_norm_eps=config.get("layer_norm_eps", 1e-12),
    )
    weights = _strip(weights, "bert.")
    state = _bert_encoder_state(weights, config["num_hidden_layers"], "encoder.")
    state.update(
        {
            "transform.weight": weights["cls.predictions.transform.dense.weight"],
            "transform.bias": weights["cls.predictions.transform.dense.bias"],
            "norm.weight": weights["cls.predictions.transform.LayerNorm.weight"],
            "norm.bias": weights["cls.predictions.transform.LayerNorm.bias"],
            "decoder.bias": weights.get(
                "cls.predictions.bias", weights.get("cls.predictions.decoder.bias")
            ),
        }
    )
    if not config.get("tie_word_embeddings", True):
        model.decoder.weight = nn.Parameter(weights["cls.predictions.decoder.weight"].clone())
    return _load_into(model, state)


def _bert_classifier(config: dict, weights: dict[str, torch.Tensor]) -> TransformerClassifier:
    if config.get("problem_type") not in (None, "single_label_classification"):
        raise ValueError(
            f"BERT with problem_type={config['problem_type']!r} is not supported; supported: "
            f"'single_label_classification'"
        )
    num_labels = len(config["id2label"]) if "id2label" in config else config.get("num_labels", 2)
    dropout = config.get("classifier_dropout") or config.get("hidden_dropout_prob", 0.1)
    model = TransformerClassifier(_bert_encoder(config), num_labels, pooling="cls", dropout=dropout)
    weights = _strip(weights, "bert.")
    state = _bert_encoder_state(weights, config["num_hidden_layers"], "encoder.")
    state.update(
        {
            "pooler.weight": weights["pooler.dense.weight"],
            "pooler.bias": weights["pooler.dense.bias"],
            "head.weight": weights["classifier.weight"],
            "head.bias": weights["classifier.bias"],
        }
    )
    return _load_into(model, state)


SUPPORTED_ARCHITECTURES: dict[str, Callable[[dict, dict], nn.Module]] = {
    "GPT2LMHeadModel": _gpt2,
    "BertForMaskedLM": _bert_masked_lm,
    "BertForSequenceClassification": _bert_classifier,
}


def from_pretrained_hf(path: str | Path) -> nn.Module:
    """Build the seqlab model of a Hugging Face checkpoint directory, weights loaded, in eval mode.

    Args:
        path: a directory with ``config.json`` and ``model.safetensors`` (as written by
            ``save_pretrained(path, safe_serialization=True)``), of one of
            :data:`SUPPORTED_ARCHITECTURES`.

    Returns:
        :class:`~seqlab.models.TransformerLM` (GPT-2), :class:`~seqlab.models.TransformerMaskedLM`
        or :class:`~seqlab.models.TransformerClassifier` (BERT), in float32 and eval mode.

    Raises:
        FileNotFoundError: the directory or one of the two files is missing.
        ValueError: an unsupported architecture or option (named, with the supported ones).
    """
    from safetensors.torch import load_file

    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {str(directory)!r}")
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    for needed in (config_path, weights_path):
        if not needed.is_file():
            extra = ""
            if needed == weights_path and any(directory.glob("*.bin")):
                extra = (
                    " (only pickle *.bin weights were found: re-save them with "
                    "safe_serialization=True)"
                )
            raise FileNotFoundError(f"{needed.name} is missing from {str(directory)!r}{extra}")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    supported = ", ".join(SUPPORTED_ARCHITECTURES)
    if len(architectures) != 1 or architectures[0] not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"architecture {', '.join(architectures) or '(none given)'} in {str(config_path)!r} "
            f"is not supported; supported architectures: {supported}"
        )
    weights = {name: tensor.float() for name, tensor in load_file(str(weights_path)).items()}
    return SUPPORTED_ARCHITECTURES[architectures[0]](config, weights)
