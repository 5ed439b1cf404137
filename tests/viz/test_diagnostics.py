"""Diagnostics: ‖∂L/∂h_t‖ and gate means against a loop written out with torch cells; plots; runs."""

import json

import pytest
import torch
from torch import nn

from seqlab.nn import LSTM, RNN
from seqlab.viz.diagnostics import (
    Diagnostics,
    collect_diagnostics,
    plot_gate_activity,
    plot_grad_norm_history,
    plot_gradient_flow,
)


class LastStep(nn.Module):
    """A recurrent layer read at the last step: loss = Σ_n w · h_T(n)."""

    def __init__(self, layer, hidden_size):
        super().__init__()
        self.layer = layer
        self.head = nn.Parameter(torch.randn(hidden_size, dtype=torch.float64))

    def forward(self, x):
        output, _ = self.layer(x)
        return (output[:, -1] @ self.head).sum()


def reference_rnn_norms(layer, x, head):
    """‖∂L/∂h_t‖ (mean over the batch) with torch.nn.RNNCell and retain_grad on each h_t."""
    cell = nn.RNNCell(layer.input_size, layer.hidden_size, dtype=torch.float64)
    cell.load_state_dict({"weight_ih": layer.weight_ih_l0, "weight_hh": layer.weight_hh_l0,
                          "bias_ih": layer.bias_ih_l0, "bias_hh": layer.bias_hh_l0})
    h = torch.zeros(x.size(0), layer.hidden_size, dtype=torch.float64)
    states = []
    for t in range(x.size(1)):
        h = cell(x[:, t], h)
        h.retain_grad()
        states.append(h)
    (states[-1] @ head).sum().backward()
    return [float(s.grad.norm(dim=-1).mean()) for s in states]


def test_state_gradient_norms_match_backprop_through_the_written_out_loop():
    torch.manual_seed(0)
    layer = RNN(3, 5, batch_first=True, dtype=torch.float64)
    model = LastStep(layer, 5)
    x = torch.randn(4, 12, 3, dtype=torch.float64)
    result = collect_diagnostics(model, lambda: model(x))
    expected = reference_rnn_norms(layer, x, model.head.detach())
    assert list(result.gradient_norms) == ["layer 0"]
    assert result.gradient_norms["layer 0"] == pytest.approx(expected, rel=1e-9)
    assert result.loss == pytest.approx(float(model(x).detach()))


def test_lstm_gate_means_follow_the_equations_and_state_is_restored():
    torch.manual_seed(1)
    layer = LSTM(2, 4, batch_first=True, dtype=torch.float64)
    model = LastStep(layer, 4).train()
    x = torch.randn(3, 6, 2, dtype=torch.float64)
    result = collect_diagnostics(model, lambda: model(x))
    # i, f, g, o by hand: gates = W_ih x + b_ih + W_hh h + b_hh
    h = torch.zeros(3, 4, dtype=torch.float64)
    c = torch.zeros_like(h)
    expected = {name: [] for name in "ifgo"}
    with torch.no_grad():
        for t in range(6):
            gates = x[:, t] @ layer.weight_ih_l0.t() + layer.bias_ih_l0 + h @ layer.weight_hh_l0.t() + layer.bias_hh_l0
            i, f, g, o = gates.chunk(4, dim=-1)
            i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
            c = f * c + i * g
            h = o * c.tanh()
            for name, value in zip("ifgo", (i, f, g, o)):
                expected[name].append(float(value.mean()))
    for name in "ifgo":
        assert result.gates["layer 0"][name] == pytest.approx(expected[name], rel=1e-9)
    # Everything is as before: fused path, training mode, no gradients left behind.
    assert layer.fused is True and model.training
    assert all(p.grad is None for p in model.parameters())


def test_bidirectional_reverse_run_is_reported_in_time_order():
    torch.manual_seed(2)
    layer = RNN(2, 3, batch_first=True, bidirectional=True, dtype=torch.float64)

    class First(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            output, _ = self.layer(x)
            return output[:, 0].sum()  # read at the first step

    model = First()
    x = torch.randn(2, 7, 2, dtype=torch.float64)
    result = collect_diagnostics(model, lambda: model(x))
    forward, backward = result.gradient_norms["layer 0"], result.gradient_norms["layer 0 reverse"]
    # Read at t = 1: the forward run gets gradient only at t = 1; the reverse run, which ends at
    # t = 1, gets it at every step, falling off towards t = 7.
    assert forward[0] > 0 and all(v == 0 for v in forward[1:])
    assert all(v > 0 for v in backward)
    assert backward[0] > backward[-1]


def test_a_model_without_recurrent_layers_is_a_value_error():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="no seqlab.nn RNN / LSTM / GRU"):
        collect_diagnostics(model, lambda: model(torch.zeros(1, 2)).sum())


def test_plots_are_written(tmp_path):
    diagnostics = Diagnostics(1.0, {"layer 0": [1e-3, 1e-2, 1.0]}, {"layer 0": {"f": [0.5, 0.6, 0.7]}})
    again = Diagnostics.from_dict(json.loads(json.dumps(diagnostics.to_dict())))
    assert again == diagnostics
    records = [{"step": s, "split": "train", "grad_norm": g, "metrics": {"loss": 1.0}}
               for s, g in ((10, 0.5), (20, 7.0), (30, 2.0))]
    paths = [plot_gradient_flow(diagnostics.gradient_norms, tmp_path / "a.png"),
             plot_gate_activity(diagnostics.gates, tmp_path / "b.png"),
             plot_grad_norm_history(records, tmp_path / "c.png", clip_grad_norm=1.0)]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in paths)


TINY_ADDING = ["data.length=6", "data.train_size=32", "data.valid_size=8", "data.test_size=8",
               "model.hidden_size=3", "trainer.epochs=1", "trainer.batch_size=8", "trainer.log_every=1",
               "trainer.progress=false", "trainer.clip_grad_norm=0.5"]


def test_a_run_with_diagnostics_trains_exactly_like_one_without(tmp_path):
    from seqlab.train.config import load_config
    from seqlab.train.reporting import read_metrics
    from seqlab.train.run import train

    runs = {}
    for flag in ("false", "true"):
        config = load_config("adding-lstm", TINY_ADDING + [f"trainer.diagnostics={flag}"])
        runs[flag] = train(config, tmp_path / flag)
    plain, diagnosed = (read_metrics(tmp_path / name / "metrics.jsonl") for name in ("false", "true"))
    strip = [[{k: v for k, v in r.items() if k != "elapsed"} for r in records] for records in (plain, diagnosed)]
    assert strip[0] == strip[1]
    stages = json.loads((tmp_path / "true" / "diagnostics.json").read_text())
    assert set(stages) == {"init", "final"}
    assert len(stages["final"]["gradient_norms"]["layer 0"]) == 6
    assert set(stages["final"]["gates"]["layer 0"]) == {"i", "f", "g", "o"}
    for name in ("gradient_flow.png", "gates.png", "grad_norm.png"):
        assert (tmp_path / "true" / "plots" / name).is_file()
        assert not (tmp_path / "false" / "plots" / name).exists()
