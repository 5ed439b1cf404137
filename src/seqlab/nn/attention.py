"""Attention for encoder-decoder models: additive (Bahdanau) and dot / general (Luong).

Every module scores one query against a set of keys, turns the scores into weights with a
softmax over the valid positions only, and returns the weighted sum of the values:

    e_s = score(q, k_s)                         for s = 1 .. S
    a_s = exp(e_s) / sum_{s' valid} exp(e_s')   (a_s = 0 exactly where mask_s is False)
    c   = sum_s a_s v_s

Shapes (symbols used in every docstring of this file):

    N   batch size
    T   number of queries per batch row (optional: a query may be (N, Hq) or (N, T, Hq))
    S   number of keys (source length)
    Hq  query size, Hk key size, Hv value size, A attention size (additive only)

    query   (N, Hq) or (N, T, Hq)
    keys    (N, S, Hk)
    values  (N, S, Hv)
    mask    (N, S) bool, True where the key is a real position, False where it is padding
    context (N, Hv) or (N, T, Hv)
    weights (N, S)  or (N, T, S)

`project_keys(keys)` exposes the part of the score that depends on the keys alone, so a decoder
can compute it once per source sentence and pass it back as `projected_keys` at every step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["AdditiveAttention", "DotAttention", "GeneralAttention", "masked_softmax"]


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last dimension that gives exactly zero weight where `mask` is False.

    scores (N, T, S), mask (N, S) bool or None -> weights (N, T, S). A row with no valid
    position gets all-zero weights instead of NaN.
    """
    if mask is None:
        return torch.softmax(scores, dim=-1)
    valid = mask.unsqueeze(1)  # (N, 1, S), broadcast over the queries
    weights = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=-1)
    # exp(-inf) is already 0 for padding; this only zeroes the NaN rows of fully masked inputs.
    return weights.masked_fill(~valid, 0.0)


def _as_queries(query: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """View a (N, Hq) query as (N, 1, Hq) so every module works on (N, T, Hq)."""
    if query.dim() == 2:
        return query.unsqueeze(1), True  # (N, 1, Hq)
    if query.dim() == 3:
        return query, False
    raise ValueError(f"query must be (N, Hq) or (N, T, Hq), got shape {tuple(query.shape)}")


def _attend(
    scores: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None, squeeze: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights from scores (N, T, S) and the context they give over values (N, S, Hv)."""
    weights = masked_softmax(scores, mask)  # (N, T, S)
    context = torch.bmm(weights, values)  # (N, T, Hv)
    if squeeze:
        return context.squeeze(1), weights.squeeze(1)  # (N, Hv), (N, S)
    return context, weights


class AdditiveAttention(nn.Module):
    r"""Additive attention (Bahdanau, Cho & Bengio 2015, "Neural Machine Translation by Jointly
    Learning to Align and Translate", eq. 6 and appendix A.1.2):

        score(q, k_s) = v^T tanh(W_q q + W_k k_s)

    with W_q (A, Hq), W_k (A, Hk) and v (A,), all without bias as in the paper.

    Args:
        query_size: Hq, the size of the decoder state that asks.
        key_size: Hk, the size of each encoder annotation.
        attention_size: A, the width of the hidden layer of the scoring network.

    Shapes: query (N, Hq) or (N, T, Hq); keys (N, S, Hk); values (N, S, Hv); mask (N, S) bool
    (True = valid) -> context (N, Hv) / (N, T, Hv), weights (N, S) / (N, T, S).
    """

    def __init__(self, query_size: int, key_size: int, attention_size: int) -> None:
        super().__init__()
        for name, value in (
            ("query_size", query_size),
            ("key_size", key_size),
            ("attention_size", attention_size),
        ):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        self.query_size = query_size
        self.key_size = key_size
        self.attention_size = attention_size
        self.query_proj = nn.Linear(query_size, attention_size, bias=False)  # W_q
        self.key_proj = nn.Linear(key_size, attention_size, bias=False)  # W_k
        self.v = nn.Parameter(torch.empty(attention_size))
        bound = 1.0 / math.sqrt(attention_size)
        nn.init.uniform_(self.v, -bound, bound)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """W_k k_s for every key: (N, S, Hk) -> (N, S, A). Independent of the query."""
        return self.key_proj(keys)

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor | None = None,
        projected_keys: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        queries, squeeze = _as_queries(query)  # (N, T, Hq)
        if projected_keys is None:
            projected_keys = self.project_keys(keys)  # (N, S, A)
        hidden = torch.tanh(
            self.query_proj(queries).unsqueeze(2) + projected_keys.unsqueeze(1)
        )  # (N, T, 1, A) + (N, 1, S, A) -> (N, T, S, A)
        scores = hidden @ self.v  # (N, T, S)
        return _attend(scores, values, mask, squeeze)

    def extra_repr(self) -> str:
        return (
            f"query_size={self.query_size}, key_size={self.key_size}, "
            f"attention_size={self.attention_size}"
        )


class DotAttention(nn.Module):
    r"""Dot-product attention (Luong, Pham & Manning 2015, "Effective Approaches to
    Attention-based Neural Machine Translation", eq. 8, "dot"):

        score(q, k_s) = q^T k_s

    No parameters; the query and key sizes must be equal (Hq = Hk). No 1/sqrt(H) scaling: that is
    the Transformer's scaled dot-product attention, not Luong's.

    Shapes: query (N, Hq) or (N, T, Hq); keys (N, S, Hk); values (N, S, Hv); mask (N, S) bool
    (True = valid) -> context (N, Hv) / (N, T, Hv), weights (N, S) / (N, T, S).
    """

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """The keys as they are: (N, S, Hk)."""
        return keys

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor | None = None,
        projected_keys: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        queries, squeeze = _as_queries(query)  # (N, T, Hq)
        if queries.size(-1) != keys.size(-1):
            raise ValueError(
                f"dot attention needs query size == key size, got {queries.size(-1)} and "
                f"{keys.size(-1)}; use GeneralAttention or AdditiveAttention for different sizes"
            )
        scores = torch.bmm(queries, keys.transpose(1, 2))  # (N, T, Hq) @ (N, Hk, S) -> (N, T, S)
        return _attend(scores, values, mask, squeeze)


class GeneralAttention(nn.Module):
    r"""Bilinear ("general") attention (Luong, Pham & Manning 2015, eq. 8, "general"):

        score(q, k_s) = q^T W k_s

    with `weight` W of shape (Hq, Hk), no bias. The query side is projected (q^T W, size Hk)
    because there is one query per step and S keys.

    Args:
        query_size: Hq, the size of the decoder state.
        key_size: Hk, the size of each encoder annotation.

    Shapes: query (N, Hq) or (N, T, Hq); keys (N, S, Hk); values (N, S, Hv); mask (N, S) bool
    (True = valid) -> context (N, Hv) / (N, T, Hv), weights (N, S) / (N, T, S).
    """

    def __init__(self, query_size: int, key_size: int) -> None:
        super().__init__()
        for name, value in (("query_size", query_size), ("key_size", key_size)):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        self.query_size = query_size
        self.key_size = key_size
        self.weight = nn.Parameter(torch.empty(query_size, key_size))
        # Same scale as nn.Linear(key_size, query_size) would use.
        bound = 1.0 / math.sqrt(key_size)
        nn.init.uniform_(self.weight, -bound, bound)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """The keys as they are: (N, S, Hk); W is applied on the query side."""
        return keys

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor | None = None,
        projected_keys: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        queries, squeeze = _as_queries(query)  # (N, T, Hq)
        transformed = queries @ self.weight  # (N, T, Hk)
        scores = torch.bmm(transformed, keys.transpose(1, 2))  # (N, T, S)
        return _attend(scores, values, mask, squeeze)

    def extra_repr(self) -> str:
        return f"query_size={self.query_size}, key_size={self.key_size}"
