"""Write a seqlab Transformer as a Hugging Face checkpoint directory: the reverse of
:func:`seqlab.models.from_pretrained_hf`.

========================== ============================== ====================================
seqlab model               architecture                   weights that change form
========================== ============================== ====================================
TransformerLM              GPT2LMHeadModel                nn.Linear (out, in) -> Conv1D (in, out)
TransformerClassifier      BertForSequenceClassification  in_proj split into query / key / value
(BERT layout, "cls")
TransformerMaskedLM        BertForMaskedLM                (the same)
(BERT layout)
========================== ============================== ====================================

"GPT-2 layout" is what :class:`~seqlab.models.TransformerLM` always is (pre-norm blocks, a final
LayerNorm) with learned positions and biases; "BERT layout" is a
:class:`~seqlab.models.TransformerEncoderModel` with ``norm_first=False``, ``embedding_norm=True``
and learned positions (a model imported from BERT, or built so). A model of another layout is
refused with the reason. The directory holds ``config.json``, ``model.safetensors`` (written with
safetensors, no pickle) and, since seqlab's tokenizers are Hugging Face ``tokenizers`` inside,
``tokenizer.json`` + ``tokenizer_config.json`` for ``PreTrainedTokenizerFast``: the same ids.
Dropout rates are written as 0, as the model runs for inference.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from seqlab.export.onnx import ExportError

__all__ = ["export_hf", "save_hf"]

GPT2_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}
BERT_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}


def _first_layer(stack) -> nn.Module:
    return stack.layers[0]


def _activation(layer, table: dict[str, str], architecture: str) -> str:
    name = layer.activation_name
    if name not in table:
        raise ExportError(f"activation {name!r} has no {architecture} name; supported: "
                          f"{', '.join(table)}")
    return table[name]


def _gpt2(model) -> tuple[dict, dict[str, torch.Tensor]]:
    layer = _first_layer(model.blocks)
    embedding = model.embedding
    if embedding.position is None or not hasattr(embedding.position, "embedding"):
        raise ExportError("GPT-2 has learned positions; this model has other positions "
                          "(model.positional must be 'learned')")
    if layer.linear1.bias is None:
        raise ExportError("GPT-2 has biases in every layer; this model was built with bias=False")
    tied = model.head.weight is embedding.token.weight
    d_model = embedding.token.embedding_dim
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": embedding.token.num_embeddings, "n_positions": model.max_length,
        "n_embd": d_model, "n_layer": model.num_layers, "n_head": layer.self_attn.num_heads,
        "n_inner": layer.linear1.out_features,
        "activation_function": _activation(layer, GPT2_ACTIVATIONS, "GPT-2"),
        "layer_norm_epsilon": model.blocks.norm.eps, "tie_word_embeddings": tied,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0,
    }
    prefix = "transformer."
    state = {
        f"{prefix}wte.weight": embedding.token.weight,
        f"{prefix}wpe.weight": embedding.position.embedding.weight,
        f"{prefix}ln_f.weight": model.blocks.norm.weight,
        f"{prefix}ln_f.bias": model.blocks.norm.bias,
    }
    if not tied:
        state["lm_head.weight"] = model.head.weight
    for i, block in enumerate(model.blocks.layers):
        new = f"{prefix}h.{i}."
        # Conv1D stores (in, out): the transpose of nn.Linear's (out, in).
        pairs = {
            "attn.c_attn": (block.self_attn.in_proj_weight, block.self_attn.in_proj_bias),
            "attn.c_proj": (block.self_attn.out_proj.weight, block.self_attn.out_proj.bias),
            "mlp.c_fc": (block.linear1.weight, block.linear1.bias),
            "mlp.c_proj": (block.linear2.weight, block.linear2.bias),
        }
        for name, (weight, bias) in pairs.items():
            state[f"{new}{name}.weight"] = weight.t()
            state[f"{new}{name}.bias"] = bias
        for theirs, ours in (("ln_1", block.norm1), ("ln_2", block.norm2)):
            state[f"{new}{theirs}.weight"] = ours.weight
            state[f"{new}{theirs}.bias"] = ours.bias
    return config, state


def _bert_encoder(encoder) -> tuple[dict, dict[str, torch.Tensor]]:
    """BERT's config keys and ``bert.*`` weights of a BERT-layout TransformerEncoderModel."""
    embedding, layers = encoder.embedding, encoder.encoder.layers
    layer = layers[0]
    reasons = []
    if layer.norm_first:
        reasons.append("its layers are pre-norm (BERT's are post-norm: norm_first=False)")
    if embedding.norm is None:
        reasons.append("its embeddings have no LayerNorm (BERT's do: embedding_norm=True)")
    if embedding.position is None or not hasattr(embedding.position, "embedding"):
        reasons.append("its positions are not learned")
    if embedding.scale != 1.0:
        reasons.append("it scales its embeddings")
    if reasons:
        raise ExportError(f"this encoder is not in BERT's layout: {'; '.join(reasons)}")
    d_model = embedding.token.embedding_dim
    token_types = embedding.token_type.weight if embedding.token_type is not None else \
        torch.zeros(1, d_model)  # BERT always adds a token-type vector: type 0 = zeros
    config = {
        "model_type": "bert", "vocab_size": embedding.token.num_embeddings,
        "hidden_size": d_model, "num_hidden_layers": len(layers),
        "num_attention_heads": layer.self_attn.num_heads,
        "intermediate_size": layer.linear1.out_features,
        "hidden_act": _activation(layer, BERT_ACTIVATIONS, "BERT"),
        "max_position_embeddings": embedding.max_length, "type_vocab_size": token_types.size(0),
        "layer_norm_eps": layer.norm1.eps, "pad_token_id": embedding.token.padding_idx or 0,
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "position_embedding_type": "absolute",
    }
    state = {
        "bert.embeddings.word_embeddings.weight": embedding.token.weight,
        "bert.embeddings.position_embeddings.weight": embedding.position.embedding.weight,
        "bert.embeddings.token_type_embeddings.weight": token_types,
        "bert.embeddings.LayerNorm.weight": embedding.norm.weight,
        "bert.embeddings.LayerNorm.bias": embedding.norm.bias,
    }
    for i, block in enumerate(layers):
        new = f"bert.encoder.layer.{i}."
        weights = block.self_attn.in_proj_weight.chunk(3)  # q, k, v stacked as in_proj
        biases = block.self_attn.in_proj_bias.chunk(3)
        for name, weight, bias in zip(("query", "key", "value"), weights, biases):
            state[f"{new}attention.self.{name}.weight"] = weight
            state[f"{new}attention.self.{name}.bias"] = bias
        renames = {
            "attention.output.dense": block.self_attn.out_proj,
            "attention.output.LayerNorm": block.norm1,
            "intermediate.dense": block.linear1,
            "output.dense": block.linear2,
            "output.LayerNorm": block.norm2,
        }
        for theirs, module in renames.items():
            state[f"{new}{theirs}.weight"] = module.weight
            state[f"{new}{theirs}.bias"] = module.bias
    return config, state


def _bert_classifier(model, labels: list[str] | None) -> tuple[dict, dict[str, torch.Tensor]]:
    if model.pooling != "cls" or model.head is None:
        raise ExportError(f"BertForSequenceClassification pools the first token through a "
                          f"dense + tanh layer; this classifier pools with {model.pooling!r}")
    config, state = _bert_encoder(model.encoder)
    num_labels = model.head.out_features
    labels = labels or [f"LABEL_{i}" for i in range(num_labels)]
    config.update({
        "architectures": ["BertForSequenceClassification"], "num_labels": num_labels,
        "id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)},
        "problem_type": "single_label_classification", "classifier_dropout": 0.0,
    })
    state.update({"bert.pooler.dense.weight": model.pooler.weight,
                  "bert.pooler.dense.bias": model.pooler.bias,
                  "classifier.weight": model.head.weight, "classifier.bias": model.head.bias})
    return config, state


def _bert_masked_lm(model) -> tuple[dict, dict[str, torch.Tensor]]:
    config, state = _bert_encoder(model.encoder)
    tied = model.decoder.weight is model.encoder.embedding.token.weight
    config.update({"architectures": ["BertForMaskedLM"], "tie_word_embeddings": tied})
    state.update({
        "cls.predictions.transform.dense.weight": model.transform.weight,
        "cls.predictions.transform.dense.bias": model.transform.bias,
        "cls.predictions.transform.LayerNorm.weight": model.norm.weight,
        "cls.predictions.transform.LayerNorm.bias": model.norm.bias,
        "cls.predictions.bias": model.decoder.bias,
    })
    if not tied:
        state["cls.predictions.decoder.weight"] = model.decoder.weight
    return config, state


def _save_tokenizer(tokenizer, out_dir: Path) -> None:
    """The tokenizer's Hugging Face backend, loadable as ``PreTrainedTokenizerFast``."""
    (out_dir / "tokenizer.json").write_text(tokenizer.backend.to_str(), encoding="utf-8")
    names = {"pad_token": 0, "unk_token": 1, "bos_token": 2, "eos_token": 3, "mask_token": 4}
    settings = {role: tokenizer.id_to_token(index) for role, index in names.items()}
    settings.update({"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1 << 30,
                     "clean_up_tokenization_spaces": False})
    (out_dir / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n",
                                                   encoding="utf-8")


def save_hf(model: nn.Module, out_dir: str | Path, tokenizer=None,
            labels: list[str] | None = None) -> str:
    """Write `model` as a Hugging Face checkpoint directory; returns its architecture name."""
    from safetensors.torch import save_file

    from seqlab.models import TransformerClassifier, TransformerLM, TransformerMaskedLM

    if isinstance(model, TransformerLM):
        config, state = _gpt2(model)
    elif isinstance(model, TransformerClassifier):
        config, state = _bert_classifier(model, labels)
    elif isinstance(model, TransformerMaskedLM):
        config, state = _bert_masked_lm(model)
    else:
        raise ExportError(
            f"{type(model).__name__} has no Hugging Face layout; --format hf writes Transformer "
            "language models (GPT-2) and BERT-layout encoders (use --format onnx for the others)"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().float().contiguous().clone() for name, t in state.items()}
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if tokenizer is not None:
        _save_tokenizer(tokenizer, out_dir)
    return config["architectures"][0]


def _difference(model: nn.Module, out_dir: Path) -> float | None:
    """Largest |transformers logits − seqlab logits| on a padded batch; None without transformers."""
    try:
        import transformers
    except ImportError:
        return None
    transformers.utils.logging.disable_progress_bar()
    config = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    theirs = getattr(transformers, config["architectures"][0]).from_pretrained(out_dir).eval()
    vocab = config["vocab_size"]
    ids = torch.randint(5, vocab, (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    with torch.no_grad():
        if config["model_type"] == "gpt2":
            ours, got = model(ids).logits, theirs(input_ids=ids).logits
            return float((ours - got).abs().max())
        ours = model(ids, attention_mask=mask).logits
        got = theirs(input_ids=ids, attention_mask=mask).logits
    if ours.dim() == 3:  # per-token logits: compare the real tokens only
        return float((ours - got).abs()[mask.bool()].max())
    return float((ours - got).abs().max())


def export_hf(run_dir: str | Path, out_dir: str | Path) -> dict:
    """Export a run's Transformer to a Hugging Face directory; returns what was written and
    the largest logit difference from seqlab measured through transformers (when installed)."""
    from seqlab.export.onnx import refuse_tuned_run
    from seqlab.train.run import open_run

    out_dir = Path(out_dir)
    refuse_tuned_run(Path(run_dir))
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "config.json").is_file():
        raise ExportError(f"{out_dir} exists and is not a Hugging Face directory; pick an empty --out")
    _, task, model, _ = open_run(run_dir, ["trainer.device=cpu"])
    model = model.float().eval()
    tokenizer = getattr(task, "tokenizer", None)
    labels_vocab = getattr(task, "labels", None)
    labels = [labels_vocab.decode(i) for i in range(len(labels_vocab))] if labels_vocab else None
    architecture = save_hf(model, out_dir, tokenizer, labels)
    return {"architecture": architecture,
            "tokenizer": "tokenizer.json" if tokenizer is not None else None,
            "max_abs_difference": _difference(model, out_dir)}
