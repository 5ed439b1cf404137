"""Causal language modelling: predict each next token from the ones before it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["causal_lm_loss"]


def causal_lm_loss(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    r"""Mean next-token cross-entropy over the targets that are not ``ignore_index``.

    .. math::
        \mathcal{L} = -\frac{1}{|T|} \sum_{(n, t) \in T} \log \mathrm{softmax}(z_{n,t})[y_{n,t}]

    ``logits`` (N, L, V) are already aligned with ``targets`` (N, L): position t holds the
    prediction of the token at t + 1 of the input, as the language-model tasks lay them out.
    """
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),  # (N * L, V)
        targets.reshape(-1),  # (N * L,)
        ignore_index=ignore_index,
    )
