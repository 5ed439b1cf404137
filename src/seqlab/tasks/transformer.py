"""Transformer models for the language-model, classification and translation tasks.

The data, metrics and predictions are those of `lm`, `classify` and `translate`; only the model
differs: a GPT-style decoder (:class:`~seqlab.models.TransformerLM`), a Transformer encoder with a
pooled head (:class:`~seqlab.models.TransformerClassifier`) and the encoder-decoder of Vaswani et
al. (:class:`~seqlab.models.TransformerSeq2Seq`), configured by the `model.*` keys below.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from seqlab.schema import StrictModel
from seqlab.tasks import register_task
from seqlab.tasks.base import shard_batches
from seqlab.tasks.classify import ClassifyTask
from seqlab.tasks.language_model import LanguageModelTask
from seqlab.tasks.translate import TranslateTask

__all__ = ["TransformerClassifyTask", "TransformerLMTask", "TransformerTranslateTask"]


class TransformerModel(StrictModel):
    """The sizes every Transformer task shares (`model.*` keys)."""

    d_model: int = Field(128, ge=1)
    nhead: int = Field(4, ge=1)
    num_layers: int = Field(4, ge=1)
    dim_feedforward: int | None = Field(None, ge=1)
    dropout: float = Field(0.1, ge=0, le=1)
    activation: Literal["relu", "gelu", "gelu_tanh"] = "gelu"
    positional: Literal["learned", "sinusoidal", "rotary"] = "learned"
    max_length: int = Field(512, ge=1)


class GPTModel(TransformerModel):
    activation: Literal["relu", "gelu", "gelu_tanh"] = "gelu_tanh"
    tie_weights: bool = True
    # False drops the biases of every linear layer and layer norm (as in nanoGPT's default).
    bias: bool = True


class EncoderClassifierModel(TransformerModel):
    norm_first: bool = True
    pooling: Literal["cls", "mean", "last"] = "mean"
    # BERT's layout (set by model.init_from=HF_DIR): token types, a LayerNorm on the embeddings.
    type_vocab_size: int = Field(0, ge=0)
    embedding_norm: bool = False
    layer_norm_eps: float = Field(1e-5, gt=0)


class TranslateTransformerModel(TransformerModel):
    num_layers: int = Field(3, ge=1)
    num_decoder_layers: int | None = Field(None, ge=1)
    activation: Literal["relu", "gelu", "gelu_tanh"] = "relu"
    positional: Literal["learned", "sinusoidal", "rotary"] = "sinusoidal"
    norm_first: bool = True
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    max_source_length: int | None = Field(None, ge=1)


@register_task
class TransformerLMTask(LanguageModelTask):
    """The `lm` task with a GPT; training reads shuffled blocks instead of carried rows.

    A Transformer carries no state from one batch to the next, so nothing needs the rows of
    the recurrent layout. Each epoch the training stream is cut into blocks of `data.bptt` + 1
    tokens (the inputs and their next tokens) from a seeded offset, and the blocks are shuffled
    by (seed, epoch): every step sees `batch_size` blocks from all over the text, and every
    token is read once per epoch. Consecutive batches are then independent, which optimises
    better than walking the same rows forward. Evaluation is the `lm` task's.
    """

    name = "lm-transformer"
    summary = "decoder-only Transformer language model (GPT layout) on plain text"
    ModelConfig = GPTModel

    def train_batches(self, epoch, batch_size, rank=0, world_size=1):
        bptt = self.data.bptt
        stream = self.streams["train"]
        rng = np.random.default_rng([self.seed, epoch])
        offset = int(rng.integers(0, bptt)) if stream.numel() > 3 * bptt else 0
        starts = np.arange(offset, stream.numel() - bptt, bptt)  # each has bptt + 1 tokens
        if starts.size == 0:
            starts = np.array([0])  # a text shorter than one block: the block is all of it
        starts = starts[rng.permutation(starts.size)].tolist()
        batches = [starts[i:i + batch_size] for i in range(0, len(starts), batch_size)]
        return shard_batches(batches, rank, world_size)

    def collate(self, key):
        stream = self.streams["train"]
        length = min(self.data.bptt, stream.numel() - 1)
        index = torch.tensor(key)[:, None] + torch.arange(length + 1)  # (B, bptt + 1)
        blocks = stream[index]
        return {"inputs": blocks[:, :-1], "targets": blocks[:, 1:]}

    def build_model(self) -> torch.nn.Module:
        from seqlab.models import TransformerLM

        m = self.model_config
        if m.max_length < self.data.bptt:
            raise ValueError(
                f"model.max_length={m.max_length} must be at least data.bptt={self.data.bptt}"
            )
        if m.max_length > self.data.bptt:
            # Training never reads positions past bptt; generation would, once the text grows.
            warnings.warn(
                f"model.max_length={m.max_length} is more than data.bptt={self.data.bptt}: positions "
                f"{self.data.bptt}..{m.max_length - 1} are never trained, and text generated past "
                f"{self.data.bptt} tokens reads them; set model.max_length={self.data.bptt}",
                UserWarning, stacklevel=2,
            )
        return TransformerLM(
            self.tokenizer.vocab_size, d_model=m.d_model, nhead=m.nhead, num_layers=m.num_layers,
            dim_feedforward=m.dim_feedforward, dropout=m.dropout, activation=m.activation,
            positional=m.positional, max_length=m.max_length, tie_weights=m.tie_weights,
            bias=m.bias,
        )


@register_task
class TransformerClassifyTask(ClassifyTask):
    name = "classify-transformer"
    summary = "text classification with a Transformer encoder"
    ModelConfig = EncoderClassifierModel

    def build_model(self) -> torch.nn.Module:
        from seqlab.models import TransformerClassifier, TransformerEncoderModel

        m = self.model_config
        if self.data.max_length is None or self.data.max_length > m.max_length:
            raise ValueError(
                f"data.max_length={self.data.max_length} must be set and at most "
                f"model.max_length={m.max_length} (the positions the encoder has)"
            )
        encoder = TransformerEncoderModel(
            self.tokenizer.vocab_size, d_model=m.d_model, nhead=m.nhead, num_layers=m.num_layers,
            dim_feedforward=m.dim_feedforward, dropout=m.dropout, activation=m.activation,
            norm_first=m.norm_first, positional=m.positional, max_length=m.max_length,
            type_vocab_size=m.type_vocab_size, embedding_norm=m.embedding_norm,
            layer_norm_eps=m.layer_norm_eps, padding_idx=self.tokenizer.pad_id,
        )
        return TransformerClassifier(encoder, len(self.labels), pooling=m.pooling, dropout=m.dropout)


@register_task
class TransformerTranslateTask(TranslateTask):
    name = "translate-transformer"
    summary = "sequence to sequence with a Transformer encoder-decoder"
    ModelConfig = TranslateTransformerModel

    def build_model(self) -> torch.nn.Module:
        from seqlab.models import TransformerSeq2Seq

        m = self.model_config
        joint = self.source_tokenizer is self.tokenizer  # one vocabulary: share the embeddings
        return TransformerSeq2Seq(
            self.source_tokenizer.vocab_size, self.tokenizer.vocab_size, d_model=m.d_model, nhead=m.nhead, num_encoder_layers=m.num_layers,
            num_decoder_layers=m.num_decoder_layers or m.num_layers,
            dim_feedforward=m.dim_feedforward, dropout=m.dropout, activation=m.activation,
            norm_first=m.norm_first, positional=m.positional, max_length=m.max_length,
            share_embeddings=joint, label_smoothing=m.label_smoothing,
            pad_id=self.tokenizer.pad_id,
        )
