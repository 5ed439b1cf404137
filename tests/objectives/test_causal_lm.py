"""The causal-LM loss against the formula written out."""

import math

import pytest
import torch

from seqlab.objectives import causal_lm_loss


def test_mean_next_token_cross_entropy_over_the_counted_targets():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7, dtype=torch.float64)
    targets = torch.tensor([[1, 2, 3, -100], [6, -100, 0, 5]])
    pairs = [(n, t) for n in range(2) for t in range(4) if targets[n, t] != -100]
    expected = -sum(math.log(torch.softmax(logits[n, t], -1)[targets[n, t]].item())
                    for n, t in pairs) / len(pairs)
    assert causal_lm_loss(logits, targets).item() == pytest.approx(expected, rel=1e-12)
    changed = logits.clone()
    changed[0, 3] += 50.0  # an ignored position does not count
    assert causal_lm_loss(changed, targets).item() == pytest.approx(expected, rel=1e-12)
