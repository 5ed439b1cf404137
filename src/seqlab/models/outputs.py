"""Small output records returned by the task models."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ClassifierOutput", "LMOutput", "TaggerOutput"]

# A recurrent state: h_n for RNN / GRU, (h_n, c_n) for LSTM, each (num_layers * D, N, H).
RecurrentState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass
class ClassifierOutput:
    """Output of :class:`~seqlab.models.SequenceClassifier`.

    logits: (N, C) class scores, or (N, C) predicted values for a regressor.
    loss: scalar cross-entropy (or mean squared error) when targets were given, else None.
    attentions: a Transformer's attention weights when asked for: one (N, h, L, L) per layer.
    hidden: (N, L, H) the encoder's last-layer outputs (zero at padding for recurrent layers).
    pooled: (N, H) the sentence vector the head reads (a sentence embedding).
    """

    logits: torch.Tensor | None
    loss: torch.Tensor | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    hidden: torch.Tensor | None = None
    pooled: torch.Tensor | None = None


@dataclass
class TaggerOutput:
    """Output of :class:`~seqlab.models.SequenceTagger`.

    logits: (N, L, C) per-step tag scores, or (N, L, output_size) per-step predictions.
    loss: scalar loss averaged over valid (non-padding) steps when targets were given, else None.
    attentions: a Transformer's attention weights when asked for: one (N, h, L, L) per layer.
    hidden: (N, L, H) the encoder's last-layer outputs the head reads.
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    hidden: torch.Tensor | None = None


@dataclass
class LMOutput:
    """Output of :class:`~seqlab.models.LanguageModel`.

    logits: (N, L, V) next-token scores.
    loss: scalar next-token cross-entropy when targets were given, else None.
    state: the recurrent state after the last step, to feed into the next chunk or step; for a
        Transformer, its key/value cache (:class:`seqlab.decode.kv_cache.KVCache`) when one is used.
    attentions: a Transformer's attention weights when asked for: one (N, h, L, S) per layer.
    hidden: (N, L, H) the last layer's outputs the head reads.
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    state: RecurrentState | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    hidden: torch.Tensor | None = None
