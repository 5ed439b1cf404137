"""Recorded diagnostics of the visible loop: gate means and ‖∂loss/∂h_t‖ against autograd."""

import pytest
import torch

from seqlab.nn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from seqlab.nn.scan import record_scans

L, N, H_IN, H = 7, 3, 4, 5

CASES = {
    "rnn": (lambda: RNN(H_IN, H, fused=False), RNNCell),
    "lstm-peephole": (lambda: LSTM(H_IN, H, peephole=True), lambda i, h: LSTMCell(i, h, peephole=True)),
    "gru": (lambda: GRU(H_IN, H, fused=False), GRUCell),
    "gru-reset-before": (lambda: GRU(H_IN, H, reset_after=False),
                         lambda i, h: GRUCell(i, h, reset_after=False)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_recorded_state_gradients_match_autograd(case):
    torch.manual_seed(0)
    make_layer, make_cell = CASES[case]
    layer = make_layer()
    cell = make_cell(H_IN, H)
    cell.load_state_dict({name: getattr(layer, f"{name}_l0") for name, _ in cell.named_parameters()})
    x = torch.randn(L, N, H_IN)
    weights = torch.randn(L, N, H)

    with record_scans() as recorder:
        output, _ = layer(x)
        (output * weights).sum().backward()
    (record,) = recorder.records

    state, states = None, []
    for t in range(L):
        state = cell(x[t], state)
        h = state[0] if isinstance(state, tuple) else state
        h.retain_grad()
        states.append(h)
    sum((h * w).sum() for h, w in zip(states, weights)).backward()
    expected = torch.stack([h.grad.norm(dim=-1).mean() for h in states])
    torch.testing.assert_close(record.state_gradient_norms, expected)

    # gate means: the LSTM/GRU gates written out from the cell's own equations
    gates = record.gates
    assert gates.shape == (L, {"rnn": 1, "lstm-peephole": 4}.get(case, 3))
    if case == "rnn":
        torch.testing.assert_close(gates[:, 0], torch.stack([h.mean() for h in states]).detach())
    assert ((gates >= -1) & (gates <= 1)).all()


def test_nothing_is_recorded_outside_the_block():
    layer = LSTM(H_IN, H, peephole=True)
    with record_scans() as recorder:
        pass
    layer(torch.randn(L, N, H_IN))[0].sum().backward()
    assert recorder.records == []
