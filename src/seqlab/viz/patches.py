r"""Where a Vision Transformer looks: the class token's attention over the image's patches.

Two views of the attention weights a :class:`~seqlab.models.VisionTransformer` returns
(``output_attentions=True``; one (N, h, 1 + L, 1 + L) tensor per layer, token 0 the class token):

- per layer: row 0 of each layer's weights, averaged over heads, over the L patch tokens;
- attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"): the
  residual connection is added as an identity, rows renormalised, and the layers multiplied,

  .. math::
      \hat A^{(l)} = \tfrac12 \bar A^{(l)} + \tfrac12 I, \qquad
      R = \hat A^{(n)} \hat A^{(n-1)} \cdots \hat A^{(1)}

  with \bar A^{(l)} layer l's weights averaged over heads; row 0 of R says how much of the
  class token's final state flows from each input token (each row of R sums to 1).

Shapes: N batch, h heads, T = 1 + L tokens, L = G * G patches, P patch side.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["attention_rollout", "class_token_attention", "plot_patch_attention"]


def _check_layers(attentions: Sequence[torch.Tensor]) -> None:
    if not attentions:
        raise ValueError("attentions should hold one weight tensor per layer, got none")
    shape = tuple(attentions[0].shape)
    if len(shape) != 4 or shape[-1] != shape[-2]:
        raise ValueError(
            f"each layer's attentions should be (N, h, T, T) self-attention weights "
            f"(model(images, output_attentions=True).attentions), got shape {shape}"
        )


def attention_rollout(attentions: Sequence[torch.Tensor], residual: bool = True) -> torch.Tensor:
    """Attention rollout: R = Â_n ... Â_1 with Â = (mean over heads + I) / 2 when `residual`.

    ============ ====================================
    attentions   one (N, h, T, T) tensor per layer
    output       (N, T, T), rows summing to 1
    ============ ====================================
    """
    _check_layers(attentions)
    rollout = None
    for weights in attentions:
        layer = weights.detach().float().mean(1)  # (N, T, T)
        if residual:
            identity = torch.eye(layer.size(-1), device=layer.device)
            layer = 0.5 * layer + 0.5 * identity
            layer = layer / layer.sum(-1, keepdim=True)
        rollout = layer if rollout is None else layer @ rollout  # (N, T, T)
    return rollout


def class_token_attention(
    attentions: Sequence[torch.Tensor], grid_size: int, method: str = "rollout"
) -> torch.Tensor:
    """The class token's attention over the patches, laid out on the patch grid.

    `method` is ``"rollout"`` (one map: :func:`attention_rollout`'s row 0) or ``"layers"`` (one
    map per layer: row 0 of the head-averaged weights). The class token's own column is
    dropped, so a map's sum is the share of attention that goes to patches.

    ============ ============================================================
    attentions   one (N, h, 1 + G², 1 + G²) tensor per layer
    output       (N, 1, G, G) for "rollout"; (N, layers, G, G) for "layers"
    ============ ============================================================
    """
    _check_layers(attentions)
    tokens = attentions[0].size(-1)
    if tokens != 1 + grid_size**2:
        raise ValueError(
            f"attentions over {tokens} tokens do not fit a class token + {grid_size}x{grid_size} "
            f"patches; give the model's grid_size"
        )
    if method == "rollout":
        rows = attention_rollout(attentions)[:, None, 0, 1:]  # (N, 1, L)
    elif method == "layers":
        rows = torch.stack([w.detach().float().mean(1)[:, 0, 1:] for w in attentions], 1)  # (N, n, L)
    else:
        raise ValueError(f"method should be 'rollout' or 'layers', got {method!r}")
    return rows.reshape(rows.size(0), rows.size(1), grid_size, grid_size)  # (N, maps, G, G)


def _as_picture(image) -> np.ndarray:
    """(H, W) grey or (H, W, 3) RGB in [0, 1] from a (C, H, W) tensor or an (H, W[, 3]) array."""
    if isinstance(image, torch.Tensor):
        array = image.detach().float().cpu()
        if array.dim() == 3:
            array = array.permute(1, 2, 0)  # (C, H, W) -> (H, W, C)
        array = array.numpy()
    else:
        array = np.asarray(image, dtype=np.float64)
        if array.max() > 1.0:
            array = array / 255.0
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ValueError(f"image should be (C, H, W), (H, W) or (H, W, 3), got shape {array.shape}")
    return np.clip(array, 0.0, 1.0)


def plot_patch_attention(
    images,
    attentions: Sequence[torch.Tensor],
    path: str | Path,
    grid_size: int,
    titles: Sequence[str] | None = None,
    method: str = "both",
) -> Path:
    """Write a PNG: one row per image, the picture, then the class token's attention over it.

    Each attention panel lays the G x G map over the dimmed picture (one cell per patch) and
    is scaled to its own maximum, so panels show where attention goes, not how much of it.

    Args:
        images: (N, C, H, W) tensor (pixels in [0, 1]) or a list of pictures.
        attentions: the model's weights for these images, one (N, h, T, T) tensor per layer.
        path: where to write the PNG (folders are created).
        grid_size: G, patches per side (``model.grid_size``).
        titles: one line per image (e.g. "label 3, predicted 3").
        method: ``"layers"`` (a panel per layer), ``"rollout"`` or ``"both"``.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    if method not in ("layers", "rollout", "both"):
        raise ValueError(f"method should be 'layers', 'rollout' or 'both', got {method!r}")
    maps, names = [], []
    if method in ("layers", "both"):
        maps.append(class_token_attention(attentions, grid_size, "layers"))
        names += [f"layer {k + 1}" for k in range(len(attentions))]
    if method in ("rollout", "both"):
        maps.append(class_token_attention(attentions, grid_size, "rollout"))
        names.append("rollout")
    panels = torch.cat(maps, 1).numpy()  # (N, panels, G, G)
    count = panels.shape[0]
    if titles is not None and len(titles) != count:
        raise ValueError(f"titles should have one line per image ({count}), got {len(titles)}")
    figure, axes = plt.subplots(
        count, 1 + len(names), figsize=(1.5 * (1 + len(names)), 1.6 * count), squeeze=False
    )
    for row in range(count):
        picture = _as_picture(images[row])
        height, width = picture.shape[:2]
        grey = picture if picture.ndim == 2 else picture.mean(-1)
        axes[row, 0].imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)
        axes[row, 0].set_title(titles[row] if titles else "image", fontsize=8)
        for column, name in enumerate(names, start=1):
            attention = panels[row, column - 1]
            axis = axes[row, column]
            # The picture dimmed underneath, the patch grid's weights on top (each cell one patch).
            axis.imshow(grey, cmap="gray", vmin=0, vmax=1, alpha=0.6)
            axis.imshow(attention, cmap="inferno", alpha=0.6, extent=(-0.5, width - 0.5, height - 0.5, -0.5),
                        interpolation="nearest")
            axis.set_title(name, fontsize=8)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
