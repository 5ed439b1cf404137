"""MinGRU / MinLSTM: the parallel scan against the recurrence written out, the step, lengths, gradients."""

import math
import re
from pathlib import Path

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from seqlab.nn import MinGRU, MinLSTM
from seqlab.nn.minimal import parallel_scan, sequential_scan

CELLS = [MinGRU, MinLSTM]


def make(cls, input_size=3, hidden_size=4, seed=0, **kwargs):
    torch.manual_seed(seed)
    return cls(input_size, hidden_size, **kwargs).double()


def random(*shape, seed=1, scale=1.0):
    return scale * torch.randn(*shape, dtype=torch.float64,
                               generator=torch.Generator().manual_seed(seed))


def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def g(v):
    return v + 0.5 if v >= 0 else sigmoid(v)


def reference_loop(cls, weight, bias, x, h0, log_space=True):
    """The paper's sequential equations, unit by unit in plain Python floats.

    x is a list of L input vectors, h0 a list of H floats; returns the L states as lists.
    """
    hidden = len(h0)
    h, states = list(h0), []
    for x_t in x:
        pre = [sum(w * v for w, v in zip(row, x_t)) + b for row, b in zip(weight, bias)]
        new = []
        for j in range(hidden):
            k_h = pre[(2 if cls is MinGRU else 3) * hidden - hidden + j]
            candidate = g(k_h) if log_space else k_h
            if cls is MinGRU:
                z = sigmoid(pre[j])
                new.append((1 - z) * h[j] + z * candidate)
            else:
                f, i = sigmoid(pre[j]), sigmoid(pre[hidden + j])
                new.append(f / (f + i) * h[j] + i / (f + i) * candidate)
        h = new
        states.append(h)
    return states


@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("log_space", [True, False])
def test_parallel_scan_equals_the_recurrence_written_out(cls, log_space):
    layer = make(cls, log_space=log_space, chunk_size=4)  # 11 steps: blocks of 4, 4, 3
    x = random(11, 2, 3, scale=2.0)
    h0 = random(1, 2, 4, seed=2)
    output, h_n = layer(x, h0)
    weight, bias = layer.weight_ih_l0.tolist(), layer.bias_ih_l0.tolist()
    for n in range(2):
        expected = reference_loop(cls, weight, bias, x[:, n].tolist(), h0[0, n].tolist(), log_space)
        torch.testing.assert_close(output[:, n], torch.tensor(expected, dtype=torch.float64),
                                   rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(h_n[0, n], torch.tensor(expected[-1], dtype=torch.float64),
                                   rtol=1e-12, atol=1e-12)


def test_parallel_scan_function_equals_a_loop_with_signed_values():
    log_a = -torch.rand(37, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    values = random(37, 3, 5, seed=4)
    h0 = random(3, 5, seed=5)
    tiny = torch.finfo(torch.float64).tiny
    log_pos, log_neg = values.clamp_min(tiny).log(), (-values).clamp_min(tiny).log()
    h, expected = h0.clone(), []
    for t in range(37):
        h = log_a[t].exp() * h + values[t]
        expected.append(h)
    expected = torch.stack(expected)
    for chunk_size in (None, 1, 5, 37, 64):
        result = parallel_scan(log_a, log_pos, h0, log_neg, chunk_size=chunk_size)
        torch.testing.assert_close(result, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sequential_scan(log_a.exp(), values, h0), expected)


@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("log_space", [True, False])
@pytest.mark.parametrize("merge_mode", ["concat", "sum"])
def test_parallel_equals_sequential_with_lengths_and_initial_states(cls, log_space, merge_mode):
    layer = make(cls, num_layers=2, bidirectional=True, merge_mode=merge_mode,
                 log_space=log_space, chunk_size=5)
    x = random(17, 4, 3, scale=3.0)
    h0 = random(4, 4, 4, seed=3)
    lengths = torch.tensor([17, 9, 1, 12])
    output, h_n = layer(x, h0, lengths)
    layer.parallel = False
    expected_output, expected_h_n = layer(x, h0, lengths)
    assert (output - expected_output).abs().max() <= 1e-10
    assert (h_n - expected_h_n).abs().max() <= 1e-10
    assert torch.all(output[9:, 1] == 0) and torch.all(output[1:, 2] == 0)


@pytest.mark.parametrize("cls", CELLS)
def test_step_gives_the_outputs_of_forward(cls):
    layer = make(cls, num_layers=3, batch_first=True)
    x = random(2, 8, 3)
    h0 = random(3, 2, 4, seed=6)
    output, h_n = layer(x, h0)
    h, outputs = h0, []
    for t in range(8):
        out, h = layer.step(x[:, t], h)
        outputs.append(out)
    torch.testing.assert_close(torch.stack(outputs, dim=1), output, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, h_n, rtol=1e-12, atol=1e-12)
    out, h = layer.step(x[:, 0])  # no state: zeros
    torch.testing.assert_close(out, layer(x[:, :1])[0][:, 0])


@pytest.mark.parametrize("cls", CELLS)
def test_a_padded_sequence_gives_what_it_gives_alone(cls):
    layer = make(cls, num_layers=2, bidirectional=True)
    lengths = torch.tensor([5, 9, 2])
    x = random(9, 3, 3)
    padded = x.clone()
    for n, length in enumerate(lengths):
        padded[length:, n] = float("nan")  # nothing of the padding may leak, not even NaN
    h0 = random(4, 3, 4, seed=7)
    output, h_n = layer(padded, h0, lengths)
    for n, length in enumerate(lengths.tolist()):
        alone, alone_h_n = layer(x[:length, n:n + 1], h0[:, n:n + 1])
        torch.testing.assert_close(output[:length, n:n + 1], alone, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(h_n[:, n:n + 1], alone_h_n, rtol=1e-12, atol=1e-12)
        assert torch.all(output[length:, n] == 0)
    output.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())

    packed = pack_padded_sequence(padded, lengths, enforce_sorted=False)
    packed_output, packed_h_n = layer(packed, h0)
    torch.testing.assert_close(packed_output.data, pack_padded_sequence(
        output, lengths, enforce_sorted=False).data)
    torch.testing.assert_close(packed_h_n, h_n)


@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("log_space", [True, False])
def test_gradcheck_of_the_parallel_path(cls, log_space):
    layer = make(cls, input_size=2, hidden_size=2, bidirectional=True, log_space=log_space,
                 chunk_size=3)
    x = random(7, 2, 2, scale=2.0).requires_grad_()
    h0 = random(2, 2, 2, seed=8).requires_grad_()
    lengths = torch.tensor([7, 4])
    params = tuple(layer.parameters())

    def run(x, h0, *weights):
        state = dict(zip([name for name, _ in layer.named_parameters()], weights))
        output, h_n = torch.func.functional_call(layer, state, (x, h0, lengths))
        return output, h_n

    assert torch.autograd.gradcheck(run, (x, h0, *params), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("cls", CELLS)
def test_4096_steps_stay_finite_where_the_product_of_gates_underflows(cls):
    # Gates biased towards forgetting: a_t ≈ 0.12, so A_T = Π a_t underflows after ~350 steps.
    layer = make(cls, input_size=2, hidden_size=3, seed=3)
    with torch.no_grad():
        layer.bias_ih_l0[:3] = 2.0 if cls is MinGRU else -2.0
    x = random(4096, 2, 2, seed=9)
    with torch.no_grad():
        proj = x @ layer.weight_ih_l0.T + layer.bias_ih_l0  # (L, N, G·H)
        gates = torch.sigmoid(proj[..., :6])
        if cls is MinGRU:
            coeffs = 1 - gates[..., :3]  # 1 − z
        else:
            coeffs = gates[..., :3] / (gates[..., :3] + gates[..., 3:6])  # f / (f + i)
        # The naive form h_t = A_t (h_0 + Σ b_s / A_s) would divide by zero.
        assert torch.cumprod(coeffs, dim=0)[-1].eq(0).all()
        sequential = make(cls, input_size=2, hidden_size=3, parallel=False)
        sequential.load_state_dict(layer.state_dict())
        reference = sequential(x)[0]
    single = layer.float()
    single.chunk_size = None  # the paper's one-block scan stays finite too
    assert torch.isfinite(single(x.float())[0]).all()
    single.chunk_size = 64
    x32 = x.float().requires_grad_()
    output, h_n = single(x32)
    assert torch.isfinite(output).all() and torch.isfinite(h_n).all()
    # float32 rounds log b_s − log A_s, which grows to ~2 × 64 within a block of 64 steps.
    assert ((output.double() - reference).abs().max() / reference.abs().max()) < 1e-4
    output.square().mean().backward()
    assert torch.isfinite(x32.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in single.parameters())


@pytest.mark.parametrize("cls, gates", [(MinGRU, 2), (MinLSTM, 3)])
def test_parameters_are_named_and_laid_out_like_torch(cls, gates):
    layer = cls(5, 4, num_layers=2, bidirectional=True)
    shapes = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    assert shapes == {
        "weight_ih_l0": (gates * 4, 5), "bias_ih_l0": (gates * 4,),
        "weight_ih_l0_reverse": (gates * 4, 5), "bias_ih_l0_reverse": (gates * 4,),
        "weight_ih_l1": (gates * 4, 8), "bias_ih_l1": (gates * 4,),
        "weight_ih_l1_reverse": (gates * 4, 8), "bias_ih_l1_reverse": (gates * 4,),
    }
    assert layer.output_size == 8
    assert cls(5, 4, bidirectional=True, merge_mode="max").output_size == 4
    assert [name for name, _ in cls(5, 4, bias=False).named_parameters()] == ["weight_ih_l0"]
    bound = 1 / math.sqrt(4)
    assert all(p.abs().max() <= bound for p in layer.parameters())


@pytest.mark.parametrize("cls", CELLS)
def test_log_space_states_stay_positive_and_shapes_follow_torch(cls):
    layer = make(cls, hidden_size=4, num_layers=2, batch_first=True)
    x = random(3, 6, 3, scale=5.0)
    output, h_n = layer(x)
    assert output.shape == (3, 6, 4) and h_n.shape == (2, 3, 4)
    assert torch.all(output > 0)
    unbatched, unbatched_h_n = layer(x[0])
    torch.testing.assert_close(unbatched, output[0])
    torch.testing.assert_close(unbatched_h_n, h_n[:, 0])


@pytest.mark.parametrize("make_layer, call, message", [
    (lambda: MinGRU(3, 0), None, "hidden_size must be a positive integer; got 0"),
    (lambda: MinGRU(3, 4, dropout=1.5), None, r"dropout should be a number in range \[0, 1\]"),
    (lambda: MinLSTM(3, 4, merge_mode="sum"), None, "needs bidirectional=True"),
    (lambda: MinLSTM(3, 4, bidirectional=True, merge_mode="avg"), None,
     "merge_mode must be one of 'concat', 'sum', 'mean', 'max'; got 'avg'"),
    (lambda: MinGRU(3, 4, chunk_size=0), None, "chunk_size must be a positive integer; got 0"),
    (lambda: MinGRU(3, 4), lambda m: m(torch.zeros(5, 2, 2)), "expects 3 input features"),
    (lambda: MinGRU(3, 4), lambda m: m(torch.zeros(5, 2, 3), torch.zeros(2, 2, 4)),
     r"expects h_0 of shape \(1, 2, 4\)"),
    (lambda: MinLSTM(3, 4), lambda m: m(torch.zeros(5, 2, 3), (torch.zeros(1, 2, 4),) * 2),
     "has no cell state"),
    (lambda: MinGRU(3, 4), lambda m: m(torch.zeros(5, 2, 3), lengths=torch.tensor([6, 1])),
     r"lengths must lie in \[1, 5\]"),
    (lambda: MinGRU(3, 4, bidirectional=True), lambda m: m.step(torch.zeros(2, 3)),
     "needs bidirectional=False"),
    (lambda: MinGRU(3, 4), lambda m: m.step(torch.zeros(2, 5)), r"expects input of shape \(N, 3\)"),
])
def test_bad_arguments_raise_value_error_with_the_fix(make_layer, call, message):
    with pytest.raises(ValueError, match=message):
        call(make_layer()) if call else make_layer()


def test_dropout_with_one_layer_warns():
    with pytest.warns(UserWarning, match="no effect with num_layers=1"):
        MinGRU(3, 4, dropout=0.5)


def test_the_docs_python_example_runs():
    page = Path(__file__).resolve().parents[2] / "docs" / "minimal-rnns.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
    assert blocks
    torch.manual_seed(0)
    for block in blocks:
        exec(compile(block, str(page), "exec"), {})  # noqa: S102 - our own page
