"""Cells: parity with torch.nn cells, every variant against its equation written out, gradcheck."""

import pytest
import torch
from torch import nn

from seqlab.nn import GRUCell, LSTMCell, RNNCell

N, H_IN, H = 3, 4, 5


def sigmoid(x):
    return 1 / (1 + torch.exp(-x))


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_rnn_cell_matches_torch(nonlinearity, bias):
    reference = nn.RNNCell(H_IN, H, bias=bias, nonlinearity=nonlinearity)
    cell = RNNCell(H_IN, H, bias=bias, nonlinearity=nonlinearity)
    cell.load_state_dict(reference.state_dict())
    x, h = torch.randn(N, H_IN), torch.randn(N, H)
    torch.testing.assert_close(cell(x, h), reference(x, h))
    torch.testing.assert_close(cell(x), reference(x))
    torch.testing.assert_close(cell(x[0], h[0]), reference(x[0], h[0]))  # unbatched


@pytest.mark.parametrize("bias", [True, False])
def test_lstm_cell_matches_torch(bias):
    reference = nn.LSTMCell(H_IN, H, bias=bias)
    cell = LSTMCell(H_IN, H, bias=bias)
    cell.load_state_dict(reference.state_dict())
    x, h, c = torch.randn(N, H_IN), torch.randn(N, H), torch.randn(N, H)
    for ours, theirs in zip(cell(x, (h, c)), reference(x, (h, c))):
        torch.testing.assert_close(ours, theirs)
    for ours, theirs in zip(cell(x[1], (h[1], c[1])), reference(x[1], (h[1], c[1]))):
        torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("bias", [True, False])
def test_gru_cell_matches_torch(bias):
    reference = nn.GRUCell(H_IN, H, bias=bias)
    cell = GRUCell(H_IN, H, bias=bias)
    cell.load_state_dict(reference.state_dict())
    x, h = torch.randn(N, H_IN), torch.randn(N, H)
    torch.testing.assert_close(cell(x, h), reference(x, h))


def lstm_equations(cell, x, h, c):
    """The LSTM of the docstring, one gate at a time, peepholes and coupling included."""
    w_ih, w_hh, b_ih, b_hh = cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh

    def pre(k):  # pre-activation of the k-th stored gate
        rows = slice(k * H, (k + 1) * H)
        return x @ w_ih[rows].T + b_ih[rows] + h @ w_hh[rows].T + b_hh[rows]

    if cell.coupled:
        f_pre, g_pre, o_pre = pre(0), pre(1), pre(2)
    else:
        i_pre, f_pre, g_pre, o_pre = pre(0), pre(1), pre(2), pre(3)
    if cell.peephole:
        if cell.coupled:
            w_cf, w_co = cell.weight_ch[:H], cell.weight_ch[H:]
        else:
            w_ci, w_cf, w_co = cell.weight_ch[:H], cell.weight_ch[H:2 * H], cell.weight_ch[2 * H:]
            i_pre = i_pre + w_ci * c
        f_pre = f_pre + w_cf * c
    f = sigmoid(f_pre)
    i = 1 - f if cell.coupled else sigmoid(i_pre)
    c_new = f * c + i * torch.tanh(g_pre)
    if cell.peephole:
        o_pre = o_pre + w_co * c_new
    h_new = sigmoid(o_pre) * torch.tanh(c_new)
    return h_new, c_new


@pytest.mark.parametrize("peephole,coupled", [(True, False), (False, True), (True, True)])
def test_lstm_variants_follow_their_equations(peephole, coupled):
    cell = LSTMCell(H_IN, H, peephole=peephole, coupled=coupled)
    gates = 3 if coupled else 4
    assert cell.weight_ih.shape == (gates * H, H_IN)
    if peephole:
        assert cell.weight_ch.shape == ((2 if coupled else 3) * H,)
    x, h, c = torch.randn(N, H_IN), torch.randn(N, H), torch.randn(N, H)
    expected = lstm_equations(cell, x, h, c)
    for ours, theirs in zip(cell(x, (h, c)), expected):
        torch.testing.assert_close(ours, theirs)


def test_coupled_lstm_input_gate_is_one_minus_forget():
    # With g saturated to 1 and c = 0, c' = i = 1 - f: read the input gate straight off the cell.
    cell = LSTMCell(1, 1, coupled=True)
    with torch.no_grad():
        cell.weight_hh.zero_()
        cell.bias_hh.zero_()
        cell.weight_ih.copy_(torch.tensor([[0.0], [0.0], [0.0]]))
        cell.bias_ih.copy_(torch.tensor([0.7, 50.0, 0.0]))  # f, g, o
    _, c = cell(torch.zeros(1, 1), (torch.zeros(1, 1), torch.zeros(1, 1)))
    torch.testing.assert_close(c, 1 - torch.sigmoid(torch.tensor([[0.7]])))


def test_gru_reset_before_follows_cho_et_al():
    cell = GRUCell(H_IN, H, reset_after=False)
    x, h = torch.randn(N, H_IN), torch.randn(N, H)
    w_ir, w_iz, w_in = cell.weight_ih.chunk(3)
    w_hr, w_hz, w_hn = cell.weight_hh.chunk(3)
    b_ir, b_iz, b_in = cell.bias_ih.chunk(3)
    b_hr, b_hz, b_hn = cell.bias_hh.chunk(3)
    r = sigmoid(x @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
    z = sigmoid(x @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
    n = torch.tanh(x @ w_in.T + b_in + (r * h) @ w_hn.T + b_hn)
    torch.testing.assert_close(cell(x, h), (1 - z) * n + z * h)
    # and the two forms really differ
    other = GRUCell(H_IN, H, reset_after=True)
    other.load_state_dict(cell.state_dict())
    assert (other(x, h) - cell(x, h)).abs().max() > 1e-4


def test_identity_init_is_irnn():
    cell = RNNCell(H_IN, H, nonlinearity="relu", init="identity")
    torch.testing.assert_close(cell.weight_hh, torch.eye(H))
    assert cell.bias_ih.abs().sum() == 0 and cell.bias_hh.abs().sum() == 0
    assert cell.weight_ih.std() < 0.01
    # with no input the state is copied forward unchanged
    h = torch.rand(N, H)
    torch.testing.assert_close(cell(torch.zeros(N, H_IN), h), h)


@pytest.mark.parametrize("make", [
    lambda: RNNCell(3, 4, nonlinearity="tanh"),
    lambda: RNNCell(3, 4, nonlinearity="relu", init="identity"),
    lambda: LSTMCell(3, 4),
    lambda: LSTMCell(3, 4, peephole=True),
    lambda: LSTMCell(3, 4, coupled=True),
    lambda: LSTMCell(3, 4, peephole=True, coupled=True),
    lambda: GRUCell(3, 4),
    lambda: GRUCell(3, 4, reset_after=False),
], ids=["rnn", "irnn", "lstm", "peephole", "coupled", "peephole-coupled", "gru", "gru-reset-before"])
def test_cell_gradcheck(make):
    cell = make().double()
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    if isinstance(cell, LSTMCell):
        c = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x, h, c: cell(x, (h, c)), (x, h, c))
    else:
        assert torch.autograd.gradcheck(cell, (x, h))


def test_cell_errors_name_the_problem():
    with pytest.raises(ValueError, match="nonlinearity must be one of 'tanh', 'relu'; got 'sigmoid'"):
        RNNCell(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="init must be one of"):
        RNNCell(3, 4, init="orthogonal")
    with pytest.raises(ValueError, match="hidden_size must be a positive integer; got 0"):
        GRUCell(3, 0)
    with pytest.raises(ValueError, match=r"expects 3 input features .* got input of shape \(2, 5\)"):
        LSTMCell(3, 4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"expects a state of shape \(2, 4\); got \(2, 3\)"):
        GRUCell(3, 4)(torch.randn(2, 3), torch.randn(2, 3))
