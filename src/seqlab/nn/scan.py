"""Backpropagation through time, written out: the time loop of every recurrent cell with its gradient.

The layers in :mod:`seqlab.nn.recurrent` run each cell over a whole sequence with :func:`scan`.
Its forward pass is the cell's recurrence, step by step, with the input projection of all steps
computed beforehand (x_proj = W_ih x + b_ih, one matrix product). Its backward pass is BPTT by
hand: walking from the last step to the first, it turns the gradient of each step's output and
of the next state into the gradient of the gate pre-activations, then of the previous state.
Three things make this faster than recording every small operation for autograd:

* a step's backward is a few element-wise products and one matrix product (dgates · W_hh);
* the weight gradient is one large product after the loop, dW_hh = Σ_t dgatesₜᵀ h_{t-1};
* peephole and bias gradients are sums over the saved per-step gradients, also after the loop.

Shapes: x_proj (L, N, G·H) with gates in the layer's layout, h0 / c0 (N, H), valid (L, N, 1) bool
(True where step t of sequence n is inside its length; None when every step is), outputs
(L, N, H). Masked steps keep the previous state and emit zeros, so a sequence ends at its length.

The compiled loop. Small steps (say N=8, H=128) spend most of their time dispatching the dozen
small operations above from Python. ``csrc/scan.cpp`` runs the same forward and backward steps
in C++: per step one matrix product W_hh h, called straight into BLAS (two for the GRU with
``reset_after=False``, as here), and loops over the batch rows and units that add the input side
and do all the gate arithmetic, shared out across threads when a step is large enough, in
float32 and float64. It follows the Python loop's masking, directions and initial states, saves
what it saves, and leaves the same sums over steps (weight, bias and peephole gradients) to the
functions below, so the two loops agree to rounding: float64 to ~1e-15, float32 to ~1e-6 (its
exp and tanh are short polynomials that the compiler can vectorise). When no input needs a
gradient (inference, ``torch.no_grad()``) it keeps two steps' buffers instead of every step's.

It is built once with ``torch.utils.cpp_extension.load`` into torch's extension cache (``make
install`` does it; otherwise the first run waits for the compiler) and then used automatically
for CPU float32 / float64 tensors. The Python functions below stay the reference and run instead
on other devices and dtypes, while :func:`record_scans` records, when the environment sets
``SEQLAB_COMPILED_SCAN=0``, and when the build fails (that warns once, with the reason).
:func:`compiled_available` says whether the compiled loop is in use.

The GPU loop. On CUDA float32 / float64 tensors the same steps run through
:mod:`seqlab.nn.triton_scan`: one Triton kernel per step for all of its gate arithmetic, the
matrix products on cuBLAS, the same saved tensors. Triton comes with torch's CUDA builds; without
it, with ``SEQLAB_TRITON_SCAN=0``, or when a kernel fails to compile, the Python loop runs (a
failure warns once). :func:`triton_available` says whether it is in use. ``SEQLAB_CUDA_GRAPHS=1``
replays each loop as a CUDA graph captured once per shape (no launch from Python per step); a
capture that fails warns once, and the loop runs without graphs.

Tests compare every cell's gradients with autograd through :mod:`seqlab.nn.cells` and run
``torch.autograd.gradcheck`` in float64, and compare the compiled loop with the Python one.
"""

from __future__ import annotations

import os
import shutil
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


@dataclass
class ScanRecord:
    """What one run of a cell over a sequence showed: the diagnostics of vanishing gradients.

    ``gates`` (L, G): each gate's mean activation at each step (LSTM i, f, g, o or f, g, o when
    coupled; GRU r, z, n; RNN its output), averaged over the batch and units.
    ``state_gradient_norms`` (L,): ‖∂loss/∂h_t‖ at each step (mean over the batch of each
    sequence's norm), filled in by the backward pass; None until then.
    Steps are in the order the cell ran them: a ``reverse`` run starts from the sequence's end.
    """

    cell: str
    tag: str
    gates: Tensor
    state_gradient_norms: Tensor | None = None


@dataclass
class ScanRecorder:
    records: list[ScanRecord] = field(default_factory=list)


_RECORDERS: list[ScanRecorder] = []


@contextmanager
def record_scans():
    """Collect a :class:`ScanRecord` for every visible-loop run inside the block.

    Layers on torch's fused kernel are not seen: build them with ``fused=False`` to diagnose.

        with record_scans() as recorder:
            output, _ = layer(x)
            output.sum().backward()
        recorder.records[0].state_gradient_norms   # (L,)
    """
    recorder = ScanRecorder()
    _RECORDERS.append(recorder)
    try:
        yield recorder
    finally:
        _RECORDERS.remove(recorder)


def _carry(valid: Tensor | None, t: int, new: Tensor, old: Tensor) -> Tensor:
    """The state after step t: the new one inside the sequence, the old one past its end."""
    return new if valid is None else torch.where(valid[t], new, old)


def _note(norms: list | None, grad_state: Tensor) -> None:
    """Keep ‖∂loss/∂h_t‖ (mean over the batch) when a recorder asks for it."""
    if norms is not None:
        norms.append(grad_state.norm(dim=-1).mean())


def _masked(valid: Tensor | None, t: int, value: Tensor) -> Tensor:
    return value if valid is None else value * valid[t]


def _shifted(news: Tensor, first: Tensor) -> Tensor:
    """The state before each step, (L, N, H), when no step was masked: first, then news[:-1]."""
    return torch.cat([first.unsqueeze(0), news[:-1]])


def _steps(*tensors: Tensor) -> list[tuple[Tensor, ...]]:
    """Per-step views of time-major tensors, made once: indexing inside the loop costs time."""
    return list(zip(*(tensor.unbind(0) for tensor in tensors)))


def _rnn_forward(x_proj, h, weight_hh, valid, nonlinearity):
    """h' = act(x_proj + W_hh h); bias_hh is already folded into x_proj."""
    weight_t = weight_hh.t()
    h0, prevs = h, ([] if valid is not None else None)
    news = torch.empty_like(x_proj)  # (L, N, H): each step's new state
    for t, (x_t, new_t) in enumerate(_steps(x_proj, news)):
        if prevs is not None:
            prevs.append(h)
        h_new = torch.addmm(x_t, h, weight_t, out=new_t)
        h_new.tanh_() if nonlinearity == "tanh" else h_new.relu_()
        h = _carry(valid, t, h_new, h)
    prevs = _shifted(news, h0) if prevs is None else torch.stack(prevs)
    return news, h, (news, prevs)


def _rnn_backward(grad_out, grad_h, weight_hh, valid, saved, nonlinearity, norms=None):
    news, prevs = saved
    # act'(pre) from the saved outputs: tanh' = 1 − tanh², relu' = [h > 0]
    slope = 1 - news * news if nonlinearity == "tanh" else (news > 0).to(news.dtype)
    grad_x_proj = torch.empty_like(news)
    steps = _steps(grad_out, slope, grad_x_proj)
    for t in range(len(steps) - 1, -1, -1):
        grad_out_t, slope_t, grad_pre_t = steps[t]
        grad_total = grad_out_t + grad_h  # everything that reaches h_t
        _note(norms, grad_total)
        grad_new = _masked(valid, t, grad_total)
        grad_pre = torch.mul(grad_new, slope_t, out=grad_pre_t)
        # past a sequence's end the state was carried unchanged, and so is its gradient
        grad_h = _carry(valid, t, grad_pre @ weight_hh, grad_h)
    return grad_x_proj, grad_h, grad_x_proj, prevs


def _lstm_forward(x_proj, h, c, weight_hh, weight_ch, valid, coupled):
    """The LSTM equations of :class:`seqlab.nn.LSTMCell`; bias_hh is folded into x_proj.

    Gate pre-activations are written into ``acts`` and turned into activations in place, so a
    step allocates almost nothing. Layout per step: i, f, g, o (coupled: f, g, o).
    """
    length, batch, hidden = x_proj.shape[0], h.shape[0], h.shape[1]
    peeps = 1 if coupled else 2  # the sigmoid gates before g, which peep at c: (i, f) or f
    weight_t = weight_hh.t()
    if weight_ch is not None:
        w_peep = weight_ch[: peeps * hidden].view(peeps, hidden)
        w_co = weight_ch[-hidden:]
    h0, c0 = h, c
    stored = ([], []) if valid is not None else None
    acts = torch.empty_like(x_proj)  # (L, N, G·H)
    c_news, tanh_cs, news = (x_proj.new_empty(length, batch, hidden) for _ in range(3))
    steps = _steps(
        x_proj, acts,
        acts[..., : peeps * hidden].view(length, batch, peeps, hidden),  # i, f (or f)
        acts[..., (peeps - 1) * hidden: peeps * hidden],  # f
        acts[..., peeps * hidden: (peeps + 1) * hidden],  # g
        acts[..., -hidden:],  # o
        acts[..., :hidden],  # i (f when coupled: unused then)
        c_news, tanh_cs, news)
    for t, (x_t, gates, sig_t, f, g, o, i, c_new_t, tanh_c_t, new_t) in enumerate(steps):
        if stored is not None:
            stored[0].append(h)
            stored[1].append(c)
        torch.addmm(x_t, h, weight_t, out=gates)  # (N, G·H) pre-activations
        if weight_ch is not None:
            sig_t.addcmul_(w_peep, c.unsqueeze(1))  # i and f peep at the previous cell
        sig_t.sigmoid_()
        g.tanh_()
        if coupled:
            c_new = torch.addcmul(g, f, c - g, out=c_new_t)  # f ⊙ c + (1 − f) ⊙ g
        else:
            c_new = torch.mul(f, c, out=c_new_t).addcmul_(i, g)
        if weight_ch is not None:
            o.addcmul_(w_co, c_new)  # o peeps at the new cell
        o.sigmoid_()
        h_new = torch.mul(o, torch.tanh(c_new, out=tanh_c_t), out=new_t)
        h, c = _carry(valid, t, h_new, h), _carry(valid, t, c_new, c)
    if stored is None:
        h_prevs, c_prevs = _shifted(news, h0), _shifted(c_news, c0)
    else:
        h_prevs, c_prevs = torch.stack(stored[0]), torch.stack(stored[1])
    return news, h, c, (acts, c_prevs, c_news, tanh_cs, h_prevs)


def _lstm_backward(grad_out, grad_h, grad_c, weight_hh, weight_ch, valid, saved, coupled,
                   norms=None):
    acts, c_prevs, c_news, tanh_cs, h_prevs = saved
    length, batch, hidden = c_prevs.shape
    # Everything that does not depend on the incoming gradient is computed once, for all steps:
    # ∂h'/∂o_pre, ∂h'/∂c', and ∂c'/∂(pre-activation) of the gates that feed the cell.
    o = acts[..., -hidden:]
    d_h_d_o_pre = tanh_cs * o * (1 - o)
    d_h_d_c = o * (1 - tanh_cs * tanh_cs)
    if coupled:
        f, g = acts[..., :hidden], acts[..., hidden: 2 * hidden]
        d_c_d_pre = torch.cat([(c_prevs - g) * f * (1 - f), (1 - f) * (1 - g * g)], dim=-1)
        cell_gates = 2  # f, g
    else:
        i, f, g = acts[..., :hidden], acts[..., hidden: 2 * hidden], acts[..., 2 * hidden: 3 * hidden]
        d_c_d_pre = torch.cat([g * i * (1 - i), c_prevs * f * (1 - f), i * (1 - g * g)], dim=-1)
        cell_gates = 3  # i, f, g
    peeps = cell_gates - 1  # gates that look at the previous cell: (i, f) or f
    if weight_ch is not None:
        w_peep = weight_ch[: peeps * hidden].chunk(peeps)  # (w_ci, w_cf) or (w_cf,)
        w_co = weight_ch[-hidden:]
    grad_gates = torch.empty_like(acts)  # (L, N, G·H), the same layout as the gates
    steps = _steps(
        grad_out, d_h_d_c, d_h_d_o_pre, d_c_d_pre.view(length, batch, cell_gates, hidden), f,
        grad_gates, grad_gates[..., -hidden:],
        grad_gates[..., : cell_gates * hidden].view(length, batch, cell_gates, hidden),
        grad_gates[..., :hidden], grad_gates[..., hidden: 2 * hidden])
    for t in range(length - 1, -1, -1):
        (grad_out_t, d_h_d_c_t, d_h_d_o_pre_t, d_c_d_pre_t, f_t, grad_gates_t, grad_o_pre_t,
         grad_cell_gates_t, grad_first_t, grad_second_t) = steps[t]
        grad_total = grad_out_t + grad_h  # everything that reaches h_t
        _note(norms, grad_total)
        grad_h_new = _masked(valid, t, grad_total)
        grad_c_new = torch.addcmul(_masked(valid, t, grad_c), grad_h_new, d_h_d_c_t)
        torch.mul(grad_h_new, d_h_d_o_pre_t, out=grad_o_pre_t)
        if weight_ch is not None:
            grad_c_new.addcmul_(grad_o_pre_t, w_co)
        torch.mul(grad_c_new.unsqueeze(1), d_c_d_pre_t, out=grad_cell_gates_t)
        grad_c_prev = grad_c_new * f_t
        if weight_ch is not None:  # the gates that peeped at c send gradient back to it
            grad_c_prev.addcmul_(grad_first_t, w_peep[0])
            if peeps == 2:
                grad_c_prev.addcmul_(grad_second_t, w_peep[1])
        grad_h = _carry(valid, t, grad_gates_t @ weight_hh, grad_h)
        grad_c = _carry(valid, t, grad_c_prev, grad_c)
    grad_weight_ch = None
    if weight_ch is not None:
        grad_weight_ch = _peephole_grad(grad_gates, c_prevs, c_news, coupled)
    return grad_gates, grad_h, grad_c, grad_gates, h_prevs, grad_weight_ch


def _peephole_grad(grad_gates: Tensor, c_prevs: Tensor, c_news: Tensor, coupled: bool) -> Tensor:
    """Peephole weights are diagonal: sum gate-gradient ⊙ cell over steps and batch, (P·H)."""
    length, batch, hidden = c_prevs.shape
    peeps = 1 if coupled else 2  # gates that look at the previous cell: (i, f) or f
    grad_peeps = (grad_gates[..., : peeps * hidden].view(length, batch, peeps, hidden)
                  * c_prevs.unsqueeze(2)).sum((0, 1)).flatten()
    grad_o = (grad_gates[..., -hidden:] * c_news).sum((0, 1))
    return torch.cat([grad_peeps, grad_o])


def _gru_forward(x_proj, h, weight_hh, bias_hh, valid, reset_after):
    """The GRU equations of :class:`seqlab.nn.GRUCell` (bias_hh stays apart: r scales part of it).

    ``acts`` holds r, z, n per step; ``hidden_n`` what the reset gate multiplies (reset after:
    W_hn h + b_hn) or what W_hn multiplies (reset before: r ⊙ h).
    """
    length, batch, hidden = x_proj.shape[0], h.shape[0], h.shape[1]
    w_t = weight_hh.t()
    w_rz, w_n = w_t[:, : 2 * hidden], w_t[:, 2 * hidden:]
    b_rz = b_n = None
    if bias_hh is not None:
        b_rz, b_n = bias_hh[: 2 * hidden], bias_hh[2 * hidden:]
    h0, prevs = h, ([] if valid is not None else None)
    acts = torch.empty_like(x_proj)  # (L, N, 3H)
    news, hidden_n = (x_proj.new_empty(length, batch, hidden) for _ in range(2))
    steps = _steps(x_proj[..., : 2 * hidden], x_proj[..., 2 * hidden:], acts[..., : 2 * hidden],
                   acts[..., :hidden], acts[..., hidden: 2 * hidden], acts[..., 2 * hidden:],
                   hidden_n, news)
    for t, (x_rz, x_n, rz, r, z, n, hidden_n_t, new_t) in enumerate(steps):
        if prevs is not None:
            prevs.append(h)
        if reset_after:
            h_all = h @ w_t if bias_hh is None else torch.addmm(bias_hh, h, w_t)  # (N, 3H)
            h_rz, h_n = h_all[:, : 2 * hidden], h_all[:, 2 * hidden:]
        else:
            h_rz = h @ w_rz if b_rz is None else torch.addmm(b_rz, h, w_rz)
        torch.add(x_rz, h_rz, out=rz).sigmoid_()
        if reset_after:  # n = tanh(x_n + r ⊙ (W_hn h + b_hn))
            hidden_n_t.copy_(h_n)
            torch.addcmul(x_n, r, h_n, out=n).tanh_()
        else:  # n = tanh(x_n + W_hn (r ⊙ h) + b_hn)
            reset_h = torch.mul(r, h, out=hidden_n_t)
            h_n = reset_h @ w_n if b_n is None else torch.addmm(b_n, reset_h, w_n)
            torch.add(x_n, h_n, out=n).tanh_()
        h_new = torch.addcmul(n, z, h - n, out=new_t)  # (1 − z) ⊙ n + z ⊙ h
        h = _carry(valid, t, h_new, h)
    prevs = _shifted(news, h0) if prevs is None else torch.stack(prevs)
    return news, h, (acts, prevs, hidden_n)


def _gru_backward(grad_out, grad_h, weight_hh, valid, saved, reset_after, norms=None):
    acts, h_prevs, hidden_n = saved
    hidden = h_prevs.shape[-1]
    w_rz, w_n = weight_hh[: 2 * hidden], weight_hh[2 * hidden:]
    r, z, n = acts[..., :hidden], acts[..., hidden: 2 * hidden], acts[..., 2 * hidden:]
    # Per-step factors that do not depend on the incoming gradient, for all steps at once.
    d_z_pre = (h_prevs - n) * z * (1 - z)  # ∂h'/∂z_pre
    d_n_pre = (1 - z) * (1 - n * n)  # ∂h'/∂n_pre
    d_r_pre = (hidden_n if reset_after else h_prevs) * r * (1 - r)
    grad_x_proj = torch.empty_like(acts)
    # gradient of the hidden-side products: W_hh h + b_hh (reset after) or [W_hrz h; W_hn (r ⊙ h)]
    grad_hidden = torch.empty_like(acts)
    steps = _steps(grad_out, d_n_pre, d_z_pre, d_r_pre, r, z, grad_x_proj[..., 2 * hidden:],
                   grad_hidden, grad_hidden[..., :hidden], grad_hidden[..., hidden: 2 * hidden],
                   grad_hidden[..., 2 * hidden:], grad_hidden[..., : 2 * hidden])
    for t in range(len(steps) - 1, -1, -1):
        (grad_out_t, d_n_pre_t, d_z_pre_t, d_r_pre_t, r_t, z_t, grad_n_pre_t, grad_hidden_t,
         grad_r_pre_t, grad_z_pre_t, grad_h_n_t, grad_rz_t) = steps[t]
        grad_total = grad_out_t + grad_h  # everything that reaches h_t
        _note(norms, grad_total)
        grad_new = _masked(valid, t, grad_total)
        grad_n_pre = torch.mul(grad_new, d_n_pre_t, out=grad_n_pre_t)
        torch.mul(grad_new, d_z_pre_t, out=grad_z_pre_t)
        if reset_after:
            torch.mul(grad_n_pre, d_r_pre_t, out=grad_r_pre_t)
            torch.mul(grad_n_pre, r_t, out=grad_h_n_t)
            grad_h_prev = torch.addmm(grad_new * z_t, grad_hidden_t, weight_hh)
        else:
            grad_reset_h = grad_n_pre @ w_n  # gradient of r ⊙ h
            torch.mul(grad_reset_h, d_r_pre_t, out=grad_r_pre_t)
            grad_h_n_t.copy_(grad_n_pre)
            grad_direct = torch.addcmul(grad_new * z_t, grad_reset_h, r_t)
            grad_h_prev = torch.addmm(grad_direct, grad_rz_t, w_rz)
        grad_h = _carry(valid, t, grad_h_prev, grad_h)
    grad_x_proj[..., : 2 * hidden] = grad_hidden[..., : 2 * hidden]
    return grad_x_proj, grad_h, *_gru_weight_grads(grad_hidden, h_prevs, hidden_n, reset_after)


def _gru_weight_grads(grad_hidden: Tensor, h_prevs: Tensor, hidden_n: Tensor,
                      reset_after: bool) -> tuple[Tensor, Tensor]:
    """dW_hh (3H, H) and db_hh (3H,) from the gradient of the hidden-side products, all steps."""
    hidden = h_prevs.shape[-1]
    flat = grad_hidden.reshape(-1, 3 * hidden)  # (L·N, 3H)
    if reset_after:
        grad_weight = flat.t() @ h_prevs.reshape(-1, hidden)
    else:
        grad_weight = torch.cat([flat[:, : 2 * hidden].t() @ h_prevs.reshape(-1, hidden),
                                 flat[:, 2 * hidden:].t() @ hidden_n.reshape(-1, hidden)])
    return grad_weight, flat.sum(0)


# The compiled loop: csrc/scan.cpp runs the same steps as the functions above (module docstring).

SWITCH = "SEQLAB_COMPILED_SCAN"
_SOURCE = Path(__file__).parent / "csrc" / "scan.cpp"
_kernel = None  # torch.ops.seqlab_scan once the library is loaded
_build_error: str | None = None  # why it could not be built; the Python loop runs then
_build_lock = threading.Lock()


def _load_extension(verbose: bool = False):
    """Compile csrc/scan.cpp into torch's extension cache (only when it changed) and load it.

    On a CPU with AVX2 (or AVX-512) the loops over units use it; the build then carries another
    name, so a cache shared with an older CPU never hands it an instruction set it lacks.
    """
    compiler = os.environ.get("CXX", "c++")  # what torch.utils.cpp_extension calls
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler: {compiler!r} is not on the PATH")
    from torch.utils.cpp_extension import load

    # -fno-trapping-math lets the compiler vectorise the gate loops' comparisons; -fopenmp makes
    # at::parallel_for, whose OpenMP loop is compiled into the extension, run on several threads
    # (without it the pragma is ignored and every "parallel" loop runs on the calling thread);
    # the library it links, libgomp.so.1, is the one torch has already loaded
    flags = ["-O3", "-fno-trapping-math", "-fopenmp"]
    name = "seqlab_scan"
    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "AVX512":  # 16 floats a vector: the gate loops take ~35 % less time
        flags += ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw", "-mfma",
                  "-mprefer-vector-width=512"]
        name += "_avx512"
    elif capability == "AVX2":
        flags += ["-mavx2", "-mfma"]
        name += "_avx2"
    load(name=name, sources=[str(_SOURCE)], extra_cflags=flags, extra_ldflags=["-fopenmp"],
         with_cuda=False, is_python_module=False, verbose=verbose)
    return torch.ops.seqlab_scan


def _short_reason(error: Exception) -> str:
    """The line of a build failure that says what went wrong: the compiler's error, if any."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    telling = [line for line in lines if "error:" in line.lower() or "not found" in line.lower()]
    line = (telling or lines or [repr(error)])[0]
    return f"{type(error).__name__}: {line[:300]}"


def build_compiled(verbose: bool = False) -> bool:
    """Build (or load from the cache) the compiled time loop; True when it can be used.

    A failure (no compiler, missing headers) warns once with the reason and leaves the Python
    loop in use; it never raises. ``make install`` calls this so that the first run does not
    wait for the compiler.
    """
    global _kernel, _build_error
    with _build_lock:
        if _kernel is None and _build_error is None:
            try:
                _kernel = _load_extension(verbose)
            except Exception as error:  # noqa: BLE001 (any failure: the Python loop runs)
                _build_error = _short_reason(error)
                warnings.warn(f"seqlab: the compiled time loop could not be built ({_build_error});"
                              f" recurrent variants run the Python loop. Set {SWITCH}=0 to skip "
                              "the build.", RuntimeWarning, stacklevel=2)
    return _kernel is not None


def compiled_available() -> bool:
    """Whether :func:`scan` runs the compiled loop (on CPU float32 / float64 tensors).

    False when ``SEQLAB_COMPILED_SCAN=0`` is set or the kernel cannot be built.
    """
    return os.environ.get(SWITCH, "1") != "0" and build_compiled()


def _is_compiling() -> bool:
    """Whether torch.compile is tracing: it cannot see inside the compiled loop."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return bool(is_compiling and is_compiling())


def _use_compiled(*tensors: Tensor | None) -> bool:
    """The compiled loop takes CPU float32 / float64 runs without a recorder; others run in Python."""
    first = tensors[0]
    if _RECORDERS or first.dtype not in (torch.float32, torch.float64):
        return False
    if not all(t is None or (t.device.type == "cpu" and t.dtype == first.dtype) for t in tensors):
        return False
    return not _is_compiling() and compiled_available()


def _compiled_rnn_forward(x_proj, h, weight_hh, valid, nonlinearity, keep=True):
    outputs, h, prevs = _kernel.rnn_forward(x_proj, h, weight_hh, valid, nonlinearity == "relu",
                                            keep)
    return outputs, h, (outputs, prevs)


def _compiled_rnn_backward(grad_out, grad_h, weight_hh, valid, saved, nonlinearity, norms=None):
    outputs, prevs = saved
    grad_x_proj, grad_h = _kernel.rnn_backward(grad_out, grad_h, weight_hh, valid, outputs,
                                               nonlinearity == "relu")
    return grad_x_proj, grad_h, grad_x_proj, prevs


def _compiled_lstm_forward(x_proj, h, c, weight_hh, weight_ch, valid, coupled, keep=True):
    outputs, h, c, *saved = _kernel.lstm_forward(x_proj, h, c, weight_hh, weight_ch, valid,
                                                 coupled, keep)
    return outputs, h, c, tuple(saved)  # acts, c_prevs, c_news, tanh_cs, h_prevs


def _compiled_lstm_backward(grad_out, grad_h, grad_c, weight_hh, weight_ch, valid, saved, coupled,
                            norms=None):
    acts, c_prevs, c_news, tanh_cs, h_prevs = saved
    grad_gates, grad_h, grad_c = _kernel.lstm_backward(grad_out, grad_h, grad_c, weight_hh,
                                                       weight_ch, valid, acts, c_prevs, tanh_cs,
                                                       coupled)
    grad_weight_ch = None
    if weight_ch is not None:
        grad_weight_ch = _peephole_grad(grad_gates, c_prevs, c_news, coupled)
    return grad_gates, grad_h, grad_c, grad_gates, h_prevs, grad_weight_ch


def _compiled_gru_forward(x_proj, h, weight_hh, bias_hh, valid, reset_after, keep=True):
    outputs, h, *saved = _kernel.gru_forward(x_proj, h, weight_hh, bias_hh, valid, reset_after,
                                             keep)
    return outputs, h, tuple(saved)  # acts, h_prevs, hidden_n


def _compiled_gru_backward(grad_out, grad_h, weight_hh, valid, saved, reset_after, norms=None):
    acts, h_prevs, hidden_n = saved
    grad_x_proj, grad_h, grad_hidden = _kernel.gru_backward(grad_out, grad_h, weight_hh, valid,
                                                            acts, h_prevs, hidden_n, reset_after)
    return grad_x_proj, grad_h, *_gru_weight_grads(grad_hidden, h_prevs, hidden_n, reset_after)


# The GPU loop: seqlab.nn.triton_scan, each step's gate arithmetic in one Triton kernel.

TRITON_SWITCH = "SEQLAB_TRITON_SCAN"
GRAPHS_SWITCH = "SEQLAB_CUDA_GRAPHS"  # "1": the Triton loop replayed as CUDA graphs
_triton = None  # the seqlab.nn.triton_scan module once imported
_triton_error: str | None = None  # why the Triton loop cannot run; the Python loop runs then
_graphs_error: str | None = None  # why CUDA graphs cannot capture it; the loop runs eagerly then
_triton_on_cpu = False  # tests: run the Triton loop on CPU tensors (under TRITON_INTERPRET=1)


def _triton_failed(error: Exception) -> None:
    global _triton_error
    _triton_error = _short_reason(error)
    warnings.warn(f"seqlab: the GPU time loop (Triton) cannot run ({_triton_error}); recurrent "
                  f"variants run the Python loop on the GPU. Set {TRITON_SWITCH}=0 to skip it.",
                  RuntimeWarning, stacklevel=3)


def _graphs_failed(error: Exception) -> None:
    global _graphs_error
    _graphs_error = _short_reason(error)
    warnings.warn(f"seqlab: CUDA graphs cannot capture the GPU time loop ({_graphs_error}); it "
                  f"runs without them. Unset {GRAPHS_SWITCH} to skip them.", RuntimeWarning,
                  stacklevel=3)


def _use_graphs(tensor: Tensor) -> bool:
    """SEQLAB_CUDA_GRAPHS=1 on a CUDA tensor, and no capture has failed."""
    return tensor.is_cuda and os.environ.get(GRAPHS_SWITCH) == "1" and _graphs_error is None


def triton_available() -> bool:
    """Whether :func:`scan` runs CUDA float32 / float64 tensors through the Triton loop.

    False when ``SEQLAB_TRITON_SCAN=0`` is set, when Triton cannot be imported (a CPU build of
    torch ships without it) or after a kernel failed to compile (that warned once, with why).
    """
    global _triton
    if os.environ.get(TRITON_SWITCH, "1") == "0" or _triton_error is not None:
        return False
    if _triton is None:
        try:
            from seqlab.nn import triton_scan
        except Exception as error:  # noqa: BLE001 (no Triton, or a broken one: the Python loop)
            _triton_failed(error)
            return False
        _triton = triton_scan
    return True


def _use_triton(*tensors: Tensor | None) -> bool:
    """The Triton loop takes CUDA float32 / float64 runs without a recorder (and CPU tensors when
    a test asks for it)."""
    first = tensors[0]
    if _RECORDERS or first.dtype not in (torch.float32, torch.float64) or _is_compiling():
        return False
    device = "cpu" if _triton_on_cpu else "cuda"
    if not all(t is None or (t.device.type == device and t.dtype == first.dtype) for t in tensors):
        return False
    return triton_available()


def _triton_loop(cell: str, direction: int):
    """The Triton loop's forward (0) or backward (1) of `cell`; a failure to compile or launch
    warns once and runs the Python loop, which saves and takes the same tensors."""
    name = {"RNN": "rnn", "LSTM": "lstm", "GRU": "gru"}[cell]
    fallback = _LOOPS[False][cell][direction]

    def run(*args, **kwargs):
        if _triton_error is None:
            try:
                loop = getattr(_triton, f"{name}_{('forward', 'backward')[direction]}")
                if _use_graphs(args[0]):
                    try:
                        return _triton.graphed(loop, *args, **kwargs)
                    except Exception as error:  # noqa: BLE001 (no capture: the loop runs eagerly)
                        _graphs_failed(error)
                return loop(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 (a kernel that cannot run: the Python loop)
                _triton_failed(error)
        result = fallback(*args, **kwargs)
        valid = args[-2]  # every forward takes (..., valid, option)
        if direction == 0 and valid is not None:  # the Triton loop's outputs are already masked
            result = (result[0] * valid, *result[1:])
        return result

    return run


# (forward, backward) of each cell, for the Python loop (False), the compiled one (True) and
# the Triton one ("triton")
_LOOPS = {
    False: {"RNN": (_rnn_forward, _rnn_backward), "LSTM": (_lstm_forward, _lstm_backward),
            "GRU": (_gru_forward, _gru_backward)},
    True: {"RNN": (_compiled_rnn_forward, _compiled_rnn_backward),
           "LSTM": (_compiled_lstm_forward, _compiled_lstm_backward),
           "GRU": (_compiled_gru_forward, _compiled_gru_backward)},
}
_LOOPS["triton"] = {cell: (_triton_loop(cell, 0), _triton_loop(cell, 1)) for cell in _LOOPS[False]}


class _Scan(torch.autograd.Function):
    """Runs one direction of one layer; the backward pass is the hand-written BPTT above."""

    @staticmethod
    def forward(ctx, x_proj, h0, c0, weight_hh, bias_hh, weight_ch, valid, cell, option, tag,
                keep):
        ctx.cell, ctx.option = cell, option
        tensors = (x_proj, h0, c0, weight_hh, bias_hh, weight_ch)
        ctx.compiled = "triton" if _use_triton(*tensors) else _use_compiled(*tensors)
        run, _ = _LOOPS[ctx.compiled][cell]
        # without a backward pass to come, the compiled loop keeps two steps' buffers, not all
        keep = {"keep": keep} if ctx.compiled is True else {}
        if cell == "LSTM":
            outputs, h, c, saved = run(x_proj, h0, c0, weight_hh, weight_ch, valid, option, **keep)
        elif cell == "GRU":
            outputs, h, saved = run(x_proj, h0, weight_hh, bias_hh, valid, option, **keep)
            c = None
        else:
            outputs, h, saved = run(x_proj, h0, weight_hh, valid, option, **keep)
            c = None
        if valid is not None and not ctx.compiled:
            outputs = outputs * valid  # a sequence emits zeros past its length (compiled: already)
        ctx.save_for_backward(weight_hh, weight_ch, valid, *saved)
        ctx.has_bias = bias_hh is not None
        ctx.records = []
        for recorder in _RECORDERS:
            gates = saved[0] if cell != "RNN" else saved[0].unsqueeze(-1)
            hidden = h0.shape[-1]
            per_gate = gates.reshape(*gates.shape[:2], -1, hidden).mean(dim=(1, 3))  # (L, G)
            record = ScanRecord(cell, tag, per_gate.detach().cpu())
            recorder.records.append(record)
            ctx.records.append(record)
        return (outputs, h) if c is None else (outputs, h, c)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h, grad_c=None):
        weight_hh, weight_ch, valid, *saved = ctx.saved_tensors
        grad_weight_ch = grad_bias = grad_c0 = None
        norms = [] if ctx.records else None
        _, run = _LOOPS[ctx.compiled][ctx.cell]
        if ctx.cell == "LSTM":
            grad_x_proj, grad_h0, grad_c0, grad_rows, inputs, grad_weight_ch = run(
                grad_out, grad_h, grad_c, weight_hh, weight_ch, valid, saved, ctx.option, norms)
            grad_weight = _outer_sum(grad_rows, inputs)
        elif ctx.cell == "GRU":
            grad_x_proj, grad_h0, grad_weight, grad_bias = run(
                grad_out, grad_h, weight_hh, valid, saved, ctx.option, norms)
        else:
            grad_x_proj, grad_h0, grad_rows, inputs = run(
                grad_out, grad_h, weight_hh, valid, saved, ctx.option, norms)
            grad_weight = _outer_sum(grad_rows, inputs)
        if not ctx.has_bias:
            grad_bias = None
        if ctx.records:
            by_step = torch.stack(norms[::-1]).cpu()  # collected from the last step back
            for record in ctx.records:
                record.state_gradient_norms = by_step
        return (grad_x_proj, grad_h0, grad_c0, grad_weight, grad_bias, grad_weight_ch,
                None, None, None, None, None)


def _outer_sum(grad_rows: Tensor, inputs: Tensor) -> Tensor:
    """Σ_t Σ_n grad_rows[t, n]ᵀ inputs[t, n]: the weight gradient of all steps in one product."""
    return grad_rows.reshape(-1, grad_rows.shape[-1]).t() @ inputs.reshape(-1, inputs.shape[-1])


def scan(cell: str, x_proj: Tensor, h0: Tensor, c0: Tensor | None, weight_hh: Tensor,
         bias_hh: Tensor | None, weight_ch: Tensor | None, valid: Tensor | None,
         option, tag: str = "") -> tuple[Tensor, Tensor, Tensor | None]:
    """Run a cell over x_proj (L, N, G·H) from (h0, c0); returns outputs (L, N, H), h_n, c_n.

    ``cell`` is "RNN", "LSTM" or "GRU"; ``option`` its variant: the nonlinearity (RNN),
    ``coupled`` (LSTM) or ``reset_after`` (GRU). For RNN and LSTM ``bias_hh`` must already be
    folded into ``x_proj`` (pass None); the GRU needs it apart. ``tag`` names the run in
    :func:`record_scans` records.
    """
    tensors = (x_proj, h0, c0, weight_hh, bias_hh, weight_ch)
    # whether a backward pass can follow (inside Function.forward grad mode is always off)
    keep = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    if cell == "LSTM":
        return _Scan.apply(x_proj, h0, c0, weight_hh, None, weight_ch, valid, cell, option, tag,
                           keep)
    outputs, h = _Scan.apply(x_proj, h0, None, weight_hh, bias_hh, None, valid, cell, option,
                             tag, keep)
    return outputs, h, None
