"""Masked language modelling on a bidirectional recurrent encoder (BERT's objective, RNN body)."""

from __future__ import annotations

import torch
from torch import nn

from seqlab.models.outputs import LMOutput
from seqlab.models.pooling import lengths_to_mask
from seqlab.models.recurrent import recurrent_layer
from seqlab.models.registry import register_model
from seqlab.nn.transformer import activation_function

__all__ = ["RecurrentMaskedLM"]


@register_model
class RecurrentMaskedLM(nn.Module):
    r"""Predict masked tokens from a bidirectional recurrent encoder.

    .. math::
        x_t = \mathrm{Drop}(E[w_t]), \qquad
        o_{1..L} = \mathrm{BiRNN}(x_{1..L}), \qquad
        z_t = \mathrm{LN}(\mathrm{act}(W_t\,\mathrm{Drop}(o_t) + b_t)), \qquad
        \mathrm{logits}_t = E\,z_t + b

    The body (``embedding``, ``rnn``) is named and laid out exactly as in
    :class:`~seqlab.models.SequenceClassifier` and :class:`~seqlab.models.SequenceTagger`, so a
    classifier or tagger starts from the pre-trained body with ``model.init_from``. The output
    matrix is the embedding E (tied), so the transform maps H_out to the embedding size. In a
    bidirectional layer the forward direction at step t has read w_1..w_t and the backward one
    w_t..w_L: the masked token itself is seen only as ``<mask>`` (or as the random / kept token of
    BERT's 80/10/10 scheme). The loss lives in :mod:`seqlab.objectives`; this module returns logits
    and hidden states.

    Shapes (N batch, L padded length, E embedding size, V vocabulary):

    ========== ===============================================
    inputs     (N, L) long token ids, some replaced by <mask>
    lengths    (N,) long valid steps (right padding), or None
    logits     (N, L, V); hidden (N, L, H_out)
    ========== ===============================================
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int = 256,
        cell: str = "lstm",
        embedding_dim: int = 256,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = True,
        merge_mode: str = "concat",
        padding_idx: int | None = 0,
        activation: str = "gelu",
        nonlinearity: str = "tanh",
        init: str = "default",
        peephole: bool = False,
        coupled: bool = False,
        reset_after: bool = True,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
        self.dropout = nn.Dropout(dropout)
        self.rnn = recurrent_layer(
            cell, embedding_dim, hidden_size, num_layers=num_layers, dropout=dropout,
            bidirectional=bidirectional, merge_mode=merge_mode, nonlinearity=nonlinearity,
            init=init, peephole=peephole, coupled=coupled, reset_after=reset_after,
        )
        self.transform = nn.Linear(self.rnn.output_size, embedding_dim)
        self.activation = activation_function(activation)
        self.norm = nn.LayerNorm(embedding_dim)
        self.decoder = nn.Linear(embedding_dim, vocab_size)
        self.decoder.weight = self.embedding.weight
        # Tied to normalised vectors of length ~sqrt(E): unit-scale logits at the start.
        nn.init.normal_(self.embedding.weight, std=embedding_dim**-0.5)
        if padding_idx is not None:
            nn.init.zeros_(self.embedding.weight[padding_idx])

    def forward(
        self,
        inputs: torch.Tensor,
        lengths: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> LMOutput:
        """Logits (N, L, V); with ``positions`` ((N, L) bool), (K, V) at its K True places,
        in row-major order (pre-training scores only the chosen tokens)."""
        x = self.dropout(self.embedding(inputs))  # (N, L, E)
        outputs, _ = self.rnn(x, lengths=lengths)  # (N, L, H_out)
        if lengths is not None:
            mask = lengths_to_mask(lengths, inputs.size(1), inputs.size(0), device=x.device)
            outputs = outputs * mask[..., None]  # (N, L, H_out), zero at padding
        scored = outputs if positions is None else outputs[positions]  # (N, L, H_out) or (K, ·)
        z = self.norm(self.activation(self.transform(self.dropout(scored))))  # (·, E)
        return LMOutput(logits=self.decoder(z), hidden=outputs)  # logits (·, V)
