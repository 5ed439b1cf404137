"""Scaled dot-product attention and multi-head attention (Vaswani et al. 2017).

Scaled dot-product attention of queries Q against keys K and values V:

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + B) V

where B is 0 where a query may look at a key and -inf where it may not (padding, the future).
Multi-head attention runs h of these side by side on learned projections and mixes the results:

    head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)
    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O

Two paths compute the same numbers. The math path writes the formula out and can return the
attention weights; the fast path calls ``torch.nn.functional.scaled_dot_product_attention``
(fused kernels) and is used whenever the weights are not asked for.

Shapes (symbols used in every docstring of this file):

    N  batch size, h number of heads
    L  number of queries (target length), S number of keys (source length)
    E  embedding size (embed_dim), d = E / h the size of one head

Masks follow the torch function each piece mirrors: in :func:`scaled_dot_product_attention` a
boolean ``attn_mask`` is True where a query MAY look at a key (as in
``F.scaled_dot_product_attention``); in :class:`MultiheadAttention` a boolean ``attn_mask`` or
``key_padding_mask`` is True where it may NOT (as in ``torch.nn.MultiheadAttention``). A float
mask is added to the scores in both.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KVCacheLayer", "MultiheadAttention", "causal_mask", "scaled_dot_product_attention"]


def causal_mask(
    query_length: int, key_length: int, device: torch.device | None = None
) -> torch.Tensor:
    """(L, S) bool, True where query i may look at key j, i.e. j <= i + (S - L).

    The queries are the last L of the S positions (bottom-right alignment), which is what a
    decoder with a key/value cache needs: L = S for a full pass, L = 1 for one new token.
    """
    offset = key_length - query_length
    rows = torch.arange(query_length, device=device)[:, None]  # (L, 1)
    cols = torch.arange(key_length, device=device)[None, :]  # (1, S)
    return cols <= rows + offset  # (L, S)


def _as_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool "may look" mask as an additive float mask: 0 where allowed, -inf elsewhere."""
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
        ~mask, float("-inf")
    )


def _merge_masks(
    attn_mask: torch.Tensor | None, is_causal: bool, query_length: int, key_length: int, device
) -> torch.Tensor | None:
    """One mask (bool "may look", or float bias) combining `attn_mask` and causality."""
    if not is_causal:
        return attn_mask
    causal = causal_mask(query_length, key_length, device)  # (L, S)
    if attn_mask is None:
        return causal
    if attn_mask.dtype == torch.bool:
        return attn_mask & causal
    return attn_mask + _as_bias(causal, attn_mask.dtype)


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    need_weights: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""softmax(Q K^T * scale + mask) V, with scale = 1 / sqrt(d) unless given.

    Args:
        query: (..., L, d); key: (..., S, d); value: (..., S, d_v). The leading dims (usually
            (N, h)) must broadcast.
        attn_mask: bool (..., L, S), True where a query may look at a key, or float added to the
            scores; broadcast over the leading dims.
        dropout_p: dropout on the attention weights (pass 0 in eval mode).
        is_causal: query i may only look at keys j <= i + (S - L) (see :func:`causal_mask`);
            combines with `attn_mask`.
        need_weights: return the weights (..., L, S); this takes the math path.
        generator: draws the dropout mask on the math path (which it then takes), for
            reproducible dropout.

    Returns:
        ``(output (..., L, d_v), weights or None)``. A query row that may look at no key gets
        all-zero weights and a zero output on the math path.
    """
    query_length, key_length = query.size(-2), key.size(-2)
    if not need_weights and generator is None:
        # torch's own is_causal aligns top-left; pass the bottom-right mask unless L == S.
        if is_causal and attn_mask is None and query_length == key_length:
            output = F.scaled_dot_product_attention(
                query, key, value, dropout_p=dropout_p, is_causal=True, scale=scale
            )
        else:
            mask = _merge_masks(attn_mask, is_causal, query_length, key_length, query.device)
            output = F.scaled_dot_product_attention(
                query, key, value, attn_mask=mask, dropout_p=dropout_p, scale=scale
            )
        return output, None

    mask = _merge_masks(attn_mask, is_causal, query_length, key_length, query.device)

    scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    scores = query @ key.transpose(-2, -1) * scale  # (..., L, S)
    if mask is not None:
        scores = scores + _as_bias(mask, scores.dtype)
    weights = torch.softmax(scores, dim=-1)
    # A row with every key masked is NaN after the softmax; it attends to nothing instead.
    weights = weights.nan_to_num(0.0)
    dropped = weights
    if dropout_p > 0.0:
        keep = torch.rand(weights.shape, generator=generator, device=weights.device) >= dropout_p
        dropped = weights * keep / (1.0 - dropout_p)
    return dropped @ value, weights  # (..., L, d_v), (..., L, S)


class KVCacheLayer(Protocol):
    """What attention needs from a key/value cache of one layer (see :mod:`seqlab.decode.kv_cache`).

    ``update(key, value)`` appends the new keys and values (N, h, S_new, d) and returns all of
    them so far (N, h, S_past + S_new, d).
    """

    def update(
        self, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class MultiheadAttention(nn.Module):
    r"""Multi-head attention, a drop-in for ``torch.nn.MultiheadAttention`` (same arguments,
    parameter names and layout), plus rotary positions and a key/value cache.

    .. math::
        [Q; K; V] = [x_q W_q^T + b_q;\ x_k W_k^T + b_k;\ x_v W_v^T + b_v], \qquad
        \mathrm{out} = \mathrm{Concat}(\mathrm{head}_1..\mathrm{head}_h) W_o^T + b_o

    ``in_proj_weight`` (3E, E) stacks W_q, W_k, W_v; ``in_proj_bias`` (3E,); ``out_proj`` is an
    ``nn.Linear(E, E)``. So ``load_state_dict(torch_mha.state_dict())`` works and outputs match.
    torch's ``kdim`` / ``vdim`` (keys of another width), ``add_bias_kv`` and ``add_zero_attn``
    are not offered. The weights returned are those before attention dropout.

    Args:
        embed_dim: E. num_heads: h (must divide E).
        dropout: dropout on the attention weights while training.
        bias: learn b_q, b_k, b_v and b_o.
        batch_first: (N, L, E) inputs and outputs instead of torch's default (L, N, E).
        rotary: a :class:`~seqlab.nn.positional.RotaryEmbedding` applied to every head's queries
            and keys (self-attention), or None.

    ================== =======================================================================
    query              (N, L, E) if batch_first else (L, N, E)
    key, value         (N, S, E) if batch_first else (S, N, E)
    key_padding_mask   (N, S): bool True = padding (ignored), or float added
    attn_mask          (L, S) or (N * h, L, S): bool True = not allowed, or float added
    output             like query
    weights            (N, L, S) averaged over heads, or (N, h, L, S)
    ================== =======================================================================
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        batch_first: bool = False,
        rotary: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if embed_dim < 1 or num_heads < 1 or embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim must be a positive multiple of num_heads, got embed_dim={embed_dim} "
                f"and num_heads={num_heads}"
            )
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout should be a number in range [0, 1], got {dropout!r}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.rotary = rotary
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's initialisation: Xavier-uniform input projection, zero biases."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def _in_projection(self, x: torch.Tensor, part: int | None = None) -> torch.Tensor:
        """x W^T + b for all rows of in_proj_weight (part None) or those of W_q / W_k / W_v.

        A low-rank update registered on in_proj_weight through ``torch.nn.utils.parametrize``
        that offers ``branch`` (LoRA, :mod:`seqlab.tune.lora`) is added on the activations,
        x W^T + s · x A^T B^T, rather than through the formed W' = W + s · B A: the same
        numbers, without the (3E, E) gradient of W' in the backward pass.
        """
        chain = getattr(getattr(self, "parametrizations", None), "in_proj_weight", None)
        branch = None
        if chain is not None and len(chain) == 1 and hasattr(chain[0], "branch"):
            weight = chain.original  # W itself
            branch = chain[0].branch(x, part)
        else:
            weight = self.in_proj_weight
        bias = self.in_proj_bias
        if part is not None:
            rows = slice(part * self.embed_dim, (part + 1) * self.embed_dim)
            weight, bias = weight[rows], None if bias is None else bias[rows]
        projected = F.linear(x, weight, bias)  # (N, T, E) or (N, T, 3E)
        return projected if branch is None else projected + branch

    def _project(self, x: torch.Tensor, part: int) -> torch.Tensor:
        """x (N, T, E) through W_q (part 0), W_k (1) or W_v (2), split into heads (N, h, T, d)."""
        batch, length = x.shape[:2]
        projected = self._in_projection(x, part)  # (N, T, E)
        return projected.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def _project_self(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, T, E) through all of in_proj_weight at once, split into q, k, v (N, h, T, d)."""
        batch, length = x.shape[:2]
        projected = self._in_projection(x)  # (N, T, 3E)
        return tuple(
            part.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
            for part in projected.split(self.embed_dim, dim=-1)
        )

    def _mask(
        self,
        attn_mask: torch.Tensor | None,
        key_padding_mask: torch.Tensor | None,
        batch: int,
        dtype: torch.dtype,
    ) -> torch.Tensor | None:
        """torch-style "not allowed" masks as one mask for the core: bool "may look" or float."""
        masks = []
        if attn_mask is not None:
            if attn_mask.dim() == 3:
                attn_mask = attn_mask.view(batch, self.num_heads, *attn_mask.shape[1:])
            masks.append(~attn_mask if attn_mask.dtype == torch.bool else attn_mask.to(dtype))
        if key_padding_mask is not None:
            padding = key_padding_mask[:, None, None, :]  # (N, 1, 1, S)
            masks.append(~padding if padding.dtype == torch.bool else padding.to(dtype))
        if not masks:
            return None
        if len(masks) == 1:
            return masks[0]
        if all(m.dtype == torch.bool for m in masks):
            return masks[0] & masks[1]
        return _as_bias(masks[0], dtype) + _as_bias(masks[1], dtype)

    def project_key_value(
        self, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """K W_k + b_k and V W_v + b_v split into heads, (N, h, S, d) each.

        Independent of the query: a decoder computes them once per source sentence and passes
        them back as `projected_key_value` at every step of its cross-attention.
        """
        if not self.batch_first:
            key, value = key.transpose(0, 1), value.transpose(0, 1)  # (N, S, E)
        return self._project(key, 1), self._project(value, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None,
        value: torch.Tensor | None,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
        kv_cache: KVCacheLayer | None = None,
        position_offset: int = 0,
        projected_key_value: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from `query` to `key` / `value`; returns ``(output, weights or None)``.

        With `kv_cache` the new keys and values are appended to the cache and the queries attend
        to everything cached so far (`key_padding_mask` then covers all S cached positions).
        `position_offset` is the position of the first query (and new key) for rotary.
        `projected_key_value` from :meth:`project_key_value` stands in for `key` and `value`.
        """
        self_attention = projected_key_value is None and key is query and value is query
        if not self.batch_first:
            query = query.transpose(0, 1)  # (N, L, E)
        batch = query.size(0)
        if self_attention:
            # Self-attention: one matmul for the stacked W_q, W_k, W_v (as torch does).
            q, k, v = self._project_self(query)  # (N, h, L, d) each
        else:
            q = self._project(query, 0)  # (N, h, L, d)
            if projected_key_value is None:
                k, v = self.project_key_value(key, value)  # (N, h, S_new, d) each
            else:
                k, v = projected_key_value
        if self.rotary is not None:
            q = self.rotary(q, offset=position_offset)
            k = self.rotary(k, offset=position_offset)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)  # (N, h, S, d)
        mask = self._mask(attn_mask, key_padding_mask, batch, q.dtype)
        output, weights = scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
            need_weights=need_weights,
        )  # (N, h, L, d)
        output = output.transpose(1, 2).reshape(batch, -1, self.embed_dim)  # (N, L, E)
        output = self.out_proj(output)
        if not self.batch_first:
            output = output.transpose(0, 1)  # (L, N, E)
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)  # (N, L, S)
        return output, weights

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
            f"batch_first={self.batch_first}"
        )
