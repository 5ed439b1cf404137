"""On a GPU: plain layers match torch.nn on cuDNN, variants (the Triton loop) match their CPU
results. Skipped on CPU."""

import warnings

import pytest
import torch
from torch import nn

from seqlab.nn import GRU, LSTM, RNN

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

LENGTHS = torch.tensor([9, 4, 7, 1])


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_plain_layers_match_cudnn_without_copying_weights(mode, bidirectional):
    torch.manual_seed(0)
    reference = getattr(nn, mode)(6, 8, num_layers=2, bidirectional=bidirectional).cuda()
    ours = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}[mode](6, 8, num_layers=2,
                                                       bidirectional=bidirectional).cuda()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(9, 4, 6, device="cuda", requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the weights must already be one contiguous chunk
        output, _ = ours(x)
    expected, _ = reference(x)
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-4)
    packed = nn.utils.rnn.pack_padded_sequence(x, LENGTHS, enforce_sorted=False)
    expected_packed, _ = reference(packed)
    padded, _ = ours(x, lengths=LENGTHS.cuda())
    expected_padded, _ = nn.utils.rnn.pad_packed_sequence(expected_packed, total_length=9)
    torch.testing.assert_close(padded, expected_padded, atol=1e-5, rtol=1e-4)
    output.sum().backward()
    grad = x.grad.clone()
    x.grad = None
    expected.sum().backward()
    torch.testing.assert_close(grad, x.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("make", [
    lambda: LSTM(6, 8, peephole=True, bidirectional=True, merge_mode="sum"),
    lambda: LSTM(6, 8, coupled=True, num_layers=2),
    lambda: GRU(6, 8, reset_after=False, bidirectional=True),
    lambda: RNN(6, 8, nonlinearity="relu", init="identity", bidirectional=True, merge_mode="max"),
], ids=["peephole", "coupled", "gru-reset-before", "irnn-max"])
def test_variants_on_gpu_match_cpu(make):
    torch.manual_seed(0)
    cpu = make()
    gpu = make().cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(9, 4, 6)
    out_cpu, _ = cpu(x, lengths=LENGTHS)
    out_gpu, _ = gpu(x.cuda(), lengths=LENGTHS.cuda())
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, atol=1e-5, rtol=1e-4)
    out_cpu.square().sum().backward()
    out_gpu.square().sum().backward()
    for (name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters()):
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, atol=1e-4, rtol=1e-3, msg=name)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("variant", ["rnn-tanh", "rnn-relu", "lstm", "lstm-peephole", "lstm-coupled",
                                     "lstm-peephole-coupled", "gru", "gru-reset-before",
                                     "gru-reset-before-no-bias"])
def test_every_variant_runs_the_triton_loop_and_equals_the_cpu(variant, dtype):
    """The Triton loop (seqlab.nn.triton_scan) on CUDA against the CPU's loop: outputs, final
    states and every gradient, with lengths and both directions."""
    from tests.nn.test_scan_compiled import H_IN, VARIANTS, H, run

    from seqlab.nn import scan as scan_module

    assert scan_module.triton_available(), scan_module._triton_error
    torch.manual_seed(0)
    cpu = VARIANTS[variant](bidirectional=True, num_layers=2).to(dtype)
    gpu = VARIANTS[variant](bidirectional=True, num_layers=2).to(dtype).cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(9, 4, H_IN, dtype=dtype)
    h0, c0 = torch.randn(4, 4, H, dtype=dtype), torch.randn(4, 4, H, dtype=dtype)
    called = []
    original = scan_module._use_triton
    scan_module._use_triton = lambda *t: called.append(original(*t)) or called[-1]
    try:
        on_gpu = run(gpu, x.cuda(), h0.cuda(), c0.cuda(), LENGTHS.cuda())
    finally:
        scan_module._use_triton = original
    assert called and all(called), "the Triton loop was not used on CUDA"
    assert scan_module._triton_error is None, scan_module._triton_error  # no fallback either
    on_cpu = run(cpu, x, h0, c0, LENGTHS)
    tolerance = ({"rtol": 1e-9, "atol": 1e-11} if dtype == torch.float64 else
                 {"rtol": 1e-4, "atol": 1e-5})
    for index, (ours, reference) in enumerate(zip(on_gpu, on_cpu)):
        torch.testing.assert_close(ours.cpu(), reference, **tolerance, msg=f"tensor {index}")


@pytest.mark.parametrize("variant", ["lstm-peephole", "gru-reset-before", "rnn-relu"])
def test_the_triton_loop_replayed_as_cuda_graphs_equals_it(variant, monkeypatch):
    """SEQLAB_CUDA_GRAPHS=1: the first call captures, later calls with new inputs replay."""
    from tests.nn.test_scan_compiled import H_IN, VARIANTS, H, run

    from seqlab.nn import scan as scan_module

    torch.manual_seed(0)
    layer = VARIANTS[variant](bidirectional=True).cuda()
    for attempt in range(3):
        x = torch.randn(9, 4, H_IN, device="cuda")
        h0, c0 = torch.randn(2, 4, H, device="cuda"), torch.randn(2, 4, H, device="cuda")
        monkeypatch.setenv(scan_module.GRAPHS_SWITCH, "1")
        graphed = run(layer, x, h0, c0, LENGTHS.cuda(), seed=attempt)
        monkeypatch.setenv(scan_module.GRAPHS_SWITCH, "0")
        eager = run(layer, x, h0, c0, LENGTHS.cuda(), seed=attempt)
        for index, (ours, reference) in enumerate(zip(graphed, eager)):
            torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6,
                                       msg=f"call {attempt}, tensor {index}")


@pytest.mark.parametrize("layer_class", ["MinGRU", "MinLSTM"])
def test_minimal_layers_parallel_scan_on_gpu_match_cpu(layer_class):
    """MinGRU / MinLSTM's parallel scan (torch's cumsum and logaddexp, on the GPU as they are)."""
    import seqlab.nn as snn

    torch.manual_seed(0)
    cpu = getattr(snn, layer_class)(6, 8, num_layers=2).double()
    gpu = getattr(snn, layer_class)(6, 8, num_layers=2).double().cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(300, 4, 6, dtype=torch.float64)
    out_cpu, _ = cpu(x)
    out_gpu, _ = gpu(x.cuda())
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-9, atol=1e-11)
    out_cpu.square().sum().backward()
    out_gpu.square().sum().backward()
    for (name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters()):
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=1e-8, atol=1e-10, msg=name)
