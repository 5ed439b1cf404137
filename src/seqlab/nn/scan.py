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

Tests compare every cell's gradients with autograd through :mod:`seqlab.nn.cells` and run
``torch.autograd.gradcheck`` in float64.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

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


def _rnn_forward(x_proj, h, weight_hh, valid, nonlinearity):
    """h' = act(x_proj + W_hh h); bias_hh is already folded into x_proj."""
    activation = torch.tanh if nonlinearity == "tanh" else torch.relu
    weight_t = weight_hh.t()
    news, prevs = [], []
    for t in range(x_proj.shape[0]):
        prevs.append(h)
        h_new = activation(torch.addmm(x_proj[t], h, weight_t))
        news.append(h_new)
        h = _carry(valid, t, h_new, h)
    return torch.stack(news), h, (torch.stack(news), torch.stack(prevs))


def _rnn_backward(grad_out, grad_h, weight_hh, valid, saved, nonlinearity, norms=None):
    news, prevs = saved
    grad_x_proj = torch.empty_like(news)
    for t in range(news.shape[0] - 1, -1, -1):
        _note(norms, grad_out[t] + grad_h)
        grad_new = _masked(valid, t, grad_out[t] + grad_h)
        if nonlinearity == "tanh":
            grad_pre = grad_new * (1 - news[t] * news[t])  # tanh' = 1 − tanh²
        else:
            grad_pre = grad_new * (news[t] > 0)
        grad_x_proj[t] = grad_pre
        # past a sequence's end the state was carried unchanged, and so is its gradient
        grad_h = _carry(valid, t, grad_pre @ weight_hh, grad_h)
    return grad_x_proj, grad_h, grad_x_proj, prevs


def _lstm_forward(x_proj, h, c, weight_hh, weight_ch, valid, coupled):
    """The LSTM equations of :class:`seqlab.nn.LSTMCell`; bias_hh is folded into x_proj."""
    hidden = h.shape[1]
    weight_t = weight_hh.t()
    if weight_ch is not None:
        w_ci, w_cf, w_co = (None, *weight_ch.chunk(2)) if coupled else weight_ch.chunk(3)
    acts, c_prevs, c_news, tanh_cs, h_prevs = [], [], [], [], []
    for t in range(x_proj.shape[0]):
        h_prevs.append(h)
        c_prevs.append(c)
        gates = torch.addmm(x_proj[t], h, weight_t)  # (N, G·H)
        if coupled:
            f_pre, g_pre, o_pre = gates.split(hidden, dim=1)
        else:
            i_pre, f_pre, g_pre, o_pre = gates.split(hidden, dim=1)
        if weight_ch is not None:
            f_pre = torch.addcmul(f_pre, w_cf, c)
            if not coupled:
                i_pre = torch.addcmul(i_pre, w_ci, c)
        f = torch.sigmoid(f_pre)
        i = 1 - f if coupled else torch.sigmoid(i_pre)
        g = torch.tanh(g_pre)
        c_new = torch.addcmul(f * c, i, g)
        if weight_ch is not None:
            o_pre = torch.addcmul(o_pre, w_co, c_new)
        o = torch.sigmoid(o_pre)
        tanh_c = torch.tanh(c_new)
        h_new = o * tanh_c
        acts.append(torch.cat([f, g, o] if coupled else [i, f, g, o], dim=1))
        c_news.append(c_new)
        tanh_cs.append(tanh_c)
        h, c = _carry(valid, t, h_new, h), _carry(valid, t, c_new, c)
    saved = tuple(torch.stack(s) for s in (acts, c_prevs, c_news, tanh_cs, h_prevs))
    outputs = saved[0][..., -hidden:] * saved[3]  # h_new = o ⊙ tanh(c_new) for every step
    return outputs, h, c, saved


def _lstm_backward(grad_out, grad_h, grad_c, weight_hh, weight_ch, valid, saved, coupled,
                   norms=None):
    acts, c_prevs, c_news, tanh_cs, h_prevs = saved
    hidden = c_prevs.shape[-1]
    if weight_ch is not None:
        w_ci, w_cf, w_co = (None, *weight_ch.chunk(2)) if coupled else weight_ch.chunk(3)
    grad_gates = torch.empty_like(acts)  # (L, N, G·H), the same layout as the gates
    for t in range(acts.shape[0] - 1, -1, -1):
        if coupled:
            f, g, o = acts[t].split(hidden, dim=1)
            i = 1 - f
        else:
            i, f, g, o = acts[t].split(hidden, dim=1)
        _note(norms, grad_out[t] + grad_h)
        grad_h_new = _masked(valid, t, grad_out[t] + grad_h)
        grad_c_new = _masked(valid, t, grad_c)
        # h' = o ⊙ tanh(c')
        grad_o_pre = grad_h_new * tanh_cs[t] * o * (1 - o)
        grad_c_new = grad_c_new + grad_h_new * o * (1 - tanh_cs[t] * tanh_cs[t])
        if weight_ch is not None:
            grad_c_new = grad_c_new + grad_o_pre * w_co
        # c' = f ⊙ c + i ⊙ g
        grad_i = grad_c_new * g
        grad_f = grad_c_new * c_prevs[t]
        if coupled:
            grad_f = grad_f - grad_i  # i = 1 − f
        grad_f_pre = grad_f * f * (1 - f)
        grad_g_pre = grad_c_new * i * (1 - g * g)
        grad_c_prev = grad_c_new * f
        if weight_ch is not None:
            grad_c_prev = grad_c_prev + grad_f_pre * w_cf
        if coupled:
            step = (grad_f_pre, grad_g_pre, grad_o_pre)
        else:
            grad_i_pre = grad_i * i * (1 - i)
            if weight_ch is not None:
                grad_c_prev = grad_c_prev + grad_i_pre * w_ci
            step = (grad_i_pre, grad_f_pre, grad_g_pre, grad_o_pre)
        torch.cat(step, dim=1, out=grad_gates[t])
        grad_h = _carry(valid, t, grad_gates[t] @ weight_hh, grad_h)
        grad_c = _carry(valid, t, grad_c_prev, grad_c)
    grad_weight_ch = None
    if weight_ch is not None:
        # peephole weights are diagonal: sum gate-gradient ⊙ cell over steps and batch
        by_gate = grad_gates.split(hidden, dim=-1)
        pairs = [(by_gate[0], c_prevs), (by_gate[2], c_news)] if coupled else \
            [(by_gate[0], c_prevs), (by_gate[1], c_prevs), (by_gate[3], c_news)]
        grad_weight_ch = torch.cat([(grad * cell).sum((0, 1)) for grad, cell in pairs])
    return grad_gates, grad_h, grad_c, grad_gates, h_prevs, grad_weight_ch


def _gru_forward(x_proj, h, weight_hh, bias_hh, valid, reset_after):
    """The GRU equations of :class:`seqlab.nn.GRUCell` (bias_hh stays apart: r scales part of it)."""
    hidden = h.shape[1]
    w_rz, w_n = weight_hh[: 2 * hidden].t(), weight_hh[2 * hidden:].t()
    b_rz = b_n = None
    if bias_hh is not None:
        b_rz, b_n = bias_hh[: 2 * hidden], bias_hh[2 * hidden:]
    acts, h_prevs, n_inputs, hidden_n = [], [], [], []
    for t in range(x_proj.shape[0]):
        h_prevs.append(h)
        x_r, x_z, x_n = x_proj[t].split(hidden, dim=1)
        h_rz = h @ w_rz if b_rz is None else torch.addmm(b_rz, h, w_rz)
        h_r, h_z = h_rz.split(hidden, dim=1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        # reset after: r ⊙ (W_hn h + b_hn); reset before: W_hn (r ⊙ h) + b_hn
        n_input = h if reset_after else r * h
        h_n = n_input @ w_n if b_n is None else torch.addmm(b_n, n_input, w_n)
        n = torch.tanh(x_n + r * h_n) if reset_after else torch.tanh(x_n + h_n)
        h_new = torch.addcmul(n, z, h - n)  # (1 − z) ⊙ n + z ⊙ h
        acts.append(torch.cat([r, z, n], dim=1))
        n_inputs.append(n_input)
        hidden_n.append(h_n)
        h = _carry(valid, t, h_new, h)
    acts = torch.stack(acts)
    h_prevs = torch.stack(h_prevs)
    z, n = acts[..., hidden:2 * hidden], acts[..., 2 * hidden:]
    outputs = torch.addcmul(n, z, h_prevs - n)
    return outputs, h, (acts, h_prevs, torch.stack(n_inputs), torch.stack(hidden_n))


def _gru_backward(grad_out, grad_h, weight_hh, valid, saved, reset_after, norms=None):
    acts, h_prevs, n_inputs, hidden_n = saved
    hidden = h_prevs.shape[-1]
    w_rz, w_n = weight_hh[: 2 * hidden], weight_hh[2 * hidden:]
    grad_x_proj = torch.empty_like(acts)
    grad_hidden = torch.empty_like(acts)  # gradient of the hidden-side products W_hh (·) + b_hh
    for t in range(acts.shape[0] - 1, -1, -1):
        r, z, n = acts[t].split(hidden, dim=1)
        _note(norms, grad_out[t] + grad_h)
        grad_new = _masked(valid, t, grad_out[t] + grad_h)
        grad_direct = grad_new * z
        grad_z_pre = grad_new * (h_prevs[t] - n) * z * (1 - z)
        grad_n_pre = grad_new * (1 - z) * (1 - n * n)
        if reset_after:
            grad_r_pre = grad_n_pre * hidden_n[t] * r * (1 - r)
            grad_h_n = grad_n_pre * r
        else:
            grad_h_n = grad_n_pre
            grad_reset_h = grad_n_pre @ w_n  # gradient of r ⊙ h
            grad_r_pre = grad_reset_h * h_prevs[t] * r * (1 - r)
            grad_direct = grad_direct + grad_reset_h * r
        torch.cat([grad_r_pre, grad_z_pre, grad_n_pre], dim=1, out=grad_x_proj[t])
        torch.cat([grad_r_pre, grad_z_pre, grad_h_n], dim=1, out=grad_hidden[t])
        grad_h_prev = grad_direct + grad_hidden[t, :, : 2 * hidden] @ w_rz
        if reset_after:
            grad_h_prev = grad_h_prev + grad_h_n @ w_n
        grad_h = _carry(valid, t, grad_h_prev, grad_h)
    flat = grad_hidden.reshape(-1, 3 * hidden)  # (L·N, 3H)
    grad_weight = torch.cat([
        flat[:, : 2 * hidden].t() @ h_prevs.reshape(-1, hidden),
        flat[:, 2 * hidden:].t() @ n_inputs.reshape(-1, hidden),
    ])
    return grad_x_proj, grad_h, grad_weight, flat.sum(0)


class _Scan(torch.autograd.Function):
    """Runs one direction of one layer; the backward pass is the hand-written BPTT above."""

    @staticmethod
    def forward(ctx, x_proj, h0, c0, weight_hh, bias_hh, weight_ch, valid, cell, option, tag):
        ctx.cell, ctx.option = cell, option
        if cell == "LSTM":
            outputs, h, c, saved = _lstm_forward(x_proj, h0, c0, weight_hh, weight_ch, valid,
                                                 option)
        elif cell == "GRU":
            outputs, h, saved = _gru_forward(x_proj, h0, weight_hh, bias_hh, valid, option)
            c = None
        else:
            outputs, h, saved = _rnn_forward(x_proj, h0, weight_hh, valid, option)
            c = None
        if valid is not None:
            outputs = outputs * valid  # a sequence emits zeros past its length
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
        if ctx.cell == "LSTM":
            grad_x_proj, grad_h0, grad_c0, grad_rows, inputs, grad_weight_ch = _lstm_backward(
                grad_out, grad_h, grad_c, weight_hh, weight_ch, valid, saved, ctx.option, norms)
            grad_weight = _outer_sum(grad_rows, inputs)
        elif ctx.cell == "GRU":
            grad_x_proj, grad_h0, grad_weight, grad_bias = _gru_backward(
                grad_out, grad_h, weight_hh, valid, saved, ctx.option, norms)
        else:
            grad_x_proj, grad_h0, grad_rows, inputs = _rnn_backward(
                grad_out, grad_h, weight_hh, valid, saved, ctx.option, norms)
            grad_weight = _outer_sum(grad_rows, inputs)
        if not ctx.has_bias:
            grad_bias = None
        if ctx.records:
            by_step = torch.stack(norms[::-1]).cpu()  # collected from the last step back
            for record in ctx.records:
                record.state_gradient_norms = by_step
        return (grad_x_proj, grad_h0, grad_c0, grad_weight, grad_bias, grad_weight_ch,
                None, None, None, None)


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
    if cell == "LSTM":
        return _Scan.apply(x_proj, h0, c0, weight_hh, None, weight_ch, valid, cell, option, tag)
    outputs, h = _Scan.apply(x_proj, h0, None, weight_hh, bias_hh, None, valid, cell, option,
                             tag)
    return outputs, h, None
