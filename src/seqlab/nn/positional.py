"""Positional information for attention: sinusoidal, learned and rotary (RoPE).

Attention by itself is blind to order. The first two encodings add a vector p_t to the token
embedding at position t; rotary turns each query and key by an angle proportional to its
position, so that their dot product depends on the positions only through the offset i - j.

Shapes: N batch, L length, E embedding size, h heads, d head size. ``offset`` is the position
of the first element (the number of tokens already cached while generating).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LearnedPositionalEmbedding", "RotaryEmbedding", "SinusoidalPositionalEncoding"]


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")


def _check_range(length: int, offset: int, max_length: int) -> None:
    if offset < 0 or offset + length > max_length:
        raise ValueError(
            f"positions {offset}..{offset + length - 1} fall outside [0, max_length={max_length}); "
            f"raise max_length or shorten the input"
        )


class SinusoidalPositionalEncoding(nn.Module):
    r"""Fixed sinusoids of geometrically spaced wavelengths (Vaswani et al. 2017, section 3.5).

    .. math::
        P_{t, 2i} = \sin(t / 10000^{2i/E}), \qquad P_{t, 2i+1} = \cos(t / 10000^{2i/E})

    ``forward(x)`` returns x * scale + P[offset : offset + L]; ``scale`` is sqrt(E) in the paper's
    model (its embeddings are multiplied by sqrt(d_model)), 1 here by default. The table has no
    parameters and is not saved in the state dict.

    ====== ===========
    x      (N, L, E)
    output (N, L, E)
    ====== ===========
    """

    def __init__(
        self, embedding_dim: int, max_length: int = 4096, base: float = 10000.0, scale: float = 1.0
    ) -> None:
        super().__init__()
        _check_positive(embedding_dim=embedding_dim, max_length=max_length)
        self.embedding_dim = embedding_dim
        self.max_length = max_length
        self.scale = scale
        positions = torch.arange(max_length, dtype=torch.float64)[:, None]  # (T, 1)
        inverse_wavelengths = base ** (
            -torch.arange(0, embedding_dim, 2, dtype=torch.float64) / embedding_dim
        )  # (ceil(E / 2),)
        angles = positions * inverse_wavelengths  # (T, ceil(E / 2))
        table = torch.zeros(max_length, embedding_dim, dtype=torch.float64)
        table[:, 0::2] = torch.sin(angles)
        table[:, 1::2] = torch.cos(angles[:, : embedding_dim // 2])
        self.register_buffer("table", table.float(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        length = x.size(1)
        _check_range(length, offset, self.max_length)
        return x * self.scale + self.table[offset : offset + length].to(x.dtype)  # (N, L, E)

    def extra_repr(self) -> str:
        return (
            f"embedding_dim={self.embedding_dim}, max_length={self.max_length}, "
            f"scale={self.scale}"
        )


class LearnedPositionalEmbedding(nn.Module):
    r"""A trained vector per position (GPT, BERT): output = x + P[offset : offset + L].

    ``weight`` is an ``nn.Embedding(max_length, E)`` table, as GPT-2's ``wpe`` and BERT's
    ``position_embeddings``, so those checkpoints load into it.

    ====== ===========
    x      (N, L, E)
    output (N, L, E)
    ====== ===========
    """

    def __init__(self, embedding_dim: int, max_length: int = 1024) -> None:
        super().__init__()
        _check_positive(embedding_dim=embedding_dim, max_length=max_length)
        self.max_length = max_length
        self.embedding = nn.Embedding(max_length, embedding_dim)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        length = x.size(1)
        _check_range(length, offset, self.max_length)
        positions = torch.arange(offset, offset + length, device=x.device)  # (L,)
        return x + self.embedding(positions)  # (N, L, E)


class RotaryEmbedding(nn.Module):
    r"""Rotary position embedding (Su et al. 2021, "RoFormer", eq. 34).

    Each pair (x_{2i}, x_{2i+1}) of a head vector at position t is rotated by t * theta_i:

    .. math::
        \theta_i = \mathrm{base}^{-2i/d}, \qquad
        \begin{pmatrix} y_{2i} \\ y_{2i+1} \end{pmatrix} =
        \begin{pmatrix} \cos t\theta_i & -\sin t\theta_i \\ \sin t\theta_i & \cos t\theta_i
        \end{pmatrix}
        \begin{pmatrix} x_{2i} \\ x_{2i+1} \end{pmatrix}

    Rotations compose, so R_i^T R_j = R_{j-i} and the score q_i . k_j = q^T R_{j-i} k depends on
    the positions only through i - j. Applied to queries and keys (not values) inside attention.

    ====== ==============================
    x      (..., L, d), d even, e.g. (N, h, L, d)
    output (..., L, d)
    ====== ==============================
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        _check_positive(head_dim=head_dim)
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head_dim, got {head_dim}")
        self.head_dim = head_dim
        self.base = base
        exponents = torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim  # 2i / d
        inverse_frequencies = base ** (-exponents)  # theta_i
        self.register_buffer("inverse_frequencies", inverse_frequencies, persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        length = x.size(-2)
        positions = torch.arange(offset, offset + length, device=x.device, dtype=torch.float32)
        angles = positions[:, None] * self.inverse_frequencies  # (L, d/2)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        pairs = x.unflatten(-1, (self.head_dim // 2, 2))  # (..., L, d/2, 2)
        even, odd = pairs[..., 0], pairs[..., 1]  # (..., L, d/2) each
        rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
        return rotated.flatten(-2)  # (..., L, d)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base}"
