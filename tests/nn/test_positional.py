"""Positional encodings: the sinusoid formula, learned tables, rotary's relative property."""

import math

import pytest
import torch

from seqlab.nn.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
)


@pytest.mark.parametrize("embedding_dim", [6, 7])
def test_sinusoidal_matches_the_paper_formula(embedding_dim):
    encoding = SinusoidalPositionalEncoding(embedding_dim, max_length=20)
    x = torch.zeros(1, 9, embedding_dim)
    table = encoding(x, offset=3)[0]
    for row, position in enumerate(range(3, 12)):
        for i in range(embedding_dim):
            angle = position / 10000 ** (2 * (i // 2) / embedding_dim)
            expected = math.sin(angle) if i % 2 == 0 else math.cos(angle)
            assert abs(float(table[row, i]) - expected) < 1e-6


def test_sinusoidal_scale_and_add():
    encoding = SinusoidalPositionalEncoding(4, max_length=8, scale=2.0)
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(encoding(x), 2.0 * x + encoding(torch.zeros(1, 5, 4)))
    assert "table" not in encoding.state_dict()


def test_learned_adds_the_rows_of_its_table():
    torch.manual_seed(0)
    embedding = LearnedPositionalEmbedding(4, max_length=10)
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(embedding(x, offset=5), x + embedding.embedding.weight[5:8])


def test_positions_past_max_length_are_an_error():
    with pytest.raises(ValueError, match="max_length=4"):
        LearnedPositionalEmbedding(4, max_length=4)(torch.zeros(1, 3, 4), offset=2)
    with pytest.raises(ValueError, match="max_length=4"):
        SinusoidalPositionalEncoding(4, max_length=4)(torch.zeros(1, 5, 4))


def test_rotary_scores_depend_only_on_the_offset():
    rotary = RotaryEmbedding(8)
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(8, generator=generator), torch.randn(8, generator=generator)

    def score(i, j):
        q_i = rotary(q.view(1, 1, 8), offset=i)[0, 0]
        k_j = rotary(k.view(1, 1, 8), offset=j)[0, 0]
        return float(q_i @ k_j)

    for i, j in [(0, 0), (3, 1), (7, 2), (5, 9)]:
        for shift in (1, 4, 11):
            assert abs(score(i, j) - score(i + shift, j + shift)) < 1e-4
    assert abs(score(3, 1) - score(1, 3)) > 1e-3  # but it does see the direction of the offset


def test_rotary_is_a_rotation_per_pair_and_offsets_agree():
    rotary = RotaryEmbedding(6, base=100.0)
    x = torch.randn(2, 3, 5, 6)
    y = rotary(x)
    pair_norms = lambda t: t.unflatten(-1, (3, 2)).norm(dim=-1)
    torch.testing.assert_close(pair_norms(y), pair_norms(x))
    torch.testing.assert_close(y[..., 2:, :], rotary(x[..., 2:, :], offset=2))
    # Position t, pair i: angle t * 100^(-2i/6), written out for one entry.
    angle = 4 * 100 ** (-2 * 1 / 6)
    even, odd = x[0, 0, 4, 2], x[0, 0, 4, 3]
    expected = even * math.cos(angle) - odd * math.sin(angle)
    assert abs(float(y[0, 0, 4, 2] - expected)) < 1e-5
    with pytest.raises(ValueError, match="even head_dim"):
        RotaryEmbedding(5)
