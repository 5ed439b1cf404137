"""Transformer layers and stacks: torch.nn parity, the pre- / post-norm equations by hand."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seqlab.nn.multihead import causal_mask
from seqlab.nn.transformer import (
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)

N, L, S, E, H, FF = 2, 5, 4, 8, 2, 16


def _randomize_biases(module: nn.Module) -> None:
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if "bias" in name or "norm" in name:
                parameter.normal_()


def _padding(lengths, length):
    return torch.arange(length)[None, :] >= torch.tensor(lengths)[:, None]  # True = pad


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_matches_torch(norm_first, activation):
    torch.manual_seed(0)
    reference = nn.TransformerEncoderLayer(
        E, H, FF, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    ).eval()
    _randomize_biases(reference)
    ours = TransformerEncoderLayer(
        E, H, FF, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    ).eval()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(N, L, E)
    padding = _padding([L, 3], L)
    expected = reference(x, src_key_padding_mask=padding)
    out, weights = ours(x, src_key_padding_mask=padding)
    assert weights is None
    torch.testing.assert_close(out[0], expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, :3], expected[1, :3], atol=1e-5, rtol=1e-5)
    future = ~causal_mask(L, L)
    expected = reference(x, src_mask=future, is_causal=True)
    out, _ = ours(x, is_causal=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_equations_by_hand(norm_first):
    torch.manual_seed(1)
    layer = TransformerEncoderLayer(
        E, H, FF, dropout=0.0, activation="gelu_tanh", batch_first=True, norm_first=norm_first
    ).eval()
    _randomize_biases(layer)
    x = torch.randn(N, L, E)

    def attention(y):
        return layer.self_attn(y, y, y, need_weights=False)[0]

    def ffn(y):
        hidden = F.gelu(y @ layer.linear1.weight.T + layer.linear1.bias, approximate="tanh")
        return hidden @ layer.linear2.weight.T + layer.linear2.bias

    if norm_first:
        h = x + attention(layer.norm1(x))
        expected = h + ffn(layer.norm2(h))
    else:
        h = layer.norm1(x + attention(x))
        expected = layer.norm2(h + ffn(h))
    torch.testing.assert_close(layer(x)[0], expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_torch(norm_first):
    torch.manual_seed(2)
    reference = nn.TransformerDecoderLayer(
        E, H, FF, dropout=0.0, batch_first=True, norm_first=norm_first
    ).eval()
    _randomize_biases(reference)
    ours = TransformerDecoderLayer(E, H, FF, dropout=0.0, batch_first=True, norm_first=norm_first)
    ours.load_state_dict(reference.state_dict())
    ours.eval()
    tgt, memory = torch.randn(N, L, E), torch.randn(N, S, E)
    memory_padding = _padding([S, 2], S)
    expected = reference(
        tgt, memory, tgt_mask=~causal_mask(L, L), memory_key_padding_mask=memory_padding,
        tgt_is_causal=True,
    )
    out, self_weights, cross_weights = ours(
        tgt, memory, memory_key_padding_mask=memory_padding, tgt_is_causal=True, need_weights=True
    )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(torch.triu(self_weights, diagonal=1)) == 0  # no look ahead
    assert torch.count_nonzero(cross_weights[1, :, :, 2:]) == 0  # no look at padding


def test_stacks_match_torch_and_return_every_layer_weights():
    torch.manual_seed(3)
    layer = nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, batch_first=True, norm_first=True)
    reference = nn.TransformerEncoder(
        layer, 2, norm=nn.LayerNorm(E), enable_nested_tensor=False
    ).eval()
    _randomize_biases(reference)
    ours = TransformerEncoder(
        TransformerEncoderLayer(E, H, FF, dropout=0.0, batch_first=True, norm_first=True),
        2,
        norm=nn.LayerNorm(E),
    ).eval()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(N, L, E)
    out, weights = ours(x, need_weights=True)
    torch.testing.assert_close(out, reference(x), atol=1e-5, rtol=1e-5)
    assert len(weights) == 2 and weights[0].shape == (N, H, L, L)
    torch.testing.assert_close(weights[1].sum(-1), torch.ones(N, H, L))

    decoder_reference = nn.TransformerDecoder(
        nn.TransformerDecoderLayer(E, H, FF, dropout=0.0), 2
    ).eval()
    _randomize_biases(decoder_reference)
    decoder = TransformerDecoder(TransformerDecoderLayer(E, H, FF, dropout=0.0), 2)  # (L, N, E)
    decoder.load_state_dict(decoder_reference.state_dict())
    decoder.eval()
    tgt, memory = torch.randn(L, N, E), torch.randn(S, N, E)
    expected = decoder_reference(tgt, memory, tgt_mask=~causal_mask(L, L), tgt_is_causal=True)
    out, _, _ = decoder(tgt, memory, tgt_is_causal=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_dropout_acts_only_in_training():
    torch.manual_seed(4)
    layer = TransformerEncoderLayer(E, H, FF, dropout=0.5, batch_first=True)
    x = torch.randn(N, L, E)
    assert not torch.allclose(layer(x)[0], layer(x)[0])
    layer.eval()
    torch.testing.assert_close(layer(x)[0], layer(x)[0])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="'relu', 'gelu', 'gelu_tanh'.*'swish'"):
        TransformerEncoderLayer(E, H, activation="swish")
    with pytest.raises(ValueError, match="num_layers"):
        TransformerEncoder(TransformerEncoderLayer(E, H), 0)
