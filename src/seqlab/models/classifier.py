"""Many-to-one: classify (or regress on) a whole sequence with a recurrent encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.models.outputs import ClassifierOutput
from seqlab.models.pooling import POOLINGS, lengths_to_mask, merge_final_states, pool_outputs
from seqlab.models.recurrent import input_embedding, recurrent_layer
from seqlab.models.registry import register_model

__all__ = ["SequenceClassifier"]


@register_model
class SequenceClassifier(nn.Module):
    r"""Embed, run a recurrent layer, pool over time, then a linear head.

    .. math::
        x_t = \mathrm{Dropout}(E[w_t]) \quad\text{(or the given features)}, \qquad
        o_{1..T}, h_T = \mathrm{RNN}(x_{1..T}), \qquad
        s = \mathrm{pool}(o, h_T), \qquad
        \mathrm{logits} = W\,\mathrm{Dropout}(s) + b

    with ``pooling`` = ``"last"`` (s = top layer's final state h_T, both directions merged as the
    outputs are when bidirectional), ``"mean"`` or ``"max"`` over the valid steps only, so padding
    does not change the result. The loss is cross-entropy, or mean squared error when
    ``regression=True`` (then ``num_classes`` is the number of predicted values, usually 1).
    This is the sentiment / sequence classification setup of e.g. Tang et al. (2015) and the
    pixel-by-pixel MNIST task of Le et al. (2015, IRNN).

    Exactly one of ``vocab_size`` (inputs are token ids, embedded with ``padding_idx``) and
    ``input_size`` (inputs are float features) must be given. ``dropout`` applies to the
    embeddings, between stacked layers and before the head. The cell options (``nonlinearity``,
    ``init``, ``peephole``, ``coupled``, ``reset_after``) are those of
    :func:`~seqlab.models.recurrent_layer`. ``num_classes=0`` builds no head: the model is a
    sentence encoder, and its output's ``pooled`` (N, H_out) is the sentence vector.

    Shapes (N batch, L padded length, F features, C classes):

    ========== ============================================================
    inputs     (N, L) long token ids, or (N, L, F) float features
    lengths    (N,) long, valid steps per sequence (right padding); None = all L
    targets    (N,) long class ids; regression: (N,) or (N, C) float
    logits     (N, C)
    ========== ============================================================
    """

    def __init__(
        self,
        num_classes: int,
        hidden_size: int,
        cell: str = "lstm",
        vocab_size: int | None = None,
        input_size: int | None = None,
        embedding_dim: int = 128,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        merge_mode: str = "concat",
        pooling: str = "last",
        padding_idx: int | None = 0,
        regression: bool = False,
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
        if pooling not in POOLINGS:
            raise ValueError(
                f"pooling should be one of {', '.join(map(repr, POOLINGS))}, got {pooling!r}"
            )
        if num_classes < 0 or (num_classes == 1 and not regression):
            raise ValueError(
                f"num_classes should be >= 2 for classification, >= 1 with regression=True, or "
                f"0 for no head (a sentence encoder), got num_classes={num_classes!r}, "
                f"regression={regression!r}"
            )
        self.num_classes = num_classes
        self.pooling = pooling
        self.regression = regression
        self.merge_mode = merge_mode
        self.num_directions = 2 if bidirectional else 1

        self.dropout = nn.Dropout(dropout)
        self.rnn = recurrent_layer(
            cell, rnn_input_size, hidden_size, num_layers=num_layers, dropout=dropout,
            bidirectional=bidirectional, merge_mode=merge_mode, nonlinearity=nonlinearity,
            init=init, peephole=peephole, coupled=coupled, reset_after=reset_after,
        )
        # num_classes=0: no head, a sentence encoder whose output is the pooled vector.
        self.head = nn.Linear(self.rnn.output_size, num_classes) if num_classes > 0 else None

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (shared tensors counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def forward(
        self,
        inputs: torch.Tensor,
        lengths: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> ClassifierOutput:
        if self.embedding is not None:
            x = self.dropout(self.embedding(inputs))  # (N, L, E)
        else:
            x = inputs  # (N, L, F)
        batch_size, max_length = x.shape[:2]
        mask = lengths_to_mask(lengths, max_length, batch_size, device=x.device)  # (N, L)

        outputs, state = self.rnn(x, lengths=lengths)  # (N, L, H_out)
        if self.pooling == "last":
            h_n = state[0] if isinstance(state, tuple) else state  # (num_layers * D, N, H)
            features = merge_final_states(h_n, self.num_directions, self.merge_mode)  # (N, H_out)
        else:
            features = pool_outputs(outputs, mask, self.pooling)  # (N, H_out)
        if self.head is None:
            return ClassifierOutput(logits=None, hidden=outputs, pooled=features)
        logits = self.head(self.dropout(features))  # (N, C)

        loss = None
        if targets is not None:
            if self.regression:
                loss = F.mse_loss(logits, targets.to(logits.dtype).reshape(logits.shape))
            else:
                loss = F.cross_entropy(logits, targets)
        return ClassifierOutput(logits=logits, loss=loss, hidden=outputs, pooled=features)
