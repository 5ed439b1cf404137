"""Sampling: top-k / top-p filters on hand-made distributions, temperature, greedy, seeding."""

import math

import pytest
import torch

from seqlab.decode.sampling import filter_top_k, filter_top_p, sample_next_token


def kept(logits: torch.Tensor) -> set[int]:
    return set(torch.nonzero(torch.isfinite(logits)).flatten().tolist())


def test_filter_top_k_keeps_the_k_largest():
    logits = torch.tensor([0.3, 2.0, -1.0, 1.5, 0.9])
    assert kept(filter_top_k(logits, 1)) == {1}
    assert kept(filter_top_k(logits, 3)) == {1, 3, 4}
    assert kept(filter_top_k(logits, 5)) == {0, 1, 2, 3, 4}
    assert kept(filter_top_k(logits, 50)) == {0, 1, 2, 3, 4}  # more than V keeps everything
    filtered = filter_top_k(logits, 3)
    assert torch.equal(filtered[[1, 3, 4]], logits[[1, 3, 4]])  # kept logits untouched
    assert torch.isneginf(filtered[[0, 2]]).all()


def test_filter_top_k_keeps_ties_and_works_per_row():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [5.0, 4.0, 3.0, 2.0]])
    filtered = filter_top_k(logits, 2)
    assert kept(filtered[0]) == {1, 2}
    assert kept(filtered[1]) == {0, 1}
    assert kept(filter_top_k(logits, 1)[0]) == {1, 2}  # both tied maxima stay


def test_filter_top_p_keeps_the_smallest_nucleus():
    # probabilities 0.1, 0.5, 0.15, 0.25 (shuffled so that sorting matters)
    probs = torch.tensor([0.1, 0.5, 0.15, 0.25])
    logits = probs.log()
    assert kept(filter_top_p(logits, 0.3)) == {1}  # 0.5 alone already covers 0.3
    assert kept(filter_top_p(logits, 0.6)) == {1, 3}  # 0.5 + 0.25
    assert kept(filter_top_p(logits, 0.8)) == {1, 3, 2}  # 0.5 + 0.25 + 0.15 = 0.9
    assert kept(filter_top_p(logits, 0.95)) == {0, 1, 2, 3}
    assert kept(filter_top_p(logits, 1.0)) == {0, 1, 2, 3}
    assert kept(filter_top_p(logits, 1e-6)) == {1}  # the most likely token always stays
    filtered = filter_top_p(logits, 0.6)
    assert torch.equal(filtered[[1, 3]], logits[[1, 3]])


def test_filter_top_p_per_row_and_after_top_k():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, -10.0]])
    filtered = filter_top_p(logits, 0.6)
    assert kept(filtered[0]) == {0, 1, 2}  # uniform: 3 x 0.25 is the first sum >= 0.6
    assert kept(filtered[1]) == {0}
    both = filter_top_p(filter_top_k(torch.tensor([0.1, 0.5, 0.15, 0.25]).log(), 2), 0.6)
    # after top-k the renormalised mass is 0.5 / 0.75 = 0.667 >= 0.6, so one token remains
    assert kept(both) == {1}


def test_temperature_zero_is_argmax_and_ignores_filters():
    torch.manual_seed(0)
    logits = torch.randn(6, 9)
    expected = logits.argmax(dim=-1)
    assert torch.equal(sample_next_token(logits, temperature=0), expected)
    assert torch.equal(sample_next_token(logits, temperature=0, top_k=3, top_p=0.5), expected)
    # top_k=1 leaves only the argmax to draw, at any temperature
    assert torch.equal(sample_next_token(logits, temperature=2.0, top_k=1), expected)


def test_seeded_sampling_is_reproducible():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    draws = [
        sample_next_token(logits, temperature=0.8, top_k=20, top_p=0.9,
                          generator=torch.Generator().manual_seed(123))
        for _ in range(2)
    ]
    assert torch.equal(draws[0], draws[1])
    assert draws[0].dtype == torch.long


def test_sample_frequencies_follow_tempered_softmax():
    logits = torch.tensor([1.0, 0.0, -0.5, 2.0])
    temperature = 1.7
    many = logits.expand(40_000, 4)
    draws = sample_next_token(many, temperature=temperature,
                              generator=torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws, minlength=4).double() / draws.numel()
    exps = [math.exp(z / temperature) for z in logits.tolist()]
    expected = torch.tensor([e / sum(exps) for e in exps], dtype=torch.float64)
    assert torch.allclose(frequencies, expected, atol=0.01)


def test_filtered_tokens_are_never_drawn():
    probs = torch.tensor([0.1, 0.5, 0.15, 0.25])
    many = probs.log().expand(5000, 4)
    gen = torch.Generator().manual_seed(0)
    assert set(sample_next_token(many, top_k=2, generator=gen).tolist()) == {1, 3}
    assert set(sample_next_token(many, top_p=0.8, generator=gen).tolist()) == {1, 2, 3}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_next_token(torch.zeros(2, 5), **kwargs)


def test_filters_reject_bad_values():
    with pytest.raises(ValueError, match="top_k"):
        filter_top_k(torch.zeros(3), 0)
    with pytest.raises(ValueError, match="top_p"):
        filter_top_p(torch.zeros(3), -0.2)


def test_prompt_batch_shapes_and_errors():
    from seqlab.decode.sampling import prompt_batch

    cpu = torch.device("cpu")
    assert torch.equal(prompt_batch([3, 4], 1, cpu), torch.tensor([[3, 4]]))
    assert torch.equal(prompt_batch(torch.tensor([5]), 0, cpu), torch.tensor([[5]]))
    with pytest.raises(ValueError, match=r"P >= 1, got shape \(1, 0\)"):
        prompt_batch([], 1, cpu)
    with pytest.raises(ValueError, match=r"P >= 1, got shape \(1, 2, 3\)"):
        prompt_batch(torch.zeros(1, 2, 3, dtype=torch.long), 1, cpu)
    with pytest.raises(ValueError, match="max_new_tokens should be >= 0, got -1"):
        prompt_batch([1], -1, cpu)
