"""Contrastive learning of sentence vectors with in-batch negatives (InfoNCE).

van den Oord et al. (2018) "Representation Learning with Contrastive Predictive Coding";
Gao et al. (2021) "SimCSE": the positive of a sentence is the same sentence passed through the
encoder a second time with another dropout mask (unsupervised), or a paired sentence such as its
translation (supervised); every other sentence of the batch is a negative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["in_batch_accuracy", "info_nce", "similarity_logits"]


def similarity_logits(
    anchors: torch.Tensor, positives: torch.Tensor, temperature: float
) -> torch.Tensor:
    """(N, N) cosine similarities of every anchor to every candidate, divided by τ."""
    if anchors.shape != positives.shape or anchors.dim() != 2:
        raise ValueError(
            f"anchors and positives should both be (N, H), got {tuple(anchors.shape)} and "
            f"{tuple(positives.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature should be > 0, got {temperature!r}")
    a = F.normalize(anchors, dim=-1)  # (N, H)
    p = F.normalize(positives, dim=-1)  # (N, H)
    return a @ p.T / temperature  # (N, N)


def info_nce(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    temperature: float = 0.05,
    symmetric: bool = False,
) -> torch.Tensor:
    r"""InfoNCE with in-batch negatives.

    .. math::
        \ell_i = -\log \frac{\exp(\cos(a_i, p_i) / \tau)}{\sum_{j=1}^{N} \exp(\cos(a_i, p_j) / \tau)},
        \qquad \mathcal{L} = \frac{1}{N} \sum_i \ell_i

    i.e. cross-entropy over the N candidates of each row of the similarity matrix, the right
    answer on the diagonal. ``symmetric=True`` averages it with the same loss from the positives'
    side (columns), as for pairs where neither side is the query (a sentence and its translation).
    τ = 0.05 is SimCSE's.

    ========== ==========================================
    anchors    (N, H) sentence vectors
    positives  (N, H) the positive of each anchor, row by row
    returns    scalar loss
    ========== ==========================================
    """
    logits = similarity_logits(anchors, positives, temperature)  # (N, N)
    labels = torch.arange(logits.size(0), device=logits.device)  # (N,)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T, labels)) / 2
    return loss


def in_batch_accuracy(anchors: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Share of anchors whose most similar candidate in the batch is their own positive."""
    logits = similarity_logits(anchors, positives, 1.0)  # (N, N)
    labels = torch.arange(logits.size(0), device=logits.device)
    return (logits.argmax(dim=-1) == labels).float().mean()
