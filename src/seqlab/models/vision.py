"""Images as sequences of patches: the Vision Transformer, and a small CNN to compare it with.

The file reads bottom-up: :class:`PatchEmbedding` cuts an image into P x P patches and projects
each to a d_model-wide token, :class:`VisionTransformer` prepends a class token, adds learned
positions and runs seqlab's Transformer encoder (:mod:`seqlab.nn.transformer`), then
classifies the class token's output; :class:`SmallCNN` is the convolutional baseline
(conv 3x3 -> ReLU -> max-pool blocks, then a linear layer over the flattened grid).

Paper: Dosovitskiy et al. (2021), "An Image is Worth 16x16 Words: Transformers for Image
Recognition at Scale" (patches as tokens, the [class] token, learned 1-D positions, pre-norm
encoder, a linear head on the class token's final state).

Shapes (used in every docstring of this file):

    N  batch size
    C  image channels (1 for grey digits, 3 for RGB), H x W image size (H = W = image_size)
    P  patch side; G = H / P patches per side; L = G * G patches (tokens before the class token)
    E  d_model; h heads; K number of classes
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.models.outputs import ClassifierOutput
from seqlab.models.registry import register_model
from seqlab.nn.transformer import ACTIVATIONS, TransformerEncoder, TransformerEncoderLayer

__all__ = ["PatchEmbedding", "SmallCNN", "VisionTransformer", "patchify"]


def _check_image(images: torch.Tensor, channels: int, image_size: int) -> None:
    expected = (channels, image_size, image_size)
    if images.dim() != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(
            f"images should be (N, {', '.join(map(str, expected))}) (channels first, "
            f"image_size={image_size}), got shape {tuple(images.shape)}"
        )


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into non-overlapping P x P patches, each flattened channel-major.

    Patches are numbered row by row (left to right, then top to bottom), and each patch's
    C * P * P values are ordered (channel, row, column), the layout of a Conv2d weight
    (E, C, P, P), so ``patchify(x, P) @ conv.weight.flatten(1).T`` is the convolution.

    ======== =====================
    images   (N, C, H, W)
    output   (N, L, C * P * P)
    ======== =====================
    """
    n, channels, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image size {height}x{width} should be a multiple of patch_size={patch_size}"
        )
    rows, columns = height // patch_size, width // patch_size
    x = images.reshape(n, channels, rows, patch_size, columns, patch_size)  # (N, C, G, P, G, P)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (N, G_row, G_col, C, P, P)
    return x.reshape(n, rows * columns, channels * patch_size * patch_size)  # (N, L, C*P*P)


class PatchEmbedding(nn.Module):
    r"""Split an image into P x P patches and project each linearly to E features.

    .. math::
        z_\ell = W\,\mathrm{vec}(x_{p_\ell}) + b, \qquad \ell = 1 .. L = (H/P)(W/P)

    where x_{p_ell} is the ell-th patch (patches numbered row by row) and vec orders its values
    (channel, row, column). A Conv2d with kernel = stride = P computes exactly this: each
    output position sees one patch, through the same weights W (E, C, P, P); it is the form
    used here (one fused kernel, torch's weight layout), :func:`patchify` the unfolded one.

    ======== =======================
    images   (N, C, H, W) float
    output   (N, L, E)
    ======== =======================
    """

    def __init__(
        self, image_size: int, patch_size: int, in_channels: int = 3, embed_dim: int = 64
    ) -> None:
        super().__init__()
        if patch_size < 1 or image_size % patch_size:
            raise ValueError(
                f"patch_size should divide image_size={image_size}, got {patch_size} "
                f"(e.g. patch_size=2 or 4 for 8x8 digits)"
            )
        self.image_size = image_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_image(images, self.in_channels, self.image_size)
        x = self.proj(images)  # (N, E, G, G)
        return x.flatten(2).transpose(1, 2)  # (N, E, L) -> (N, L, E)


@register_model
class VisionTransformer(nn.Module):
    r"""ViT: patch tokens + a class token through a Transformer encoder, classified from the class token.

    .. math::
        z^0 = \mathrm{Drop}([x_{cls};\ z_1; \dots; z_L] + P_{pos}), \qquad
        z^l = \mathrm{Block}_l(z^{l-1}), \qquad
        y = W\,\mathrm{LN}(z^{L}_0) + b

    with z_ell the patch embeddings (:class:`PatchEmbedding`), x_cls a learned vector (BERT's
    [CLS]: a token that belongs to no patch, whose final state summarises the image) and P_pos
    learned positions (L + 1 rows). The blocks are :class:`seqlab.nn.TransformerEncoderLayer`;
    pre-norm (``norm_first=True``, the paper's) ends the stack with the LayerNorm LN, which
    post-norm blocks (``norm_first=False``) apply inside each block instead.

    Without P_pos the encoder would see the patches as a set: self-attention is equivariant to
    permuting its tokens, so the class token's output would not change if the patches were
    shuffled. Every image has all L tokens, so there is no padding.

    Args:
        image_size: H = W. patch_size: P (divides image_size). in_channels: C.
        num_classes: K. d_model, nhead, num_layers, dim_feedforward (default 4 E), dropout,
        activation, norm_first, layer_norm_eps: the encoder's, as
        :class:`seqlab.models.TransformerEncoderModel`.

    ========== ==========================================
    images     (N, C, H, W) float
    targets    (N,) long class ids
    logits     (N, K); hidden (N, 1 + L, E); pooled (N, E)
    attentions one (N, h, 1 + L, 1 + L) per layer, when asked
    ========== ==========================================
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        num_classes: int,
        in_channels: int = 3,
        d_model: int = 64,
        nhead: int = 4,
        num_layers: int = 4,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
        activation: str = "gelu",
        norm_first: bool = True,
        layer_norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            allowed = ", ".join(map(repr, ACTIVATIONS))
            raise ValueError(f"activation should be one of {allowed}, got {activation!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes should be a positive integer, got {num_classes}")
        self.d_model = d_model
        self.patch_embed = PatchEmbedding(image_size, patch_size, in_channels, d_model)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.position = nn.Parameter(torch.zeros(1, 1 + self.patch_embed.num_patches, d_model))
        self.dropout = nn.Dropout(dropout)
        layer = TransformerEncoderLayer(
            d_model, nhead, dim_feedforward or 4 * d_model, dropout=dropout,
            activation=activation, layer_norm_eps=layer_norm_eps, batch_first=True,
            norm_first=norm_first,
        )
        norm = nn.LayerNorm(d_model, eps=layer_norm_eps) if norm_first else None
        self.encoder = TransformerEncoder(layer, num_layers, norm=norm)
        self.head = nn.Linear(d_model, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The class token and positions start small (N(0, 0.02²), as BERT's and ViT's tables):
        torch's N(0, 1) would drown the patch embeddings, which start at scale ~1/sqrt(C P²)."""
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.position, std=0.02)

    @property
    def grid_size(self) -> int:
        """G: patches per image side (the class token's attention reshapes to (G, G))."""
        return self.patch_embed.grid_size

    def forward(
        self,
        images: torch.Tensor,
        targets: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> ClassifierOutput:
        patches = self.patch_embed(images)  # (N, L, E)
        cls = self.cls_token.expand(patches.size(0), -1, -1)  # (N, 1, E)
        x = torch.cat([cls, patches], dim=1) + self.position  # (N, 1 + L, E)
        hidden, weights = self.encoder(self.dropout(x), need_weights=output_attentions)
        pooled = hidden[:, 0]  # (N, E) the class token
        logits = self.head(pooled)  # (N, K)
        loss = None if targets is None else F.cross_entropy(logits, targets)
        return ClassifierOutput(
            logits=logits, loss=loss, attentions=None if weights is None else tuple(weights),
            hidden=hidden, pooled=pooled,
        )


@register_model
class SmallCNN(nn.Module):
    r"""A small convolutional classifier: conv blocks, then a linear layer over the whole grid.

    Each block is conv 3x3 (padding 1) -> ReLU -> max-pool 2x2, halving the side; with
    ``channels = (c_1, .., c_B)`` an H x H image becomes a (c_B, H / 2^B, H / 2^B) grid:

    .. math::
        F = \mathrm{Block}_B(\dots \mathrm{Block}_1(x)), \qquad
        y = W\,\mathrm{Drop}(\mathrm{vec}(F)) + b

    Convolutions share weights across positions and see only 3x3 neighbourhoods: the locality
    and translation equivariance a ViT has to learn from data are built in. Conv weights use He
    initialisation (they feed ReLUs).

    ======== ======================================
    images   (N, C, H, W) float
    targets  (N,) long class ids
    logits   (N, K); pooled (N, c_B * (H / 2^B)^2)
    ======== ======================================
    """

    def __init__(
        self,
        image_size: int,
        num_classes: int,
        in_channels: int = 3,
        channels: tuple[int, ...] = (32, 64),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        if not channels or any(width < 1 for width in channels):
            raise ValueError(f"channels should be a non-empty list of positive sizes, got {channels}")
        blocks = len(channels)
        if image_size % 2**blocks:
            raise ValueError(
                f"image_size should be a multiple of 2^{blocks} = {2**blocks} ({blocks} conv "
                f"blocks each halve it), got {image_size}; use fewer channels entries"
            )
        layers: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            previous = width
        self.convs = nn.Sequential(*layers)
        self.image_size = image_size
        self.in_channels = in_channels
        grid = image_size // 2**blocks
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels[-1] * grid * grid, num_classes)
        for module in self.convs:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(
        self, images: torch.Tensor, targets: torch.Tensor | None = None
    ) -> ClassifierOutput:
        _check_image(images, self.in_channels, self.image_size)
        features = self.convs(images).flatten(1)  # (N, c_B, G, G) -> (N, c_B * G * G)
        logits = self.head(self.dropout(features))  # (N, K)
        loss = None if targets is None else F.cross_entropy(logits, targets)
        return ClassifierOutput(logits=logits, loss=loss, pooled=features)
