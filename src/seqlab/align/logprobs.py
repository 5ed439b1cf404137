"""Log-probabilities of given tokens under a language model, per token and per sequence."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["entropy_from_logits", "sequence_logps", "token_logps"]


def _full_precision(logits: torch.Tensor) -> torch.Tensor:
    # bf16 / fp16 logits (autocast) lose the small differences log-probabilities are made of.
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def token_logps(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""The log-probability of each label, zero where ``mask`` is false.

    .. math:: \ell_{n,t} = m_{n,t} \, \log \mathrm{softmax}(z_{n,t})[y_{n,t}]

    ``logits`` (N, L, V) are already aligned with ``labels`` (N, L): position t scores the token
    ``labels[:, t]`` (for a language model fed ``ids``, pass ``logits[:, :-1]`` and
    ``ids[:, 1:]``). Labels outside the mask may hold anything (padding, -100). Returns (N, L).
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} are not "
                         f"aligned: logits should be labels' shape plus the vocabulary")
    if mask is None:
        mask = torch.ones_like(labels, dtype=torch.bool)
    mask = mask.bool()
    safe = labels.masked_fill(~mask, 0)  # -100 or padding must not index the vocabulary
    logps = F.log_softmax(_full_precision(logits), dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (N, L)
    return logps.masked_fill(~mask, 0.0)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    r"""Per-sequence sum of the log-probabilities of ``labels`` where ``mask`` is true.

    .. math:: \log \pi(y \mid x) = \sum_{t} m_t \log \pi(y_t \mid x, y_{<t})

    With the mask covering the completion only, prompt and padding tokens never count. Shapes:
    ``logits`` (N, L, V) aligned with ``labels`` (N, L), ``mask`` (N, L) bool; returns (N,).
    """
    return token_logps(logits, labels, mask).sum(dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    r"""Entropy of each position's next-token distribution, :math:`H = -\sum_v p_v \log p_v`.

    ``logits`` (..., V) -> (...).
    """
    logps = F.log_softmax(_full_precision(logits), dim=-1)
    return -(logps.exp() * logps).sum(dim=-1)
