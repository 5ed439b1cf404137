"""The GPU time loop's Triton kernels equal the Python loop, run here under Triton's interpreter.

Every variant, with and without lengths, one and two directions: outputs, final states and every
gradient; gradcheck in float64; a kernel that fails warns once and leaves the Python loop's
results. On a GPU, tests/nn/test_cuda.py runs the same kernels compiled.
"""

import importlib
import sys
import warnings

import pytest
import torch
from tests.nn.test_scan_compiled import (
    H_IN,
    LENGTHS,
    VARIANTS,
    CountingKernel,
    L,
    N,
    assert_loop_equals_python,
    run,
)

from seqlab.nn import scan as scan_module

pytest.importorskip("triton")


@pytest.fixture(scope="module")
def interpreted():
    """seqlab.nn.triton_scan imported with TRITON_INTERPRET=1, taking CPU tensors; afterwards
    it is imported afresh (compiled kernels) the next time it is needed."""
    saved = {name: getattr(scan_module, name) for name in ("_triton", "_triton_on_cpu", "_triton_error")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        importlib.import_module("triton").knobs.runtime.interpret = True
        sys.modules.pop("seqlab.nn.triton_scan", None)
        module = importlib.import_module("seqlab.nn.triton_scan")
        yield module
        importlib.import_module("triton").knobs.runtime.interpret = False
    sys.modules.pop("seqlab.nn.triton_scan", None)
    for name, value in saved.items():
        setattr(scan_module, name, None if name == "_triton" else value)


@pytest.fixture
def counting(interpreted, monkeypatch):
    counter = CountingKernel(interpreted)  # notes which loops were called
    monkeypatch.setattr(scan_module, "_triton", counter)
    monkeypatch.setattr(scan_module, "_triton_on_cpu", True)
    monkeypatch.setattr(scan_module, "_triton_error", None)
    return counter


def both_loops(monkeypatch, counting, layer, *args):
    monkeypatch.setenv(scan_module.TRITON_SWITCH, "1")
    triton = run(layer, *args)
    assert {"lstm_forward", "gru_forward", "rnn_forward"} & set(counting.calls), "not run"
    assert {"lstm_backward", "gru_backward", "rnn_backward"} & set(counting.calls), "no backward"
    counting.calls.clear()
    monkeypatch.setenv(scan_module.TRITON_SWITCH, "0")
    monkeypatch.setenv(scan_module.SWITCH, "0")  # the reference: the Python loop
    python = run(layer, *args)
    assert not counting.calls
    return triton, python


# (dtype, bidirectional, lengths): the interpreter runs each kernel in Python, so the
# combinations are chosen rather than crossed
CASES = [(torch.float64, False, False), (torch.float64, False, True), (torch.float64, True, True),
         (torch.float32, False, True)]


@pytest.mark.parametrize(("dtype", "bidirectional", "with_lengths"), CASES,
                         ids=["float64", "float64-lengths", "float64-bidirectional-lengths",
                              "float32-lengths"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_triton_equals_python_loop(variant, bidirectional, with_lengths, dtype, monkeypatch,
                                   counting):
    assert_loop_equals_python(lambda *args: both_loops(monkeypatch, counting, *args), variant,
                              bidirectional, with_lengths, dtype)


@pytest.mark.parametrize("variant", ["lstm-peephole-coupled", "gru-reset-before", "rnn-relu"])
def test_triton_loop_gradcheck(variant, counting, monkeypatch):
    monkeypatch.setenv(scan_module.TRITON_SWITCH, "1")
    torch.manual_seed(0)
    layer = VARIANTS[variant](i=3, h=3).double()
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 2, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2])

    def f(x, h0):
        state = (h0, h0 * 0.5) if "lstm" in variant else h0
        return layer(x, state, lengths=lengths)[0]

    assert torch.autograd.gradcheck(f, (x, h0), fast_mode=True)
    assert "lstm_backward" in counting.calls or "gru_backward" in counting.calls or \
        "rnn_backward" in counting.calls


def test_a_failing_kernel_warns_once_and_runs_the_python_loop(counting, monkeypatch):
    class Broken:
        def __getattr__(self, name):
            def fail(*args, **kwargs):
                raise RuntimeError("PassManager::run failed")
            return fail

    monkeypatch.setenv(scan_module.TRITON_SWITCH, "1")
    monkeypatch.setenv(scan_module.SWITCH, "0")  # after the failure: the Python loop
    monkeypatch.setattr(scan_module, "_triton", Broken())
    torch.manual_seed(0)
    layer = VARIANTS["lstm-peephole"]().double()
    x = torch.randn(L, N, H_IN, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="GPU time loop .* cannot run .*PassManager"):
        output, _ = layer(x, lengths=LENGTHS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only: later runs say nothing
        again, _ = layer(x, lengths=LENGTHS)
        assert not scan_module.triton_available()
    monkeypatch.setenv(scan_module.TRITON_SWITCH, "0")
    expected, _ = layer(x, lengths=LENGTHS)
    torch.testing.assert_close(output, expected, rtol=0, atol=0)
    torch.testing.assert_close(again, expected, rtol=0, atol=0)


def test_a_failing_graph_capture_warns_once_and_runs_the_triton_loop_eagerly(counting, monkeypatch):
    # Asked for graphs, the capture fails (here: no CUDA at all); the Triton loop still runs.
    monkeypatch.setenv(scan_module.TRITON_SWITCH, "1")
    monkeypatch.setattr(scan_module, "_graphs_error", None)
    monkeypatch.setattr(scan_module, "_use_graphs", lambda tensor: scan_module._graphs_error is None)
    torch.manual_seed(0)
    layer = VARIANTS["gru-reset-before"]().double()
    x = torch.randn(L, N, H_IN, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="CUDA graphs cannot capture"):
        output, _ = layer(x, lengths=LENGTHS)
    assert "graphed" in counting.calls and "gru_forward" in counting.calls
    assert scan_module._triton_error is None and scan_module.triton_available()
    counting.calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        again, _ = layer(x, lengths=LENGTHS)
    assert "graphed" not in counting.calls and "gru_forward" in counting.calls
    monkeypatch.setenv(scan_module.TRITON_SWITCH, "0")
    expected, _ = layer(x, lengths=LENGTHS)
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(again, expected, rtol=0, atol=1e-12)


def test_without_triton_the_gpu_loop_warns_once_and_is_not_used(monkeypatch):
    monkeypatch.setattr(scan_module, "_triton", None)
    monkeypatch.setattr(scan_module, "_triton_error", None)
    monkeypatch.setitem(sys.modules, "seqlab.nn.triton_scan", None)  # import fails, as without it
    monkeypatch.delattr(importlib.import_module("seqlab.nn"), "triton_scan", raising=False)
    monkeypatch.setenv(scan_module.TRITON_SWITCH, "1")
    with pytest.warns(RuntimeWarning, match="GPU time loop .* cannot run"):
        assert not scan_module.triton_available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not scan_module.triton_available()  # decided once
    monkeypatch.setattr(scan_module, "_triton_error", None)
    monkeypatch.setenv(scan_module.TRITON_SWITCH, "0")
    assert not scan_module.triton_available()  # the switch: no import tried, no warning
