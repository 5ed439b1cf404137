"""Many-to-many, aligned: one prediction per input step (tagging, or forecasting as regression)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.models.outputs import TaggerOutput
from seqlab.models.pooling import lengths_to_mask
from seqlab.models.recurrent import input_embedding, recurrent_layer
from seqlab.models.registry import register_model

__all__ = ["SequenceTagger"]


@register_model
class SequenceTagger(nn.Module):
    r"""Embed, run a (usually bidirectional) recurrent layer, then a linear head at every step.

    .. math::
        x_t = \mathrm{Dropout}(E[w_t]) \quad\text{(or the given features)}, \qquad
        o_{1..T} = \mathrm{RNN}(x_{1..T}), \qquad
        y_t = W\,\mathrm{Dropout}(o_t) + b

    Tagging (part of speech, named entities; the BiLSTM tagger of Huang et al., 2015, without
    the CRF) uses cross-entropy averaged over the valid steps:
    :math:`\mathcal{L} = -\frac{1}{\sum_i T_i}\sum_i \sum_{t \le T_i} \log p(c_{i,t} \mid x_i)`.
    With ``regression=True`` the head predicts ``output_size`` values per step (forecasting; use
    ``bidirectional=False`` so a step sees only the past) and the loss is the mean squared
    error over valid steps and output values. Steps past ``lengths`` never count, and target
    tags equal to -100 are ignored as in torch's cross-entropy.

    Exactly one of ``vocab_size`` (token ids) and ``input_size`` (float features) must be
    given. ``output_size`` is only for regression and defaults to ``num_tags``. The cell
    options are those of :func:`~seqlab.models.recurrent_layer`.

    Shapes (N batch, L padded length, F features, C tags, O = output_size):

    ========== ============================================================
    inputs     (N, L) long token ids, or (N, L, F) float features
    lengths    (N,) long, valid steps per sequence (right padding); None = all L
    targets    (N, L) long tags; regression: (N, L, O) float, or (N, L) when O = 1
    logits     (N, L, C); regression: (N, L, O)
    ========== ============================================================
    """

    def __init__(
        self,
        num_tags: int,
        hidden_size: int,
        cell: str = "lstm",
        vocab_size: int | None = None,
        input_size: int | None = None,
        embedding_dim: int = 128,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        merge_mode: str = "concat",
        padding_idx: int | None = 0,
        regression: bool = False,
        output_size: int | None = None,
        nonlinearity: str = "tanh",
        init: str = "default",
        peephole: bool = False,
        coupled: bool = False,
        reset_after: bool = True,
    ) -> None:
        super().__init__()
        self.embedding, rnn_input_size = input_embedding(
            vocab_size, input_size, embedding_dim, padding_idx
        )
        if output_size is not None and not regression:
            raise ValueError(
                f"output_size is only used with regression=True, got output_size={output_size!r}"
                " with regression=False (the number of tags is num_tags)"
            )
        self.regression = regression
        self.output_size = (output_size or num_tags) if regression else num_tags
        if self.output_size < 1:
            raise ValueError(f"the number of outputs per step should be >= 1, got {self.output_size}")

        self.dropout = nn.Dropout(dropout)
        self.rnn = recurrent_layer(
            cell, rnn_input_size, hidden_size, num_layers=num_layers, dropout=dropout,
            bidirectional=bidirectional, merge_mode=merge_mode, nonlinearity=nonlinearity,
            init=init, peephole=peephole, coupled=coupled, reset_after=reset_after,
        )
        self.head = nn.Linear(self.rnn.output_size, self.output_size)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (shared tensors counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def forward(
        self,
        inputs: torch.Tensor,
        lengths: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> TaggerOutput:
        if self.embedding is not None:
            x = self.dropout(self.embedding(inputs))  # (N, L, E)
        else:
            x = inputs  # (N, L, F)
        batch_size, max_length = x.shape[:2]
        mask = lengths_to_mask(lengths, max_length, batch_size, device=x.device)  # (N, L)

        outputs, _ = self.rnn(x, lengths=lengths)  # (N, L, H_out)
        logits = self.head(self.dropout(outputs))  # (N, L, C) or (N, L, O)

        loss = None
        if targets is not None:
            if self.regression:
                targets = targets.to(logits.dtype).reshape(logits.shape)  # (N, L, O)
                # Select the valid steps (rather than zeroing the rest) so padding values, even
                # NaN, never reach the loss or its gradient.
                loss = F.mse_loss(logits[mask], targets[mask])  # over (K, O), K valid steps
            else:
                # Padding steps get torch's ignore index, so the mean runs over valid steps only.
                targets = targets.masked_fill(~mask, -100)  # (N, L)
                loss = F.cross_entropy(
                    logits.reshape(-1, logits.size(-1)),  # (N * L, C)
                    targets.reshape(-1),  # (N * L,)
                    ignore_index=-100,
                )
        return TaggerOutput(logits=logits, loss=loss, hidden=outputs)
