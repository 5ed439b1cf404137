"""Recurrent layers: torch.nn parity, variants, lengths and packing, merge modes, gradcheck, errors."""

import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqlab.nn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

L, N, H_IN, H = 6, 3, 4, 5
LENGTHS = torch.tensor([6, 2, 4])


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def first(state):
    return state[0] if isinstance(state, tuple) else state


def assert_states_close(ours, theirs):
    if isinstance(theirs, tuple):
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b)
    else:
        torch.testing.assert_close(ours, theirs)


def torch_and_ours(mode, fused, **options):
    reference = getattr(nn, mode)(H_IN, H, **options)
    ours = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}[mode](H_IN, H, fused=fused, **options)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


PLAIN = [
    {"mode": mode, "num_layers": layers, "bidirectional": bidirectional,
     "batch_first": batch_first}
    for mode, layers, bidirectional, batch_first in itertools.product(
        ["RNN", "LSTM", "GRU"], [1, 2], [False, True], [False, True])
]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "loop"])
@pytest.mark.parametrize("config", PLAIN, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_plain_layers_match_torch(config, fused):
    config = dict(config)
    mode = config.pop("mode")
    reference, ours = torch_and_ours(mode, fused, **config)
    batch_first = config["batch_first"]
    x = torch.randn(N, L, H_IN) if batch_first else torch.randn(L, N, H_IN)
    x.requires_grad_(True)

    expected, expected_state = reference(x)
    output, state = ours(x)
    torch.testing.assert_close(output, expected)
    assert_states_close(state, expected_state)

    # gradients agree too, for the input and for every parameter
    (expected.square().sum() + first(expected_state).sum()).backward()
    grad_x = x.grad.clone()
    expected_grads = [p.grad.clone() for p in reference.parameters()]
    x.grad = None
    (output.square().sum() + first(state).sum()).backward()
    torch.testing.assert_close(x.grad, grad_x)
    for name, (ours_p, theirs_grad) in zip(dict(ours.named_parameters()),
                                           zip(ours.parameters(), expected_grads)):
        torch.testing.assert_close(ours_p.grad, theirs_grad, msg=name)

    # an initial state is used the same way
    hx = torch.randn(config["num_layers"] * (2 if config["bidirectional"] else 1), N, H)
    hx = (hx, torch.randn_like(hx)) if mode == "LSTM" else hx
    torch.testing.assert_close(ours(x, hx)[0], reference(x, hx)[0])

    # padded via lengths, and packed, both equal torch on the packed sequence
    packed = pack_padded_sequence(x, LENGTHS, batch_first=batch_first, enforce_sorted=False)
    expected_packed, expected_state = reference(packed)
    packed_out, packed_state = ours(packed)
    torch.testing.assert_close(packed_out.data, expected_packed.data)
    assert torch.equal(packed_out.sorted_indices, expected_packed.sorted_indices)
    assert_states_close(packed_state, expected_state)
    padded, state = ours(x, lengths=LENGTHS)
    expected_padded, _ = pad_packed_sequence(expected_packed, batch_first=batch_first,
                                             total_length=L)
    torch.testing.assert_close(padded, expected_padded)
    assert_states_close(state, expected_state)


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "loop"])
def test_unbatched_input_matches_torch(mode, fused):
    reference, ours = torch_and_ours(mode, fused, num_layers=2, bidirectional=True)
    x = torch.randn(L, H_IN)
    expected, expected_state = reference(x)
    output, state = ours(x)
    torch.testing.assert_close(output, expected)
    assert_states_close(state, expected_state)


def test_relu_rnn_matches_torch():
    reference, ours = torch_and_ours("RNN", False, nonlinearity="relu", num_layers=2)
    x = torch.randn(L, N, H_IN)
    torch.testing.assert_close(ours(x)[0], reference(x)[0])


def test_dropout_acts_between_layers_only_in_training():
    layer = LSTM(H_IN, H, num_layers=2, dropout=0.5)
    plain = LSTM(H_IN, H, num_layers=2)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(L, N, H_IN)
    layer.eval()
    torch.testing.assert_close(layer(x)[0], plain(x)[0])
    layer.train()
    assert (layer(x)[0] - plain(x)[0]).abs().max() > 1e-3


# Every variant, and the plain cells through the visible loop.
VARIANTS = {
    "rnn-tanh": lambda **kw: RNN(H_IN, H, **kw),
    "rnn-relu": lambda **kw: RNN(H_IN, H, nonlinearity="relu", **kw),
    "irnn": lambda **kw: RNN(H_IN, H, nonlinearity="relu", init="identity", **kw),
    "lstm": lambda **kw: LSTM(H_IN, H, **kw),
    "lstm-peephole": lambda **kw: LSTM(H_IN, H, peephole=True, **kw),
    "lstm-coupled": lambda **kw: LSTM(H_IN, H, coupled=True, **kw),
    "lstm-peephole-coupled": lambda **kw: LSTM(H_IN, H, peephole=True, coupled=True, **kw),
    "gru": lambda **kw: GRU(H_IN, H, **kw),
    "gru-reset-before": lambda **kw: GRU(H_IN, H, reset_after=False, **kw),
}


def matching_cell(layer, layer_index, suffix):
    """The seqlab cell holding one direction of one layer's weights."""
    input_size = layer.input_size if layer_index == 0 else layer.output_size
    if isinstance(layer, LSTM):
        cell = LSTMCell(input_size, H, peephole=layer.peephole, coupled=layer.coupled)
    elif isinstance(layer, GRU):
        cell = GRUCell(input_size, H, reset_after=layer.reset_after)
    else:
        cell = RNNCell(input_size, H, nonlinearity=layer.nonlinearity)
    state = {name: getattr(layer, f"{name}_l{layer_index}{suffix}")
             for name, _ in cell.named_parameters()}
    cell.load_state_dict(state)
    return cell


def run_cell(cell, xs, state=None):
    """Unroll a cell over xs (L, H_in) for one sequence: outputs (L, H) and final state."""
    outputs = []
    for x in xs:
        state = cell(x, state)
        outputs.append(first(state))
    return torch.stack(outputs), state


MERGES = {
    "concat": lambda a, b: torch.cat([a, b], -1),
    "sum": lambda a, b: a + b,
    "mean": lambda a, b: (a + b) / 2,
    "max": torch.maximum,
}


@pytest.mark.parametrize("merge_mode", list(MERGES))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_layer_equals_cells_unrolled_by_hand(variant, merge_mode):
    """Two bidirectional layers, variable lengths: each sequence unrolled alone with the cells.

    Outputs, final states and every gradient (input, initial state, each parameter) agree, which
    checks the layer's hand-written backward pass against autograd through the cell equations.
    """
    layer = VARIANTS[variant](num_layers=2, bidirectional=True, merge_mode=merge_mode,
                              batch_first=True, fused=False)
    is_lstm = isinstance(layer, LSTM)
    x = torch.randn(N, L, H_IN, requires_grad=True)
    h0 = torch.randn(4, N, H, requires_grad=True)
    c0 = torch.randn(4, N, H, requires_grad=True)
    output, state = layer(x, (h0, c0) if is_lstm else h0, lengths=LENGTHS)
    assert output.shape == (N, L, layer.output_size)
    weights = torch.randn_like(output)
    ((output * weights).sum() + first(state).square().sum()
     + (state[1].sum() if is_lstm else 0)).backward()

    cells = {(k, suffix): matching_cell(layer, k, suffix) for k in range(2)
             for suffix in ("", "_reverse")}
    x_ref = x.detach().clone().requires_grad_(True)
    h0_ref = h0.detach().clone().requires_grad_(True)
    c0_ref = c0.detach().clone().requires_grad_(True)
    loss = 0
    for n, length in enumerate(LENGTHS.tolist()):
        inputs = x_ref[n, :length]
        finals = []
        for k in range(2):
            initial = [(h0_ref[2 * k + d, n], c0_ref[2 * k + d, n]) if is_lstm
                       else h0_ref[2 * k + d, n] for d in range(2)]
            forward, f_state = run_cell(cells[(k, "")], inputs, initial[0])
            backward, b_state = run_cell(cells[(k, "_reverse")], inputs.flip(0), initial[1])
            inputs = MERGES[merge_mode](forward, backward.flip(0))
            finals += [f_state, b_state]
        torch.testing.assert_close(output[n, :length], inputs)
        assert output[n, length:].abs().sum() == 0
        loss = loss + (inputs * weights[n, :length]).sum()
        for k, final in enumerate(finals):
            torch.testing.assert_close(first(state)[k, n], first(final))
            loss = loss + first(final).square().sum()
            if is_lstm:
                torch.testing.assert_close(state[1][k, n], final[1])
                loss = loss + final[1].sum()
    loss.backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(h0.grad, h0_ref.grad)
    if is_lstm:
        torch.testing.assert_close(c0.grad, c0_ref.grad)
    for (k, suffix), cell in cells.items():
        for name, parameter in cell.named_parameters():
            torch.testing.assert_close(getattr(layer, f"{name}_l{k}{suffix}").grad,
                                       parameter.grad, msg=f"{name}_l{k}{suffix}")


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_does_not_change_results(variant, bidirectional):
    layer = VARIANTS[variant](bidirectional=bidirectional, batch_first=True)
    x = torch.randn(N, L, H_IN)
    output, state = layer(x, lengths=LENGTHS)
    for n, length in enumerate(LENGTHS.tolist()):
        alone, alone_state = layer(x[n:n + 1, :length])
        torch.testing.assert_close(output[n:n + 1, :length], alone)
        assert_states_close(tuple(s[:, n:n + 1] for s in state) if isinstance(state, tuple)
                            else state[:, n:n + 1], alone_state)
    # extra padding beyond the batch's longest sequence changes nothing either
    longer = torch.cat([x, torch.randn(N, 3, H_IN)], dim=1)
    padded_more, state_more = layer(longer, lengths=LENGTHS)
    torch.testing.assert_close(padded_more[:, :L], output)
    assert padded_more[:, L:].abs().sum() == 0
    assert_states_close(state_more, state)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_packed_sequence_equals_lengths(variant):
    layer = VARIANTS[variant](num_layers=2, bidirectional=True)
    x = torch.randn(L, N, H_IN)
    packed = pack_padded_sequence(x, LENGTHS, enforce_sorted=False)
    packed_out, packed_state = layer(packed)
    output, state = layer(x, lengths=LENGTHS)
    unpacked, lengths = pad_packed_sequence(packed_out, total_length=L)
    assert torch.equal(lengths, LENGTHS)
    torch.testing.assert_close(unpacked, output)
    assert_states_close(packed_state, state)


def test_merged_width_feeds_the_next_layer():
    layer = GRU(H_IN, H, num_layers=2, bidirectional=True, merge_mode="sum")
    assert layer.weight_ih_l1.shape == (3 * H, H)
    assert LSTM(H_IN, H, num_layers=2, bidirectional=True).weight_ih_l1.shape == (4 * H, 2 * H)
    assert layer(torch.randn(L, N, H_IN))[0].shape == (L, N, H)


def test_plain_layers_use_the_fused_kernel_and_variants_the_loop():
    assert LSTM(H_IN, H).has_fused_cell and GRU(H_IN, H).has_fused_cell
    assert RNN(H_IN, H, nonlinearity="relu", init="identity").has_fused_cell
    assert not LSTM(H_IN, H, peephole=True).has_fused_cell
    assert not GRU(H_IN, H, reset_after=False).has_fused_cell
    assert not LSTM(H_IN, H, fused=False).has_fused_cell


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_layer_gradcheck(variant):
    layer = VARIANTS[variant](bidirectional=True, merge_mode="sum", fused=False).double()
    x = torch.randn(4, 2, H_IN, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2])
    assert torch.autograd.gradcheck(lambda x: first(layer(x, lengths=lengths)[1]).sum()
                                    + layer(x, lengths=lengths)[0], (x,))


def test_parameter_names_follow_torch():
    names = [name for name, _ in LSTM(H_IN, H, num_layers=2, bidirectional=True,
                                      peephole=True).named_parameters()]
    assert names[:5] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                         "weight_ch_l0"]
    assert "weight_ch_l1_reverse" in names
    assert set(dict(nn.GRU(H_IN, H, 2, bidirectional=True).named_parameters())) == set(
        dict(GRU(H_IN, H, 2, bidirectional=True).named_parameters()))


@pytest.mark.parametrize("make,message", [
    (lambda: LSTM(H_IN, H, merge_mode="avg"),
     "merge_mode must be one of 'concat', 'sum', 'mean', 'max'; got 'avg'"),
    (lambda: RNN(H_IN, H, nonlinearity="gelu"), "nonlinearity must be one of 'tanh', 'relu'"),
    (lambda: RNN(H_IN, H, init="xavier"), "init must be one of 'default', 'identity'"),
    (lambda: GRU(H_IN, H, dropout=1.5), r"dropout should be a number in range \[0, 1\]; got 1.5"),
    (lambda: GRU(H_IN, H, dropout=-0.1), r"dropout should be a number in range \[0, 1\]"),
    (lambda: LSTM(H_IN, H, merge_mode="sum"), "needs bidirectional=True"),
    (lambda: GRU(H_IN, 0), "hidden_size must be a positive integer; got 0"),
    (lambda: LSTM(H_IN, H, num_layers=0), "num_layers must be a positive integer"),
])
def test_bad_arguments_raise_value_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_variant_options_belong_to_their_cell():
    with pytest.raises(TypeError, match="peephole"):
        GRU(H_IN, H, peephole=True)
    with pytest.raises(TypeError, match="coupled"):
        RNN(H_IN, H, coupled=True)


def test_single_layer_dropout_warns():
    with pytest.warns(UserWarning, match="no effect with num_layers=1"):
        LSTM(H_IN, H, dropout=0.2)


def test_bad_inputs_name_expected_and_received_shapes():
    layer = LSTM(H_IN, H, num_layers=2, batch_first=True)
    with pytest.raises(ValueError, match=r"expects a 3-D input \(N, L, H_in\).*got shape \(2, 3, 4, 5\)"):
        layer(torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"expects 4 input features .* got input of shape \(2, 3, 7\)"):
        layer(torch.randn(2, 3, 7))
    with pytest.raises(ValueError, match=r"expects h_0 of shape \(2, 2, 5\).*got \(1, 2, 5\)"):
        layer(torch.randn(2, 3, H_IN), (torch.zeros(1, 2, H), torch.zeros(1, 2, H)))
    with pytest.raises(ValueError, match="tuple"):
        layer(torch.randn(2, 3, H_IN), torch.zeros(2, 2, H))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 3\]"):
        layer(torch.randn(2, 3, H_IN), lengths=torch.tensor([4, 1]))
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        layer(torch.randn(2, 3, H_IN), lengths=torch.tensor([3, 1, 1]))
