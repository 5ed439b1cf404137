"""Scaled dot-product and multi-head attention: the formula, math vs fast path, torch parity."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seqlab.decode.kv_cache import LayerKVCache
from seqlab.nn.multihead import MultiheadAttention, causal_mask, scaled_dot_product_attention

N, H, L, S, D, E = 2, 3, 4, 6, 5, 12


def _qkv(dtype=torch.float32, query_length=L, key_length=S):
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(N, H, query_length, D, generator=generator, dtype=dtype)
    k = torch.randn(N, H, key_length, D, generator=generator, dtype=dtype)
    v = torch.randn(N, H, key_length, D, generator=generator, dtype=dtype)
    return q, k, v


def _padding(lengths=(S, 3), length=S):
    return torch.arange(length)[None, :] >= torch.tensor(lengths)[:, None]  # (N, S) True = pad


def test_formula_written_out():
    q, k, v = _qkv(torch.float64)
    allowed = ~_padding()[:, None, None, :]  # (N, 1, 1, S)
    out, weights = scaled_dot_product_attention(q, k, v, attn_mask=allowed, need_weights=True)
    for n in range(N):
        valid = S if n == 0 else 3
        for h in range(H):
            for i in range(L):
                scores = [float(q[n, h, i] @ k[n, h, j]) / math.sqrt(D) for j in range(valid)]
                exps = [math.exp(s) for s in scores]
                expected = [e / sum(exps) for e in exps] + [0.0] * (S - valid)
                torch.testing.assert_close(weights[n, h, i], torch.tensor(expected, dtype=q.dtype))
                context = sum(expected[j] * v[n, h, j] for j in range(S))
                torch.testing.assert_close(out[n, h, i], context)


@pytest.mark.parametrize("case", ["none", "bool", "float", "causal", "causal_cache", "both"])
def test_math_path_equals_fast_path_and_torch(case):
    query_length = 1 if case == "causal_cache" else L
    q, k, v = _qkv(query_length=query_length)
    mask, is_causal = None, case.startswith("causal")
    if case in ("bool", "both"):
        mask = ~_padding()[:, None, None, :]
    if case == "float":
        mask = torch.randn(N, 1, L, S, generator=torch.Generator().manual_seed(1))
    if case == "both":
        is_causal = True
    fast, none = scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
    slow, weights = scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=is_causal, need_weights=True
    )
    assert none is None
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(N, H, query_length))
    reference_mask = mask
    if is_causal:
        reference_mask = causal_mask(query_length, S) if mask is None else mask & causal_mask(L, S)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=reference_mask)
    torch.testing.assert_close(slow, reference, atol=1e-6, rtol=1e-5)


def test_causal_mask_is_bottom_right_aligned():
    expected = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(causal_mask(2, 4), expected)
    assert torch.equal(causal_mask(3, 3), torch.ones(3, 3).tril().bool())


def test_query_seeing_no_key_gets_zero_output_on_math_path():
    q, k, v = _qkv()
    nothing = torch.zeros(N, 1, L, S, dtype=torch.bool)
    out, weights = scaled_dot_product_attention(q, k, v, attn_mask=nothing, need_weights=True)
    assert torch.count_nonzero(out) == 0 and torch.count_nonzero(weights) == 0


def test_gradcheck_float64():
    q, k, v = (x.requires_grad_() for x in _qkv(torch.float64, query_length=3, key_length=4))
    allowed = torch.tensor([[True] * 4, [True, True, False, False]])[:, None, None, :]

    def math_path(q, k, v):
        return scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, is_causal=True, need_weights=True
        )[0]

    def fast_path(q, k, v):
        return scaled_dot_product_attention(q, k, v, attn_mask=allowed, is_causal=True)[0]

    assert torch.autograd.gradcheck(math_path, (q, k, v))
    assert torch.autograd.gradcheck(fast_path, (q, k, v))


def _pair(batch_first, seed=0):
    torch.manual_seed(seed)
    reference = nn.MultiheadAttention(E, H, batch_first=batch_first).eval()
    with torch.no_grad():  # torch starts with zero biases; make them count
        reference.in_proj_bias.normal_()
        reference.out_proj.bias.normal_()
    ours = MultiheadAttention(E, H, batch_first=batch_first).eval()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


@pytest.mark.parametrize("batch_first", [True, False])
def test_self_attention_matches_torch_with_padding_and_causal_mask(batch_first):
    reference, ours = _pair(batch_first)
    x = torch.randn(N, S, E)
    if not batch_first:
        x = x.transpose(0, 1)  # (S, N, E)
    padding = _padding()
    future = ~causal_mask(S, S)  # torch: True = not allowed
    for average in (True, False):
        expected, expected_weights = reference(
            x, x, x, key_padding_mask=padding, attn_mask=future, average_attn_weights=average
        )
        out, weights = ours(
            x, x, x, key_padding_mask=padding, attn_mask=future, average_attn_weights=average
        )
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=1e-5)
    fast, none = ours(x, x, x, key_padding_mask=padding, is_causal=True, need_weights=False)
    assert none is None
    torch.testing.assert_close(fast, expected, atol=1e-6, rtol=1e-5)


def test_cross_attention_and_float_masks_match_torch():
    reference, ours = _pair(batch_first=True, seed=1)
    query, memory = torch.randn(N, L, E), torch.randn(N, S, E)
    float_padding = torch.zeros(N, S).masked_fill(_padding(), float("-inf"))
    bias = torch.randn(N * H, L, S)
    expected, expected_weights = reference(
        query, memory, memory, key_padding_mask=float_padding, attn_mask=bias
    )
    out, weights = ours(query, memory, memory, key_padding_mask=float_padding, attn_mask=bias)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=1e-5)


def test_projected_key_value_stands_in_for_key_and_value():
    _, ours = _pair(batch_first=False, seed=2)
    query, memory = torch.randn(L, N, E), torch.randn(S, N, E)
    padding = _padding()
    expected, _ = ours(query, memory, memory, key_padding_mask=padding)
    projected = ours.project_key_value(memory, memory)
    assert projected[0].shape == (N, H, S, E // H)
    out, _ = ours(query, None, None, key_padding_mask=padding, projected_key_value=projected)
    torch.testing.assert_close(out, expected)


def test_multihead_gradcheck_float64():
    torch.manual_seed(0)
    attention = MultiheadAttention(4, 2, batch_first=True).double()
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    padding = torch.tensor([[False, False, False], [False, False, True]])
    assert torch.autograd.gradcheck(
        lambda x: attention(x, x, x, key_padding_mask=padding, is_causal=True)[0], (x,)
    )


def test_key_value_cache_step_by_step_equals_full_pass():
    _, ours = _pair(batch_first=True)
    x = torch.randn(N, S, E)
    full, _ = ours(x, x, x, is_causal=True, need_weights=False)
    cache = LayerKVCache()
    first, _ = ours(x[:, :2], x[:, :2], x[:, :2], is_causal=True, kv_cache=cache)
    steps = [first]
    for t in range(2, S):
        token = x[:, t : t + 1]
        out, _ = ours(token, token, token, is_causal=True, kv_cache=cache, need_weights=False)
        steps.append(out)
    assert cache.length == S
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-6, rtol=1e-5)


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="embed_dim=10 and num_heads=3"):
        MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="dropout"):
        MultiheadAttention(12, 3, dropout=1.5)
