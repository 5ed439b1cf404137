"""InfoNCE against the formula written out with loops."""

import math

import pytest
import torch

from seqlab.objectives import in_batch_accuracy, info_nce


def _by_hand(anchors, positives, temperature, columns=False):
    a = [v / v.norm() for v in anchors]
    p = [v / v.norm() for v in positives]
    n = len(a)
    total = 0.0
    for i in range(n):
        if columns:  # the positive asks which anchor is its own
            scores = [float(p[i] @ a[j]) / temperature for j in range(n)]
        else:
            scores = [float(a[i] @ p[j]) / temperature for j in range(n)]
        total += -scores[i] + math.log(sum(math.exp(s) for s in scores))
    return total / n


def test_info_nce_equals_the_formula():
    torch.manual_seed(0)
    anchors, positives = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    for temperature in (0.05, 0.5, 1.0):
        assert info_nce(anchors, positives, temperature).item() == pytest.approx(
            _by_hand(anchors, positives, temperature), rel=1e-9)


def test_symmetric_is_the_mean_of_both_directions():
    torch.manual_seed(1)
    anchors, positives = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    expected = (_by_hand(anchors, positives, 0.1) + _by_hand(anchors, positives, 0.1, columns=True)) / 2
    assert info_nce(anchors, positives, 0.1, symmetric=True).item() == pytest.approx(expected, rel=1e-9)
    # symmetric: swapping the two sides changes nothing
    assert info_nce(positives, anchors, 0.1, symmetric=True).item() == pytest.approx(expected, rel=1e-9)


def test_cosine_ignores_vector_length_and_accuracy_counts_the_diagonal():
    torch.manual_seed(2)
    anchors = torch.randn(8, 16)
    positives = anchors + 0.01 * torch.randn(8, 16)
    scaled = info_nce(anchors * 3.0, positives * 0.5, 0.05)
    assert scaled.item() == pytest.approx(info_nce(anchors, positives, 0.05).item(), rel=1e-5)
    assert in_batch_accuracy(anchors, positives).item() == 1.0
    assert in_batch_accuracy(anchors, positives.roll(1, dims=0)).item() == 0.0


def test_gradient_pulls_pairs_together():
    torch.manual_seed(3)
    anchors = torch.randn(4, 8, requires_grad=True)
    positives = torch.randn(4, 8)
    info_nce(anchors, positives, 0.1).backward()
    step = anchors - 0.1 * anchors.grad
    before = torch.cosine_similarity(anchors, positives).sum()
    after = torch.cosine_similarity(step, positives).sum()
    assert after > before


def test_bad_shapes_and_temperature_are_errors():
    with pytest.raises(ValueError, match="both be"):
        info_nce(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.randn(3, 4), torch.randn(3, 4), temperature=0)
