"""The time loop on a GPU: each step's gate arithmetic in one Triton kernel, W_hh h on cuBLAS.

:func:`seqlab.nn.scan.scan` runs the Python loop on CUDA tensors by default, about a dozen small
kernels per step (addmm, sigmoid, tanh, products, the masking), each launched from Python. The
functions here keep its matrix products (``torch.addmm``, cuBLAS on a GPU) and do everything
else of a step, forward or backward, in one fused kernel:

* forward, per step: gates = x_projₜ + h W_hhᵀ (one addmm), then one kernel that applies the
  nonlinearities (with peepholes, coupled gates or the ReLU / tanh of a plain RNN), updates the
  cell, carries the state past a sequence's end and writes the output (zeros there);
* backward, per step: one kernel that takes the gradient reaching hₜ (the output's and the next
  step's, ``dgates_{t+1} W_hh``, carried past the end) to the gradient of the gate
  pre-activations and of the previous cell, then one product for dgatesₜ W_hh;
* the GRU with ``reset_after=False`` multiplies W_hn by r ⊙ h, known only once r is: two
  products and two kernels per step, either way.

The state of every step lives in one (L + 1, N, H) buffer, step t reading row t and writing row
t + 1, so nothing is stacked after the loop. Unlike the compiled CPU loop it keeps every step's
buffers under ``torch.no_grad()`` too (GPU memory is rarely what limits these sizes). What the functions return and save is exactly what
the Python loop's counterparts return and save (``_lstm_forward`` and the rest), so the weight,
bias and peephole gradients after the loop are the Python loop's own.

Launching two kernels per step from Python still costs some microseconds each. With
``SEQLAB_CUDA_GRAPHS=1`` each loop is instead captured once per shape as a CUDA graph and
replayed (:func:`graphed`; the inputs are copied into the graph's own tensors and the results
copied out, and the last eight shapes are kept), so a step costs only the kernels' own time.

On CPU tensors the kernels run under Triton's interpreter (``TRITON_INTERPRET=1``), which is how
the tests compare them with the Python loop on a machine without a GPU. Triton is imported only
when the path is used; without it (or when a kernel fails to compile) ``scan`` warns once and runs
the Python loop.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["graphed", "gru_backward", "gru_forward", "lstm_backward", "lstm_forward",
           "rnn_backward", "rnn_forward"]

BLOCK = 256  # elements of (N, H) per program


def _grid(batch: int, hidden: int) -> tuple[int]:
    return (triton.cdiv(batch * hidden, BLOCK),)


@triton.jit
def _elements(total, HIDDEN: tl.constexpr, BLOCK: tl.constexpr):
    """This program's elements of an (N, H) state: flat offsets, in range, row n, unit j."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    return offs, offs < total, offs // HIDDEN, offs % HIDDEN


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # 2σ(2x) − 1 through e^(−2|x|), which never overflows: tanh(x) = sign(x)(1 − e)/(1 + e)
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _carry_in(rec_ptr, grad_h_ptr, valid_next_ptr, n, offs, inside, MASKED: tl.constexpr):
    """The gradient reaching h_t from the step after it: dgates_{t+1} W_hh inside that step's
    sequence, carried unchanged past its end. Written back, it is the carried gradient."""
    rec = tl.load(rec_ptr + offs, mask=inside, other=0.0)
    if MASKED:
        old = tl.load(grad_h_ptr + offs, mask=inside, other=0.0)
        keep = tl.load(valid_next_ptr + n, mask=inside, other=1.0) > 0.5
        rec = tl.where(keep, rec, old)
    tl.store(grad_h_ptr + offs, rec, mask=inside)
    return rec


# ---------------------------------------------------------------------------------------------
# RNN: h' = act(x_proj + W_hh h)


@triton.jit
def _rnn_step(pre_ptr, h_prev_ptr, h_next_ptr, valid_ptr, total, RELU: tl.constexpr,
              MASKED: tl.constexpr, HIDDEN: tl.constexpr, BLOCK: tl.constexpr):
    offs, inside, n, _ = _elements(total, HIDDEN, BLOCK)
    pre = tl.load(pre_ptr + offs, mask=inside, other=0.0)
    if RELU:
        new = tl.maximum(pre, 0.0)
    else:
        new = _tanh(pre)
    if MASKED:
        keep = tl.load(valid_ptr + n, mask=inside, other=1.0) > 0.5
        old = tl.load(h_prev_ptr + offs, mask=inside, other=0.0)
        tl.store(h_next_ptr + offs, tl.where(keep, new, old), mask=inside)
        new = tl.where(keep, new, 0.0)
    else:
        tl.store(h_next_ptr + offs, new, mask=inside)
    tl.store(pre_ptr + offs, new, mask=inside)  # the output, in place of the pre-activation


@triton.jit
def _rnn_step_back(grad_out_ptr, rec_ptr, grad_h_ptr, valid_ptr, valid_next_ptr, out_ptr,
                   grad_pre_ptr, total, RELU: tl.constexpr, MASKED: tl.constexpr,
                   HIDDEN: tl.constexpr, BLOCK: tl.constexpr):
    offs, inside, n, _ = _elements(total, HIDDEN, BLOCK)
    grad = tl.load(grad_out_ptr + offs, mask=inside, other=0.0)
    grad += _carry_in(rec_ptr, grad_h_ptr, valid_next_ptr, n, offs, inside, MASKED)
    if MASKED:
        grad = tl.where(tl.load(valid_ptr + n, mask=inside, other=1.0) > 0.5, grad, 0.0)
    out = tl.load(out_ptr + offs, mask=inside, other=0.0)
    if RELU:
        grad = tl.where(out > 0, grad, 0.0)
    else:
        grad = grad * (1.0 - out * out)
    tl.store(grad_pre_ptr + offs, grad, mask=inside)


def _valid_rows(valid: Tensor | None, like: Tensor) -> tuple[Tensor, Tensor]:
    """valid (L, N, 1) bool as (L + 1, N) of 0. / 1. in the state's dtype, the last row all ones
    (the step after the last one carries nothing); a one-element stand-in without a mask."""
    if valid is None:
        return like.new_ones(1, 1), False
    rows = valid.squeeze(-1).to(like.dtype)
    return torch.cat([rows, rows.new_ones(1, rows.shape[1])]), True


def rnn_forward(x_proj, h, weight_hh, valid, nonlinearity):
    x_proj = x_proj.contiguous()
    length, batch, hidden = x_proj.shape
    rows, masked = _valid_rows(valid, x_proj)
    states = x_proj.new_empty(length + 1, batch, hidden)
    states[0] = h
    outputs = torch.empty_like(x_proj)
    weight_t = weight_hh.t()
    for t in range(length):
        torch.addmm(x_proj[t], states[t], weight_t, out=outputs[t])
        _rnn_step[_grid(batch, hidden)](
            outputs[t], states[t], states[t + 1], rows[t] if masked else rows, batch * hidden,
            RELU=nonlinearity == "relu", MASKED=masked, HIDDEN=hidden, BLOCK=BLOCK)
    return outputs, states[-1], (outputs, states[:-1])


def rnn_backward(grad_out, grad_h, weight_hh, valid, saved, nonlinearity, norms=None):
    outputs, prevs = saved
    length, batch, hidden = outputs.shape
    rows, masked = _valid_rows(valid, outputs)
    grad_out = grad_out.contiguous()
    grad_x_proj = torch.empty_like(outputs)
    rec, carried = _copy(grad_h), _copy(grad_h)  # the first step back carries grad_h itself
    for t in range(length - 1, -1, -1):
        _rnn_step_back[_grid(batch, hidden)](
            grad_out[t], rec, carried, rows[t] if masked else rows,
            rows[t + 1] if masked else rows, outputs[t], grad_x_proj[t], batch * hidden,
            RELU=nonlinearity == "relu", MASKED=masked, HIDDEN=hidden, BLOCK=BLOCK)
        torch.mm(grad_x_proj[t], weight_hh, out=rec)
    return grad_x_proj, _last_carry(rec, carried, valid), grad_x_proj, prevs


def _copy(tensor: Tensor) -> Tensor:
    """A contiguous copy (the kernels index rows as n · H + j)."""
    return tensor.clone(memory_format=torch.contiguous_format)


def _last_carry(rec: Tensor, carried: Tensor, valid: Tensor | None) -> Tensor:
    """The gradient of the initial state: step 0's product, or what was carried past it."""
    return rec if valid is None else torch.where(valid[0], rec, carried)


# ---------------------------------------------------------------------------------------------
# LSTM: gates i, f, g, o (coupled: f, g, o with i = 1 − f), peepholes w_ci, w_cf on c and w_co
# on c'; weight_ch holds (w_ci, w_cf, w_co) or (w_cf, w_co).


@triton.jit
def _lstm_step(acts_ptr, c_prev_ptr, h_prev_ptr, c_new_ptr, tanh_c_ptr, out_ptr, h_next_ptr,
               c_next_ptr, peep_ptr, valid_ptr, total, COUPLED: tl.constexpr, PEEP: tl.constexpr,
               MASKED: tl.constexpr, HIDDEN: tl.constexpr, GATES: tl.constexpr,
               BLOCK: tl.constexpr):
    offs, inside, n, j = _elements(total, HIDDEN, BLOCK)
    gates = GATES  # 3 when coupled, else 4
    row = acts_ptr + n * (gates * HIDDEN) + j
    c = tl.load(c_prev_ptr + offs, mask=inside, other=0.0)
    if COUPLED:
        f_pre = tl.load(row, mask=inside, other=0.0)
        g_pre = tl.load(row + HIDDEN, mask=inside, other=0.0)
        o_pre = tl.load(row + 2 * HIDDEN, mask=inside, other=0.0)
        if PEEP:
            f_pre += tl.load(peep_ptr + j, mask=inside, other=0.0) * c
        f = _sigmoid(f_pre)
        g = _tanh(g_pre)
        c_new = f * c + (1.0 - f) * g
        tl.store(row, f, mask=inside)
        tl.store(row + HIDDEN, g, mask=inside)
    else:
        i_pre = tl.load(row, mask=inside, other=0.0)
        f_pre = tl.load(row + HIDDEN, mask=inside, other=0.0)
        g_pre = tl.load(row + 2 * HIDDEN, mask=inside, other=0.0)
        o_pre = tl.load(row + 3 * HIDDEN, mask=inside, other=0.0)
        if PEEP:
            i_pre += tl.load(peep_ptr + j, mask=inside, other=0.0) * c
            f_pre += tl.load(peep_ptr + HIDDEN + j, mask=inside, other=0.0) * c
        i = _sigmoid(i_pre)
        f = _sigmoid(f_pre)
        g = _tanh(g_pre)
        c_new = f * c + i * g
        tl.store(row, i, mask=inside)
        tl.store(row + HIDDEN, f, mask=inside)
        tl.store(row + 2 * HIDDEN, g, mask=inside)
    if PEEP:
        o_pre += tl.load(peep_ptr + (gates - 2) * HIDDEN + j, mask=inside, other=0.0) * c_new
    o = _sigmoid(o_pre)
    tanh_c = _tanh(c_new)
    h_new = o * tanh_c
    tl.store(row + (gates - 1) * HIDDEN, o, mask=inside)
    tl.store(c_new_ptr + offs, c_new, mask=inside)
    tl.store(tanh_c_ptr + offs, tanh_c, mask=inside)
    if MASKED:
        keep = tl.load(valid_ptr + n, mask=inside, other=1.0) > 0.5
        h_old = tl.load(h_prev_ptr + offs, mask=inside, other=0.0)
        tl.store(h_next_ptr + offs, tl.where(keep, h_new, h_old), mask=inside)
        tl.store(c_next_ptr + offs, tl.where(keep, c_new, c), mask=inside)
        tl.store(out_ptr + offs, tl.where(keep, h_new, 0.0), mask=inside)
    else:
        tl.store(h_next_ptr + offs, h_new, mask=inside)
        tl.store(c_next_ptr + offs, c_new, mask=inside)
        tl.store(out_ptr + offs, h_new, mask=inside)


@triton.jit
def _lstm_step_back(grad_out_ptr, rec_ptr, grad_h_ptr, grad_c_ptr, acts_ptr, c_prev_ptr,
                    tanh_c_ptr, grad_gates_ptr, peep_ptr, valid_ptr, valid_next_ptr, total,
                    COUPLED: tl.constexpr, PEEP: tl.constexpr, MASKED: tl.constexpr,
                    HIDDEN: tl.constexpr, GATES: tl.constexpr, BLOCK: tl.constexpr):
    offs, inside, n, j = _elements(total, HIDDEN, BLOCK)
    gates = GATES  # 3 when coupled, else 4
    row = acts_ptr + n * (gates * HIDDEN) + j
    grad_row = grad_gates_ptr + n * (gates * HIDDEN) + j
    grad_h = tl.load(grad_out_ptr + offs, mask=inside, other=0.0)
    grad_h += _carry_in(rec_ptr, grad_h_ptr, valid_next_ptr, n, offs, inside, MASKED)
    grad_c_old = tl.load(grad_c_ptr + offs, mask=inside, other=0.0)
    grad_c = grad_c_old
    if MASKED:
        keep = tl.load(valid_ptr + n, mask=inside, other=1.0) > 0.5
        grad_h = tl.where(keep, grad_h, 0.0)
        grad_c = tl.where(keep, grad_c, 0.0)
    o = tl.load(row + (gates - 1) * HIDDEN, mask=inside, other=0.0)
    tanh_c = tl.load(tanh_c_ptr + offs, mask=inside, other=0.0)
    c_prev = tl.load(c_prev_ptr + offs, mask=inside, other=0.0)
    grad_c_new = grad_c + grad_h * o * (1.0 - tanh_c * tanh_c)
    grad_o = grad_h * tanh_c * o * (1.0 - o)
    if PEEP:
        grad_c_new += grad_o * tl.load(peep_ptr + (gates - 2) * HIDDEN + j, mask=inside, other=0.0)
    tl.store(grad_row + (gates - 1) * HIDDEN, grad_o, mask=inside)
    if COUPLED:
        f = tl.load(row, mask=inside, other=0.0)
        g = tl.load(row + HIDDEN, mask=inside, other=0.0)
        grad_f = grad_c_new * (c_prev - g) * f * (1.0 - f)
        grad_g = grad_c_new * (1.0 - f) * (1.0 - g * g)
        grad_c_prev = grad_c_new * f
        if PEEP:
            grad_c_prev += grad_f * tl.load(peep_ptr + j, mask=inside, other=0.0)
        tl.store(grad_row, grad_f, mask=inside)
        tl.store(grad_row + HIDDEN, grad_g, mask=inside)
    else:
        i = tl.load(row, mask=inside, other=0.0)
        f = tl.load(row + HIDDEN, mask=inside, other=0.0)
        g = tl.load(row + 2 * HIDDEN, mask=inside, other=0.0)
        grad_i = grad_c_new * g * i * (1.0 - i)
        grad_f = grad_c_new * c_prev * f * (1.0 - f)
        grad_g = grad_c_new * i * (1.0 - g * g)
        grad_c_prev = grad_c_new * f
        if PEEP:
            grad_c_prev += grad_i * tl.load(peep_ptr + j, mask=inside, other=0.0)
            grad_c_prev += grad_f * tl.load(peep_ptr + HIDDEN + j, mask=inside, other=0.0)
        tl.store(grad_row, grad_i, mask=inside)
        tl.store(grad_row + HIDDEN, grad_f, mask=inside)
        tl.store(grad_row + 2 * HIDDEN, grad_g, mask=inside)
    if MASKED:
        grad_c_prev = tl.where(keep, grad_c_prev, grad_c_old)
    tl.store(grad_c_ptr + offs, grad_c_prev, mask=inside)


def lstm_forward(x_proj, h, c, weight_hh, weight_ch, valid, coupled):
    x_proj = x_proj.contiguous()
    length, batch = x_proj.shape[:2]
    hidden = h.shape[-1]
    rows, masked = _valid_rows(valid, x_proj)
    hs, cs = (x_proj.new_empty(length + 1, batch, hidden) for _ in range(2))
    hs[0], cs[0] = h, c
    acts = torch.empty_like(x_proj)
    c_news, tanh_cs, outputs = (x_proj.new_empty(length, batch, hidden) for _ in range(3))
    weight_t = weight_hh.t()
    peep = weight_ch.contiguous() if weight_ch is not None else rows
    for t in range(length):
        torch.addmm(x_proj[t], hs[t], weight_t, out=acts[t])
        _lstm_step[_grid(batch, hidden)](
            acts[t], cs[t], hs[t], c_news[t], tanh_cs[t], outputs[t], hs[t + 1], cs[t + 1], peep,
            rows[t] if masked else rows, batch * hidden, COUPLED=bool(coupled),
            PEEP=weight_ch is not None, MASKED=masked, HIDDEN=hidden, GATES=3 if coupled else 4,
            BLOCK=BLOCK)
    return outputs, hs[-1], cs[-1], (acts, cs[:-1], c_news, tanh_cs, hs[:-1])


def lstm_backward(grad_out, grad_h, grad_c, weight_hh, weight_ch, valid, saved, coupled,
                  norms=None):
    from seqlab.nn.scan import _peephole_grad

    acts, c_prevs, c_news, tanh_cs, h_prevs = saved
    length, batch, hidden = c_prevs.shape
    rows, masked = _valid_rows(valid, acts)
    grad_out = grad_out.contiguous()
    grad_gates = torch.empty_like(acts)
    peep = weight_ch.contiguous() if weight_ch is not None else rows
    rec, carried, grad_c = _copy(grad_h), _copy(grad_h), _copy(grad_c)
    for t in range(length - 1, -1, -1):
        _lstm_step_back[_grid(batch, hidden)](
            grad_out[t], rec, carried, grad_c, acts[t], c_prevs[t], tanh_cs[t], grad_gates[t], peep,
            rows[t] if masked else rows, rows[t + 1] if masked else rows, batch * hidden,
            COUPLED=bool(coupled), PEEP=weight_ch is not None, MASKED=masked, HIDDEN=hidden,
            GATES=3 if coupled else 4, BLOCK=BLOCK)
        torch.mm(grad_gates[t], weight_hh, out=rec)
    grad_weight_ch = None
    if weight_ch is not None:
        grad_weight_ch = _peephole_grad(grad_gates, c_prevs, c_news, coupled)
    return (grad_gates, _last_carry(rec, carried, valid), grad_c, grad_gates, h_prevs,
            grad_weight_ch)


# ---------------------------------------------------------------------------------------------
# GRU: r, z, n; reset after (torch.nn's): n = tanh(x_n + r ⊙ (W_hn h + b_hn)); reset before:
# n = tanh(x_n + W_hn (r ⊙ h) + b_hn); h' = (1 − z) ⊙ n + z ⊙ h.


@triton.jit
def _gru_gates(x_ptr, hid_ptr, h_prev_ptr, acts_ptr, hidden_n_ptr, h_next_ptr, out_ptr,
               valid_ptr, total, STAGE: tl.constexpr, WIDTH: tl.constexpr, MASKED: tl.constexpr,
               HIDDEN: tl.constexpr, BLOCK: tl.constexpr):
    """STAGE 0: the whole step, reset after (hid = W_hh h + b_hh, (N, 3H)). STAGE 1: reset
    before, r and z (hid = W_hrz h + b_rz, (N, 2H)), and r ⊙ h into hidden_n. STAGE 2: reset
    before, n and the new state (hid = W_hn (r ⊙ h) + b_hn, (N, H))."""
    offs, inside, n_row, j = _elements(total, HIDDEN, BLOCK)
    x_row = x_ptr + n_row * (3 * HIDDEN) + j
    act_row = acts_ptr + n_row * (3 * HIDDEN) + j
    h = tl.load(h_prev_ptr + offs, mask=inside, other=0.0)
    if STAGE < 2:
        hid_row = hid_ptr + n_row * (WIDTH * HIDDEN) + j  # WIDTH: 3 in stage 0, 2 in stage 1
        r = _sigmoid(tl.load(x_row, mask=inside, other=0.0) + tl.load(hid_row, mask=inside, other=0.0))
        z = _sigmoid(tl.load(x_row + HIDDEN, mask=inside, other=0.0)
                     + tl.load(hid_row + HIDDEN, mask=inside, other=0.0))
        tl.store(act_row, r, mask=inside)
        tl.store(act_row + HIDDEN, z, mask=inside)
    if STAGE == 1:
        tl.store(hidden_n_ptr + offs, r * h, mask=inside)
    else:
        if STAGE == 0:
            h_n = tl.load(hid_row + 2 * HIDDEN, mask=inside, other=0.0)
            tl.store(hidden_n_ptr + offs, h_n, mask=inside)
            n = _tanh(tl.load(x_row + 2 * HIDDEN, mask=inside, other=0.0) + r * h_n)
        else:
            z = tl.load(act_row + HIDDEN, mask=inside, other=0.0)
            n = _tanh(tl.load(x_row + 2 * HIDDEN, mask=inside, other=0.0)
                      + tl.load(hid_ptr + offs, mask=inside, other=0.0))
        tl.store(act_row + 2 * HIDDEN, n, mask=inside)
        h_new = n + z * (h - n)
        if MASKED:
            keep = tl.load(valid_ptr + n_row, mask=inside, other=1.0) > 0.5
            tl.store(h_next_ptr + offs, tl.where(keep, h_new, h), mask=inside)
            tl.store(out_ptr + offs, tl.where(keep, h_new, 0.0), mask=inside)
        else:
            tl.store(h_next_ptr + offs, h_new, mask=inside)
            tl.store(out_ptr + offs, h_new, mask=inside)


@triton.jit
def _gru_back(grad_out_ptr, rec_ptr, grad_h_ptr, acts_ptr, h_prev_ptr, hidden_n_ptr,
              grad_x_ptr, grad_hid_ptr, direct_ptr, grad_reset_ptr, valid_ptr, valid_next_ptr,
              total, STAGE: tl.constexpr, MASKED: tl.constexpr, HIDDEN: tl.constexpr,
              BLOCK: tl.constexpr):
    """STAGE 0: reset after, the whole step; direct_ptr gets ∂h'/∂h through z, to which
    dhidden · W_hh is then added. STAGE 1: reset before, n and z, keeping the masked gradient of
    h' in direct_ptr. STAGE 2: reset before, r from the gradient of r ⊙ h (grad_reset_ptr);
    direct_ptr becomes ∂h'/∂h through z and r ⊙ h."""
    offs, inside, n_row, j = _elements(total, HIDDEN, BLOCK)
    act_row = acts_ptr + n_row * (3 * HIDDEN) + j
    x_row = grad_x_ptr + n_row * (3 * HIDDEN) + j
    hid_row = grad_hid_ptr + n_row * (3 * HIDDEN) + j
    r = tl.load(act_row, mask=inside, other=0.0)
    z = tl.load(act_row + HIDDEN, mask=inside, other=0.0)
    if STAGE < 2:
        grad = tl.load(grad_out_ptr + offs, mask=inside, other=0.0)
        grad += _carry_in(rec_ptr, grad_h_ptr, valid_next_ptr, n_row, offs, inside, MASKED)
        if MASKED:
            grad = tl.where(tl.load(valid_ptr + n_row, mask=inside, other=1.0) > 0.5, grad, 0.0)
        n = tl.load(act_row + 2 * HIDDEN, mask=inside, other=0.0)
        h = tl.load(h_prev_ptr + offs, mask=inside, other=0.0)
        grad_n = grad * (1.0 - z) * (1.0 - n * n)
        grad_z = grad * (h - n) * z * (1.0 - z)
        tl.store(x_row + HIDDEN, grad_z, mask=inside)
        tl.store(hid_row + HIDDEN, grad_z, mask=inside)
        tl.store(x_row + 2 * HIDDEN, grad_n, mask=inside)
        if STAGE == 0:
            h_n = tl.load(hidden_n_ptr + offs, mask=inside, other=0.0)
            grad_r = grad_n * h_n * r * (1.0 - r)
            tl.store(x_row, grad_r, mask=inside)
            tl.store(hid_row, grad_r, mask=inside)
            tl.store(hid_row + 2 * HIDDEN, grad_n * r, mask=inside)
            tl.store(direct_ptr + offs, grad * z, mask=inside)
        else:
            tl.store(hid_row + 2 * HIDDEN, grad_n, mask=inside)
            tl.store(direct_ptr + offs, grad, mask=inside)
    else:
        h = tl.load(h_prev_ptr + offs, mask=inside, other=0.0)
        grad_reset = tl.load(grad_reset_ptr + offs, mask=inside, other=0.0)
        grad_r = grad_reset * h * r * (1.0 - r)
        tl.store(x_row, grad_r, mask=inside)
        tl.store(hid_row, grad_r, mask=inside)
        grad = tl.load(direct_ptr + offs, mask=inside, other=0.0)
        tl.store(direct_ptr + offs, grad * z + grad_reset * r, mask=inside)


def gru_forward(x_proj, h, weight_hh, bias_hh, valid, reset_after):
    x_proj = x_proj.contiguous()
    length, batch = x_proj.shape[:2]
    hidden = h.shape[-1]
    rows, masked = _valid_rows(valid, x_proj)
    hs = x_proj.new_empty(length + 1, batch, hidden)
    hs[0] = h
    acts = torch.empty_like(x_proj)
    outputs, hidden_n = (x_proj.new_empty(length, batch, hidden) for _ in range(2))
    w_t = weight_hh.t()
    w_rz, w_n = w_t[:, : 2 * hidden], w_t[:, 2 * hidden:]
    zeros = x_proj.new_zeros(3 * hidden)
    bias = bias_hh if bias_hh is not None else zeros
    b_rz, b_n = bias[: 2 * hidden], bias[2 * hidden:]
    hid = x_proj.new_empty(batch, (3 if reset_after else 2) * hidden)
    hid_n = x_proj.new_empty(batch, hidden)
    grid = _grid(batch, hidden)
    for t in range(length):
        valid_t = rows[t] if masked else rows
        common = {"MASKED": masked, "HIDDEN": hidden, "BLOCK": BLOCK}
        if reset_after:
            torch.addmm(bias, hs[t], w_t, out=hid)
            _gru_gates[grid](x_proj[t], hid, hs[t], acts[t], hidden_n[t], hs[t + 1], outputs[t],
                             valid_t, batch * hidden, STAGE=0, WIDTH=3, **common)
        else:
            torch.addmm(b_rz, hs[t], w_rz, out=hid)
            _gru_gates[grid](x_proj[t], hid, hs[t], acts[t], hidden_n[t], hs[t + 1], outputs[t],
                             valid_t, batch * hidden, STAGE=1, WIDTH=2, **common)
            torch.addmm(b_n, hidden_n[t], w_n, out=hid_n)
            _gru_gates[grid](x_proj[t], hid_n, hs[t], acts[t], hidden_n[t], hs[t + 1], outputs[t],
                             valid_t, batch * hidden, STAGE=2, WIDTH=1, **common)
    return outputs, hs[-1], (acts, hs[:-1], hidden_n)


def gru_backward(grad_out, grad_h, weight_hh, valid, saved, reset_after, norms=None):
    from seqlab.nn.scan import _gru_weight_grads

    acts, h_prevs, hidden_n = saved
    length, batch, hidden = h_prevs.shape
    rows, masked = _valid_rows(valid, acts)
    grad_out = grad_out.contiguous()
    grad_x_proj, grad_hidden = torch.empty_like(acts), torch.empty_like(acts)
    w_rz, w_n = weight_hh[: 2 * hidden], weight_hh[2 * hidden:]
    rec, carried = _copy(grad_h), _copy(grad_h)
    grad_reset, direct = torch.empty_like(rec), torch.empty_like(rec)  # reset before only
    grid = _grid(batch, hidden)
    for t in range(length - 1, -1, -1):
        args = (grad_out[t], rec, carried, acts[t], h_prevs[t], hidden_n[t], grad_x_proj[t],
                grad_hidden[t])
        common = {"MASKED": masked, "HIDDEN": hidden, "BLOCK": BLOCK}
        valid_t, valid_next = (rows[t], rows[t + 1]) if masked else (rows, rows)
        if reset_after:
            # rec is read (the carry) before it is overwritten with this step's direct part
            _gru_back[grid](*args, rec, grad_reset, valid_t, valid_next, batch * hidden, STAGE=0,
                            **common)
            rec.addmm_(grad_hidden[t], weight_hh)
        else:
            _gru_back[grid](*args, direct, grad_reset, valid_t, valid_next, batch * hidden,
                            STAGE=1, **common)
            torch.mm(grad_hidden[t][:, 2 * hidden:], w_n, out=grad_reset)
            _gru_back[grid](*args, direct, grad_reset, valid_t, valid_next, batch * hidden,
                            STAGE=2, **common)
            torch.addmm(direct, grad_hidden[t][:, : 2 * hidden], w_rz, out=rec)
    return (grad_x_proj, _last_carry(rec, carried, valid),
            *_gru_weight_grads(grad_hidden, h_prevs, hidden_n, reset_after))


# ---------------------------------------------------------------------------------------------
# CUDA graphs: one capture per function and shape, replayed.

GRAPH_CACHE = 8  # captured loops kept (each holds its buffers on the GPU)
_graphs: OrderedDict = OrderedDict()


def _signature(value):
    if isinstance(value, Tensor):
        return ("tensor", tuple(value.shape), tuple(value.stride()), value.dtype, value.device)
    if isinstance(value, (tuple, list)):
        return tuple(_signature(v) for v in value)
    return value


def _copy_in(static, value) -> None:
    if isinstance(value, Tensor):
        static.copy_(value)
    elif isinstance(value, (tuple, list)):
        for s, v in zip(static, value):
            _copy_in(s, v)


def _copy_out(value):
    if isinstance(value, Tensor):
        return value.clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_copy_out(v) for v in value)
    return value


def _static(value):
    if isinstance(value, Tensor):
        return value.clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_static(v) for v in value)
    return value


def graphed(function, *args, **kwargs):
    """`function(*args, **kwargs)` (a loop above, on CUDA tensors) as the replay of a CUDA graph
    captured the first time these shapes, strides and settings came."""
    key = (function.__name__, _signature(args), tuple(sorted(kwargs.items())))
    entry = _graphs.get(key)
    if entry is None:
        static = _static(args)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # compiles the kernels and warms cuBLAS before capture
            function(*static, **kwargs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the backward loop is captured on autograd's own thread
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            result = function(*static, **kwargs)
        entry = _graphs[key] = (graph, static, result)
        while len(_graphs) > GRAPH_CACHE:
            _graphs.popitem(last=False)
    else:
        _graphs.move_to_end(key)
    graph, static, result = entry
    _copy_in(static, args)
    graph.replay()
    return _copy_out(result)
