"""Key/value cache for step-by-step decoding with causal self-attention.

A causal layer's keys and values at past positions never change once computed, so a decoder
that generates token t only needs the new token's query, key and value: it appends k_t, v_t to
the cache and attends over k_{1..t}, v_{1..t}. A step then costs O(t) instead of the O(t^2) of
recomputing the whole prefix.

Shapes: N batch rows, h heads, S cached positions, d head size. Each layer holds keys and
values (N, h, S, d).
"""

from __future__ import annotations

import torch

__all__ = ["KVCache", "LayerKVCache"]


class LayerKVCache:
    """Keys and values (N, h, S, d) of one attention layer; empty until the first update."""

    def __init__(self, key: torch.Tensor | None = None, value: torch.Tensor | None = None) -> None:
        self.key = key
        self.value = value

    @property
    def length(self) -> int:
        """S, the number of cached positions."""
        return 0 if self.key is None else self.key.size(-2)

    def update(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append key, value (N, h, S_new, d); return everything cached (N, h, S + S_new, d)."""
        if self.key is None:
            self.key, self.value = key, value
        else:
            self.key = torch.cat([self.key, key], dim=-2)
            self.value = torch.cat([self.value, value], dim=-2)
        return self.key, self.value


class KVCache:
    """One :class:`LayerKVCache` per layer of a decoder; updated in place by each forward pass.

    ``length`` is how many positions are cached (the position of the next token);
    ``index_select(index)`` gives the cache of batch rows `index` (beams follow back-pointers).
    """

    def __init__(self, num_layers: int) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be a positive integer, got {num_layers}")
        self.layers = [LayerKVCache() for _ in range(num_layers)]

    def layer(self, index: int) -> LayerKVCache:
        return self.layers[index]

    @property
    def length(self) -> int:
        return self.layers[0].length

    def index_select(self, index: torch.Tensor) -> KVCache:
        selected = KVCache(len(self.layers))
        for old, new in zip(self.layers, selected.layers):
            if old.key is not None:
                new.key = old.key.index_select(0, index)
                new.value = old.value.index_select(0, index)
        return selected
