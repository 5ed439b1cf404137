"""The compiled time loop equals the Python loop: outputs, final states and every gradient."""

import os
import shutil
import warnings

import pytest
import torch

from seqlab.nn import GRU, LSTM, RNN
from seqlab.nn import scan as scan_module
from seqlab.nn.scan import SWITCH, build_compiled, compiled_available, record_scans

L, N, H_IN, H = 6, 3, 4, 5
LENGTHS = torch.tensor([6, 2, 4])

# every configuration that runs through scan (the plain cells only with fused=False)
VARIANTS = {
    "rnn-tanh": lambda i=H_IN, h=H, **kw: RNN(i, h, fused=False, **kw),
    "rnn-relu": lambda i=H_IN, h=H, **kw: RNN(i, h, nonlinearity="relu", fused=False, **kw),
    "lstm": lambda i=H_IN, h=H, **kw: LSTM(i, h, fused=False, **kw),
    "lstm-peephole": lambda i=H_IN, h=H, **kw: LSTM(i, h, peephole=True, **kw),
    "lstm-coupled": lambda i=H_IN, h=H, **kw: LSTM(i, h, coupled=True, **kw),
    "lstm-peephole-coupled": lambda i=H_IN, h=H, **kw: LSTM(i, h, peephole=True, coupled=True, **kw),
    "lstm-peephole-no-bias": lambda i=H_IN, h=H, **kw: LSTM(i, h, peephole=True, bias=False, **kw),
    "gru": lambda i=H_IN, h=H, **kw: GRU(i, h, fused=False, **kw),
    "gru-no-bias": lambda i=H_IN, h=H, **kw: GRU(i, h, fused=False, bias=False, **kw),
    "gru-reset-before": lambda i=H_IN, h=H, **kw: GRU(i, h, reset_after=False, **kw),
    "gru-reset-before-no-bias": lambda i=H_IN, h=H, **kw: GRU(i, h, reset_after=False, bias=False, **kw),
}

TOLERANCES = {torch.float64: {"rtol": 1e-10, "atol": 1e-12},
              torch.float32: {"rtol": 1e-5, "atol": 1e-5}}


def _skip_reason():
    if os.environ.get(SWITCH) == "0":
        return None  # the tests set the switch themselves
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        return "no C++ compiler: the compiled loop cannot be built here"
    return None


@pytest.fixture(scope="module", autouse=True)
def kernel():
    """The loaded kernel; skips the module when no compiler exists or the build fails."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    if not build_compiled():
        pytest.skip(f"the compiled loop could not be built: {scan_module._build_error}")
    return scan_module._kernel


class CountingKernel:
    """Stands in for the loaded ops and notes which of them were called."""

    def __init__(self, ops):
        self.ops, self.calls = ops, []

    def __getattr__(self, name):
        self.calls.append(name)
        return getattr(self.ops, name)


@pytest.fixture
def counting(kernel, monkeypatch):
    counter = CountingKernel(kernel)
    monkeypatch.setattr(scan_module, "_kernel", counter)
    return counter


def first(state):
    return state[0] if isinstance(state, tuple) else state


def run(layer, x, h0, c0, lengths, seed=1):
    """Outputs, final states and the gradients of x, h0, c0 and every parameter."""
    x = x.detach().clone().requires_grad_(True)
    h0 = h0.detach().clone().requires_grad_(True)
    c0 = c0.detach().clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    is_lstm = isinstance(layer, LSTM)
    output, state = layer(x, (h0, c0) if is_lstm else h0, lengths=lengths)
    states = list(state) if is_lstm else [state]
    generator = torch.Generator().manual_seed(seed)
    loss = sum((t * torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device)).sum()
               for t in [output, *states])
    loss.backward()
    grads = [x.grad, h0.grad] + ([c0.grad] if is_lstm else [])
    grads += [p.grad for p in layer.parameters()]
    return [output.detach(), *(s.detach() for s in states), *grads]


def both_paths(monkeypatch, counting, layer, *args):
    """The same run through the compiled loop and through the Python loop."""
    monkeypatch.setenv(SWITCH, "1")
    compiled = run(layer, *args)
    assert counting.calls, "the compiled loop was not used"
    counting.calls.clear()
    monkeypatch.setenv(SWITCH, "0")
    python = run(layer, *args)
    assert not counting.calls, "the switch did not force the Python loop"
    return compiled, python


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_compiled_equals_python_loop(variant, bidirectional, with_lengths, dtype, monkeypatch,
                                     counting):
    assert_loop_equals_python(lambda *args: both_paths(monkeypatch, counting, *args), variant,
                              bidirectional, with_lengths, dtype)


def assert_loop_equals_python(two_loops, variant, bidirectional, with_lengths, dtype):
    """`two_loops(layer, x, h0, c0, lengths)` runs a two-layer VARIANTS[variant] through another
    loop and through the Python loop (`run`'s lists each); every tensor must agree, and the
    other loop's outputs past each length must be exactly zero."""
    torch.manual_seed(0)
    layer = VARIANTS[variant](bidirectional=bidirectional, num_layers=2).to(dtype)
    directions = 2 if bidirectional else 1
    x = torch.randn(L, N, H_IN, dtype=dtype)
    h0 = torch.randn(2 * directions, N, H, dtype=dtype)
    c0 = torch.randn(2 * directions, N, H, dtype=dtype)
    lengths = LENGTHS if with_lengths else None
    ours_all, python = two_loops(layer, x, h0, c0, lengths)
    assert len(ours_all) == len(python)
    for index, (ours, reference) in enumerate(zip(ours_all, python)):
        assert ours is not None and reference is not None, index
        torch.testing.assert_close(ours, reference, **TOLERANCES[dtype], msg=f"tensor {index}")
    if with_lengths:
        for n, length in enumerate(LENGTHS.tolist()):
            assert ours_all[0][length:, n].abs().sum() == 0


@pytest.mark.parametrize("variant", ["lstm-peephole", "gru-reset-before", "rnn-relu"])
def test_odd_shapes(variant, monkeypatch, counting):
    """One step, one sequence, unbatched input and batch_first all take the same path."""
    torch.manual_seed(0)
    for length, batch, options in [(1, 1, {}), (1, 4, {}), (5, 1, {"bidirectional": True})]:
        layer = VARIANTS[variant](**options).double()
        directions = 2 if options else 1
        x = torch.randn(length, batch, H_IN, dtype=torch.float64)
        h0 = torch.randn(directions, batch, H, dtype=torch.float64)
        compiled, python = both_paths(monkeypatch, counting, layer, x, h0, h0.clone(), None)
        for ours, reference in zip(compiled, python):
            torch.testing.assert_close(ours, reference, **TOLERANCES[torch.float64])
    layer = VARIANTS[variant](batch_first=True).double()
    x = torch.randn(N, L, H_IN, dtype=torch.float64)
    monkeypatch.setenv(SWITCH, "1")
    batched, unbatched = layer(x)[0], layer(x[1])[0]
    monkeypatch.setenv(SWITCH, "0")
    torch.testing.assert_close(batched, layer(x)[0], **TOLERANCES[torch.float64])
    torch.testing.assert_close(unbatched, batched[1], **TOLERANCES[torch.float64])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_compiled_gradcheck(variant, monkeypatch, counting):
    """float64 gradcheck through the compiled loop, for the input, the initial state, weights."""
    monkeypatch.setenv(SWITCH, "1")
    torch.manual_seed(0)
    layer = VARIANTS[variant](bidirectional=True, merge_mode="sum").double()
    names = [name for name, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]
    x = torch.randn(4, 2, H_IN, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, H, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 2, H, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2])
    is_lstm = isinstance(layer, LSTM)

    def function(x, h0, c0, *weights):
        state = (h0, c0) if is_lstm else h0
        output, state = torch.func.functional_call(layer, dict(zip(names, weights)), (x, state),
                                                   {"lengths": lengths})
        return output, *(state if is_lstm else (state,))

    assert torch.autograd.gradcheck(function, (x, h0, c0, *params))
    assert "lstm_backward" in counting.calls or "gru_backward" in counting.calls \
        or "rnn_backward" in counting.calls


def test_switch_and_availability(monkeypatch, counting):
    layer = LSTM(H_IN, H, peephole=True)
    x = torch.randn(L, N, H_IN)
    monkeypatch.setenv(SWITCH, "0")
    assert not compiled_available()
    layer(x)
    assert counting.calls == []
    monkeypatch.setenv(SWITCH, "1")
    assert compiled_available()
    layer(x)
    assert counting.calls == ["lstm_forward"]


def test_python_loop_where_the_kernel_does_not_apply(monkeypatch, counting):
    """A recorder, or a dtype the kernel lacks, runs the Python loop."""
    monkeypatch.setenv(SWITCH, "1")
    layer = GRU(H_IN, H, reset_after=False)
    x = torch.randn(L, N, H_IN)
    with record_scans() as recorder:
        layer(x)[0].sum().backward()
    assert counting.calls == []
    assert recorder.records[0].state_gradient_norms.shape == (L,)
    layer.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert counting.calls == []


def test_failed_build_warns_once_and_falls_back(monkeypatch):
    torch.manual_seed(0)
    layer = LSTM(H_IN, H, peephole=True, bidirectional=True).double()
    x = torch.randn(L, N, H_IN, dtype=torch.float64)
    h0 = torch.randn(2, N, H, dtype=torch.float64)
    monkeypatch.setenv(SWITCH, "0")
    expected = run(layer, x, h0, h0.clone(), LENGTHS)

    def no_compiler(verbose=False):
        raise RuntimeError("Error building extension 'seqlab_scan'\nc++: not found")

    monkeypatch.setattr(scan_module, "_load_extension", no_compiler)
    monkeypatch.setattr(scan_module, "_kernel", None)
    monkeypatch.setattr(scan_module, "_build_error", None)
    monkeypatch.setenv(SWITCH, "1")
    with pytest.warns(RuntimeWarning, match=r"could not be built \(RuntimeError: c\+\+: not found"):
        results = run(layer, x, h0, h0.clone(), LENGTHS)
    for ours, reference in zip(results, expected):
        torch.testing.assert_close(ours, reference, rtol=0, atol=0)
    assert not compiled_available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # it warned once, and only once
        run(layer, x, h0, h0.clone(), LENGTHS)
        assert not build_compiled()


def test_threaded_loops_really_run_on_several_threads(kernel):
    """The extension's OpenMP loops run on more than one thread (built without -fopenmp they
    ran on the calling thread, and every threaded test still passed), and the LSTM's hidden
    units are cut into one part per thread exactly when a step is large enough."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert kernel.parallel_threads() == 2
        assert kernel.parts_for(280, 4 * 72, 72) == 2  # the size of the test below
        assert kernel.parts_for(8, 4 * 128, 128) == 2  # 4,096 gate elements: the threshold
        assert kernel.parts_for(7, 4 * 128, 128) == 1  # one row fewer
        assert kernel.parts_for(280, 4 * 24, 24) == 1  # fewer than two blocks of 16 units
        torch.set_num_threads(1)
        assert kernel.parallel_threads() == 1
        assert kernel.parts_for(280, 4 * 72, 72) == 1
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("hidden", [128, 72])
def test_threaded_rows_and_inference_buffers(variant, dtype, hidden, monkeypatch, counting):
    """A step large enough to be shared across threads (the rows, or the LSTM's hidden units,
    72 cut unevenly into 32 + 40) gives the Python loop's results, and a forward pass without
    gradients (two steps' buffers) gives the same outputs and final states as one that keeps
    every step for the backward pass."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        batch = 280  # batch * width >= 2**15 for every cell: the step runs threaded
        layer = VARIANTS[variant](H_IN, hidden).to(dtype)
        x = torch.randn(5, batch, H_IN, dtype=dtype)
        h0 = torch.randn(1, batch, hidden, dtype=dtype)
        c0 = torch.randn(1, batch, hidden, dtype=dtype)
        lengths = torch.randint(1, 6, (batch,))
        compiled, python = both_paths(monkeypatch, counting, layer, x, h0, c0, lengths)
        for index, (ours, reference) in enumerate(zip(compiled, python)):
            torch.testing.assert_close(ours, reference, **TOLERANCES[dtype], msg=f"tensor {index}")
        monkeypatch.setenv(SWITCH, "1")
        is_lstm = isinstance(layer, LSTM)
        with torch.no_grad():
            output, state = layer(x, (h0, c0) if is_lstm else h0, lengths=lengths)
        states = list(state) if is_lstm else [state]
        for index, (ours, reference) in enumerate(zip([output, *states], compiled)):
            torch.testing.assert_close(ours, reference, rtol=0, atol=0, msg=f"tensor {index}")
    finally:
        torch.set_num_threads(threads)

