"""recurrent_layer: picks the right seqlab.nn layer, passes options through, rejects misuse."""

import warnings

import pytest
import torch

import seqlab.nn
from seqlab.models import recurrent_layer


@pytest.mark.parametrize("cell, torch_class", [("rnn", torch.nn.RNN), ("lstm", torch.nn.LSTM),
                                               ("gru", torch.nn.GRU)])
def test_plain_layer_matches_torch_batch_first(cell, torch_class):
    torch.manual_seed(0)
    layer = recurrent_layer(cell, 3, 4, num_layers=2, bidirectional=True).double()
    reference = torch_class(3, 4, num_layers=2, bidirectional=True, batch_first=True).double()
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(2, 5, 3, dtype=torch.float64)  # (N, L, H_in)
    output, state = layer(x)
    expected_output, expected_state = reference(x)
    assert layer.output_size == 8
    torch.testing.assert_close(output, expected_output)
    if cell == "lstm":
        torch.testing.assert_close(state[0], expected_state[0])
        torch.testing.assert_close(state[1], expected_state[1])
    else:
        torch.testing.assert_close(state, expected_state)


def test_options_reach_the_layer():
    irnn = recurrent_layer("rnn", 3, 4, nonlinearity="relu", init="identity")
    assert isinstance(irnn, seqlab.nn.RNN) and irnn.batch_first
    assert irnn.nonlinearity == "relu"
    torch.testing.assert_close(irnn.weight_hh_l0.detach(), torch.eye(4))
    peephole = recurrent_layer("lstm", 3, 4, peephole=True, coupled=True)
    assert isinstance(peephole, seqlab.nn.LSTM)
    assert peephole.weight_ih_l0.shape == (3 * 4, 3)  # coupled: gates f, g, o only
    assert hasattr(peephole, "weight_ch_l0")
    gru = recurrent_layer("gru", 3, 4, reset_after=False, bidirectional=True, merge_mode="sum")
    assert isinstance(gru, seqlab.nn.GRU)
    assert not gru.reset_after and gru.output_size == 4


def test_dropout_only_between_stacked_layers():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a single layer must not trigger torch's dropout warning
        single = recurrent_layer("lstm", 3, 4, dropout=0.5)
    assert single.dropout == 0.0
    assert recurrent_layer("lstm", 3, 4, num_layers=2, dropout=0.5).dropout == 0.5


def test_unknown_cell_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"'rnn', 'lstm', 'gru', 'mingru', 'minlstm', got 'transformer'"):
        recurrent_layer("transformer", 3, 4)


@pytest.mark.parametrize(
    "cell, option",
    [
        ("gru", {"peephole": True}),
        ("rnn", {"coupled": True}),
        ("lstm", {"reset_after": False}),
        ("lstm", {"nonlinearity": "relu"}),
        ("gru", {"init": "identity"}),
    ],
)
def test_option_of_another_cell_is_rejected(cell, option):
    (name,) = option
    with pytest.raises(ValueError, match=f"{name}=.* only applies to cell="):
        recurrent_layer(cell, 3, 4, **option)
