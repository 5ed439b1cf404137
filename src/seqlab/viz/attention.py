"""Attention maps as heat maps: one panel per head of one layer, queries down, keys across."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["plot_attention"]


def plot_attention(
    weights: torch.Tensor,
    path: str | Path,
    query_tokens: Sequence[str] | None = None,
    key_tokens: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Write a PNG of attention weights and return its path.

    Args:
        weights: (h, L, S) one layer's heads for one example (e.g. ``out.attentions[layer][n]``),
            or (L, S) a single map (e.g. ``Seq2SeqOutput.attentions[n]``).
        path: where to write the PNG (folders are created).
        query_tokens / key_tokens: labels for the L rows and S columns.
        title: drawn above the panels.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    maps = weights.detach().float().cpu()
    if maps.dim() == 2:
        maps = maps.unsqueeze(0)  # (1, L, S)
    if maps.dim() != 3:
        raise ValueError(f"weights should be (h, L, S) or (L, S), got shape {tuple(weights.shape)}")
    heads, queries, keys = maps.shape
    for name, labels, size in (
        ("query_tokens", query_tokens, queries),
        ("key_tokens", key_tokens, keys),
    ):
        if labels is not None and len(labels) != size:
            raise ValueError(f"{name} should have {size} labels, got {len(labels)}")
    figure, axes = plt.subplots(
        1, heads, figsize=(0.4 * keys * heads + 2, 0.4 * queries + 1.5), squeeze=False
    )
    for head, axis in enumerate(axes[0]):
        axis.imshow(maps[head].numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        axis.set_title(f"head {head}" if heads > 1 else "attention", fontsize=9)
        if key_tokens is not None:
            axis.set_xticks(range(keys), list(key_tokens), rotation=90, fontsize=7)
        if query_tokens is not None and head == 0:
            axis.set_yticks(range(queries), list(query_tokens), fontsize=7)
        elif head > 0:
            axis.set_yticks([])
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
