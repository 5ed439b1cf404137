"""Attention modules against their equations written out, masking and gradients."""

import math

import pytest
import torch

from seqlab.nn.attention import AdditiveAttention, DotAttention, GeneralAttention, masked_softmax

N, S, HQ, HK, HV, A = 2, 5, 3, 4, 6, 7


def _inputs(dtype=torch.float32, hq=HQ, hk=HK):
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(N, hq, generator=generator, dtype=dtype)
    keys = torch.randn(N, S, hk, generator=generator, dtype=dtype)
    values = torch.randn(N, S, HV, generator=generator, dtype=dtype)
    lengths = torch.tensor([S, 3])
    mask = torch.arange(S)[None, :] < lengths[:, None]  # (N, S)
    return query, keys, values, mask, lengths


def _reference(score_fn, query, keys, values, lengths):
    """Loop over sentences and positions, softmax over the valid prefix only."""
    contexts, weights = [], []
    for n in range(query.size(0)):
        length = int(lengths[n])
        scores = [score_fn(query[n], keys[n, s]) for s in range(length)]
        exps = [math.exp(float(e)) for e in scores]
        total = sum(exps)
        row = [e / total for e in exps] + [0.0] * (keys.size(1) - length)
        weights.append(row)
        contexts.append(sum(row[s] * values[n, s] for s in range(length)))
    return torch.stack(contexts), torch.tensor(weights, dtype=query.dtype)


def _modules():
    torch.manual_seed(0)
    additive = AdditiveAttention(HQ, HK, A)
    general = GeneralAttention(HQ, HK)
    return [
        (
            additive,
            lambda q, k: (
                additive.v
                @ torch.tanh(additive.query_proj.weight @ q + additive.key_proj.weight @ k)
            ),
            HQ,
        ),
        (general, lambda q, k: q @ general.weight @ k, HQ),
        (DotAttention(), lambda q, k: q @ k, HK),
    ]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["additive", "general", "dot"])
def test_matches_equation(index):
    module, score_fn, hq = _modules()[index]
    query, keys, values, mask, lengths = _inputs(hq=hq)
    with torch.no_grad():
        context, weights = module(query, keys, values, mask)
        expected_context, expected_weights = _reference(score_fn, query, keys, values, lengths)
    torch.testing.assert_close(weights, expected_weights, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(context, expected_context, rtol=1e-5, atol=1e-6)
    assert torch.all(weights[~mask] == 0.0)  # exactly zero, not just small


@pytest.mark.parametrize("index", [0, 1, 2], ids=["additive", "general", "dot"])
def test_padding_does_not_change_context(index):
    module, _, hq = _modules()[index]
    query, keys, values, _, _ = _inputs(hq=hq)
    mask = torch.ones(N, S, dtype=torch.bool)
    # Append 4 padding positions filled with large garbage: the result must not move.
    garbage_keys = torch.cat([keys, 100 * torch.randn(N, 4, keys.size(-1))], dim=1)
    garbage_values = torch.cat([values, 100 * torch.randn(N, 4, HV)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(N, 4, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        context, weights = module(query, keys, values, mask)
        padded_context, padded_weights = module(query, garbage_keys, garbage_values, padded_mask)
    torch.testing.assert_close(padded_context, context)
    torch.testing.assert_close(padded_weights[:, :S], weights)
    assert torch.all(padded_weights[:, S:] == 0.0)


@pytest.mark.parametrize("index", [0, 1, 2], ids=["additive", "general", "dot"])
def test_many_queries_equal_one_at_a_time(index):
    module, _, hq = _modules()[index]
    _, keys, values, mask, _ = _inputs(hq=hq)
    queries = torch.randn(N, 3, hq, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        context, weights = module(queries, keys, values, mask)  # (N, 3, Hv), (N, 3, S)
        projected = module.project_keys(keys)
        for t in range(3):
            one_context, one_weights = module(queries[:, t], keys, values, mask, projected)
            torch.testing.assert_close(context[:, t], one_context)
            torch.testing.assert_close(weights[:, t], one_weights)


@pytest.mark.parametrize("index", [0, 1, 2], ids=["additive", "general", "dot"])
def test_gradcheck_float64(index):
    module, _, hq = _modules()[index]
    module = module.double()
    query, keys, values, mask, _ = _inputs(dtype=torch.float64, hq=hq)
    inputs = tuple(t.clone().requires_grad_(True) for t in (query, keys, values))
    assert torch.autograd.gradcheck(
        lambda q, k, v: module(q, k, v, mask), inputs, eps=1e-6, atol=1e-5
    )


def test_fully_masked_row_gives_zero_weights_and_finite_gradient():
    scores = torch.randn(2, 1, 3, requires_grad=True)
    mask = torch.tensor([[True, False, False], [False, False, False]])
    weights = masked_softmax(scores, mask)
    assert torch.equal(weights[0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(weights[1], torch.zeros(1, 3))
    weights.sum().backward()
    assert torch.isfinite(scores.grad).all()


def test_dot_attention_rejects_mismatched_sizes():
    query, keys, values, mask, _ = _inputs(hq=3, hk=4)
    with pytest.raises(ValueError, match="query size == key size, got 3 and 4"):
        DotAttention()(query, keys, values, mask)


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="attention_size must be a positive integer, got 0"):
        AdditiveAttention(3, 4, 0)
