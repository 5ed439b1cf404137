"""Transformer blocks and stacks (Vaswani et al. 2017): feed-forward, encoder and decoder layers.

A layer is a residual stream with sub-layers (self-attention, cross-attention, feed-forward),
each wrapped with dropout and layer normalisation, either after the residual sum (post-norm,
the paper's form, BERT) or before the sub-layer (pre-norm, GPT-2; Xiong et al. 2020):

    post-norm:  x = LayerNorm(x + Dropout(Sublayer(x)))
    pre-norm:   x = x + Dropout(Sublayer(LayerNorm(x)))

The feed-forward sub-layer is FFN(x) = W_2 Dropout(act(W_1 x + b_1)) + b_2, act = ReLU (the
paper), GELU (BERT) or GELU's tanh approximation (GPT-2).

Argument and parameter names mirror ``torch.nn.TransformerEncoderLayer`` /
``TransformerDecoderLayer`` / ``TransformerEncoder`` / ``TransformerDecoder`` (``self_attn``,
``multihead_attn``, ``linear1``, ``linear2``, ``norm1..3``, ``layers.{i}``), so their state dicts
load and outputs match. Layers return a tuple that also carries the attention weights when asked.

Shapes: N batch, L target length, S source length, E = d_model; inputs are (N, L, E) when
``batch_first`` else (L, N, E). Masks follow ``torch.nn.MultiheadAttention``: bool True = not
allowed / padding, or float added to the scores.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.nn.multihead import MultiheadAttention

__all__ = [
    "ACTIVATIONS",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "activation_function",
]

ACTIVATIONS = ("relu", "gelu", "gelu_tanh")


def activation_function(name: str):
    """The feed-forward non-linearity called `name` (one of :data:`ACTIVATIONS`)."""
    if name == "relu":
        return F.relu
    if name == "gelu":
        return F.gelu
    if name == "gelu_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    allowed = ", ".join(map(repr, ACTIVATIONS))
    raise ValueError(f"activation should be one of {allowed}, got {name!r}")


def _check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"dropout should be a number in range [0, 1], got {dropout!r}")


class TransformerEncoderLayer(nn.Module):
    r"""Self-attention + feed-forward, post- or pre-norm (``norm_first``).

    .. math::
        \text{post: } h = \mathrm{LN}_1(x + \mathrm{Drop}(\mathrm{MHA}(x))), \quad
        y = \mathrm{LN}_2(h + \mathrm{Drop}(\mathrm{FFN}(h)))

        \text{pre: } h = x + \mathrm{Drop}(\mathrm{MHA}(\mathrm{LN}_1 x)), \quad
        y = h + \mathrm{Drop}(\mathrm{FFN}(\mathrm{LN}_2 h))

    With ``is_causal=True`` and a ``kv_cache`` this is also the block of a decoder-only model
    (GPT): each position attends to itself and the past only.

    Args mirror ``torch.nn.TransformerEncoderLayer``; ``activation`` is a name from
    :data:`ACTIVATIONS`; ``rotary`` is passed to the self-attention.

    ======================= ===========================================================
    src                     (N, L, E) if batch_first else (L, N, E)
    src_mask                (L, S) bool True = not allowed, or float
    src_key_padding_mask    (N, S) bool True = padding (S = L, or all cached positions)
    output                  like src; weights (N, h, L, S) when need_weights else None
    ======================= ===========================================================
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        rotary: nn.Module | None = None,
    ) -> None:
        super().__init__()
        _check_dropout(dropout)
        self.activation = activation_function(activation)
        self.activation_name = activation
        self.norm_first = norm_first
        self.self_attn = MultiheadAttention(
            d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, rotary=rotary
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def _self_attention(self, x, mask, padding, is_causal, need_weights, kv_cache, offset):
        output, weights = self.self_attn(
            x, x, x, key_padding_mask=padding, need_weights=need_weights, attn_mask=mask,
            average_attn_weights=False, is_causal=is_causal, kv_cache=kv_cache,
            position_offset=offset,
        )
        return self.dropout1(output), weights

    def forward(
        self,
        src: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        kv_cache=None,
        position_offset: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        args = (src_mask, src_key_padding_mask, is_causal, need_weights, kv_cache, position_offset)
        x = src
        if self.norm_first:
            attended, weights = self._self_attention(self.norm1(x), *args)
            x = x + attended
            x = x + self._feed_forward(self.norm2(x))
        else:
            attended, weights = self._self_attention(x, *args)
            x = self.norm1(x + attended)
            x = self.norm2(x + self._feed_forward(x))
        return x, weights


class TransformerDecoderLayer(nn.Module):
    r"""Causal self-attention + cross-attention to the encoder's memory + feed-forward.

    .. math::
        \text{post: } a = \mathrm{LN}_1(x + \mathrm{Drop}(\mathrm{SelfAttn}(x))), \
        b = \mathrm{LN}_2(a + \mathrm{Drop}(\mathrm{CrossAttn}(a, m))), \
        y = \mathrm{LN}_3(b + \mathrm{Drop}(\mathrm{FFN}(b)))

    and the pre-norm form moves each LN inside the residual branch (the memory m is used as it
    is). Args mirror ``torch.nn.TransformerDecoderLayer``.

    ========================= ==========================================================
    tgt                       (N, L, E) if batch_first else (L, N, E)
    memory                    (N, S, E) if batch_first else (S, N, E)
    tgt_key_padding_mask      (N, L) (or all cached positions) bool True = padding
    memory_key_padding_mask   (N, S) bool True = padding
    output                    like tgt; self weights (N, h, L, L), cross weights (N, h, L, S)
    ========================= ==========================================================
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        rotary: nn.Module | None = None,
    ) -> None:
        super().__init__()
        _check_dropout(dropout)
        self.activation = activation_function(activation)
        self.activation_name = activation
        self.norm_first = norm_first
        self.self_attn = MultiheadAttention(
            d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, rotary=rotary
        )
        self.multihead_attn = MultiheadAttention(
            d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        tgt_key_padding_mask: torch.Tensor | None = None,
        memory_key_padding_mask: torch.Tensor | None = None,
        tgt_is_causal: bool = False,
        need_weights: bool = False,
        kv_cache=None,
        position_offset: int = 0,
        memory_key_value: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """`memory_key_value`: ``multihead_attn.project_key_value(memory, memory)``, computed once
        per source sentence while decoding step by step; `memory` is then not read again."""

        def self_block(x):
            out, weights = self.self_attn(
                x, x, x, key_padding_mask=tgt_key_padding_mask, need_weights=need_weights,
                attn_mask=tgt_mask, average_attn_weights=False, is_causal=tgt_is_causal,
                kv_cache=kv_cache, position_offset=position_offset,
            )
            return self.dropout1(out), weights

        def cross_block(x):
            out, weights = self.multihead_attn(
                x, memory, memory, key_padding_mask=memory_key_padding_mask,
                need_weights=need_weights, attn_mask=memory_mask, average_attn_weights=False,
                projected_key_value=memory_key_value,
            )
            return self.dropout2(out), weights

        x = tgt
        if self.norm_first:
            attended, self_weights = self_block(self.norm1(x))
            x = x + attended
            attended, cross_weights = cross_block(self.norm2(x))
            x = x + attended
            x = x + self._feed_forward(self.norm3(x))
        else:
            attended, self_weights = self_block(x)
            x = self.norm1(x + attended)
            attended, cross_weights = cross_block(x)
            x = self.norm2(x + attended)
            x = self.norm3(x + self._feed_forward(x))
        return x, self_weights, cross_weights


def _clones(layer: nn.Module, num_layers: int) -> nn.ModuleList:
    if num_layers < 1:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers}")
    return nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))


def _layer_cache(kv_cache, index: int):
    return None if kv_cache is None else kv_cache.layer(index)


class TransformerEncoder(nn.Module):
    """A stack of ``num_layers`` copies of `encoder_layer`, then an optional final `norm`
    (needed after pre-norm layers), as ``torch.nn.TransformerEncoder``.

    ``forward`` returns ``(output, weights)``: weights is a list with each layer's
    (N, h, L, S) attention weights when ``need_weights``, else None. ``kv_cache`` is a
    :class:`~seqlab.decode.kv_cache.KVCache` with one entry per layer.
    """

    def __init__(
        self, encoder_layer: nn.Module, num_layers: int, norm: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(
        self,
        src: torch.Tensor,
        mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        kv_cache=None,
        position_offset: int = 0,
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        weights = []
        x = src
        for index, layer in enumerate(self.layers):
            x, layer_weights = layer(
                x, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                is_causal=is_causal, need_weights=need_weights,
                kv_cache=_layer_cache(kv_cache, index), position_offset=position_offset,
            )
            weights.append(layer_weights)
        if self.norm is not None:
            x = self.norm(x)
        return x, weights if need_weights else None


class TransformerDecoder(nn.Module):
    """A stack of ``num_layers`` copies of `decoder_layer`, then an optional final `norm`, as
    ``torch.nn.TransformerDecoder``.

    ``forward`` returns ``(output, self_weights, cross_weights)``, the two lists holding each
    layer's (N, h, L, L) and (N, h, L, S) weights when ``need_weights``, else None.
    ``memory_key_values`` holds each layer's projected memory (see
    :meth:`~seqlab.nn.MultiheadAttention.project_key_value`) for step-by-step decoding.
    """

    def __init__(
        self, decoder_layer: nn.Module, num_layers: int, norm: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        tgt_key_padding_mask: torch.Tensor | None = None,
        memory_key_padding_mask: torch.Tensor | None = None,
        tgt_is_causal: bool = False,
        need_weights: bool = False,
        kv_cache=None,
        position_offset: int = 0,
        memory_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None, list[torch.Tensor] | None]:
        self_weights, cross_weights = [], []
        x = tgt
        for index, layer in enumerate(self.layers):
            x, layer_self, layer_cross = layer(
                x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                tgt_key_padding_mask=tgt_key_padding_mask,
                memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=tgt_is_causal,
                need_weights=need_weights, kv_cache=_layer_cache(kv_cache, index),
                position_offset=position_offset,
                memory_key_value=None if memory_key_values is None else memory_key_values[index],
            )
            self_weights.append(layer_self)
            cross_weights.append(layer_cross)
        if self.norm is not None:
            x = self.norm(x)
        if not need_weights:
            return x, None, None
        return x, self_weights, cross_weights
