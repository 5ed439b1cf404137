"""The export path of the recurrent layers: each layer becomes one ONNX ``LSTM`` / ``GRU`` / ``RNN`` op.

A seqlab recurrent layer runs its time loop in Python or in compiled C++ (``seqlab.nn.scan``),
and neither can be traced into a graph whose sequence length stays free. ONNX has the three
cells as single operators that run the whole loop, read a per-sequence length and go both
directions, and its attributes cover every variant seqlab offers:

=================================== ===========================================================
seqlab                              ONNX
=================================== ===========================================================
LSTM gates i, f, g, o               gates i, o, f, c (rows reordered)
LSTM ``peephole`` (i, f, o)         input ``P`` (i, o, f)
LSTM ``coupled`` (f, g, o; i = 1-f) i rows = -(f rows): sigmoid(-a) = 1 - sigmoid(a)
GRU gates r, z, n                   gates z, r, h
GRU ``reset_after=True`` / False    ``linear_before_reset=1`` / 0
RNN ``nonlinearity`` tanh / relu    ``activations=["Tanh"]`` / ``["Relu"]``
``lengths`` (right padding)         ``sequence_lens``: zeros past each length, h_n at its end,
                                    the reverse direction starting from its last valid step
=================================== ===========================================================

:func:`export_recurrent_layers` swaps every seqlab layer of a model for :class:`OnnxRecurrent`,
which shares the layer's parameters: in eager mode it runs the ONNX equations written out below
(so the swapped model can be checked against the original before exporting), and when traced by
``torch.onnx.export`` each layer turns into the one ONNX op. Stacked layers are one op each, with
the directions merged (concat / sum / mean / max) between them as the layer does.

Shapes: L length, N batch, D directions, H hidden size, G gates (LSTM 4, GRU 3, RNN 1).
ONNX weights: W (D, G·H, H_in), R (D, G·H, H), B (D, 2·G·H), P (D, 3·H); Y (L, D, N, H).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from seqlab.nn.recurrent import GRU, LSTM, RNN, merge_directions

__all__ = ["OnnxRecurrent", "export_recurrent_layers", "onnx_weights"]

_LAYERS = (RNN, LSTM, GRU)


def _reorder(rows: Tensor, mode: str, coupled: bool, hidden: int) -> Tensor:
    """seqlab gate blocks (first dim) in ONNX's order: LSTM iofc, GRU zrh, RNN unchanged."""
    blocks = list(rows.split(hidden))
    if mode == "LSTM" and coupled:
        f, g, o = blocks
        return torch.cat([-f, o, f, g])  # i = sigmoid(-f_pre) = 1 - f
    if mode == "LSTM":
        i, f, g, o = blocks
        return torch.cat([i, o, f, g])
    if mode == "GRU":
        r, z, n = blocks
        return torch.cat([z, r, n])
    return rows


def onnx_weights(layer: nn.Module, index: int) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Layer `index`'s weights in ONNX layout: W, R, B and the peepholes P (None without them)."""
    mode, hidden, coupled = layer.mode, layer.hidden_size, layer.coupled
    ws, rs, bs, ps = [], [], [], []
    for suffix in ("", "_reverse")[: layer.num_directions]:
        w_ih = getattr(layer, f"weight_ih_l{index}{suffix}")
        w_hh = getattr(layer, f"weight_hh_l{index}{suffix}")
        ws.append(_reorder(w_ih, mode, coupled, hidden))
        rs.append(_reorder(w_hh, mode, coupled, hidden))
        if layer.bias:
            b_ih = getattr(layer, f"bias_ih_l{index}{suffix}")
            b_hh = getattr(layer, f"bias_hh_l{index}{suffix}")
            bs.append(torch.cat([_reorder(b_ih, mode, coupled, hidden),
                                 _reorder(b_hh, mode, coupled, hidden)]))
        else:
            bs.append(w_ih.new_zeros(2 * rs[-1].shape[0]))
        if layer.peephole:
            peep = getattr(layer, f"weight_ch_l{index}{suffix}").split(hidden)
            if coupled:
                f, o = peep
                ps.append(torch.cat([-f, o, f]))
            else:
                i, f, o = peep
                ps.append(torch.cat([i, o, f]))
    peepholes = torch.stack(ps) if ps else None
    return torch.stack(ws), torch.stack(rs), torch.stack(bs), peepholes


def _activation(name: str, x: Tensor) -> Tensor:
    return torch.tanh(x) if name == "Tanh" else torch.relu(x)


def _onnx_cell(mode: str, x: Tensor, h: Tensor, c: Tensor | None, w: Tensor, r: Tensor, b: Tensor,
               p: Tensor | None, option) -> tuple[Tensor, Tensor | None]:
    """One step of one direction, as the ONNX operator documents it: x (N, H_in), h (N, H)."""
    hidden = h.shape[-1]
    gates_x = x @ w.t() + b[: w.shape[0]]  # (N, G·H)
    gates_h = h @ r.t() + b[w.shape[0]:]
    if mode == "RNN":
        return _activation(option, gates_x + gates_h), None
    if mode == "GRU":
        zx, rx, nx = gates_x.split(hidden, -1)
        zh, rh, _ = gates_h.split(hidden, -1)
        z, reset = torch.sigmoid(zx + zh), torch.sigmoid(rx + rh)
        if option:  # linear_before_reset
            n = torch.tanh(nx + reset * gates_h[:, 2 * hidden:])
        else:
            n = torch.tanh(nx + (reset * h) @ r[2 * hidden:].t() + b[w.shape[0] + 2 * hidden:])
        return (1 - z) * n + z * h, None
    i_pre, o_pre, f_pre, g_pre = (gates_x + gates_h).split(hidden, -1)
    p_i, p_o, p_f = (None, None, None) if p is None else p.split(hidden)
    f = torch.sigmoid(f_pre if p is None else f_pre + p_f * c)
    i = torch.sigmoid(i_pre if p is None else i_pre + p_i * c)
    c_new = f * c + i * torch.tanh(g_pre)
    o = torch.sigmoid(o_pre if p is None else o_pre + p_o * c_new)
    return o * torch.tanh(c_new), c_new


class _OnnxRecurrentOp(torch.autograd.Function):
    """One layer, all directions: eager = the ONNX equations; traced = the ONNX op itself."""

    @staticmethod
    def forward(ctx, x, h0, c0, lengths, w, r, b, p, mode, direction, option, hidden):
        length, batch = x.shape[:2]
        if torch.jit.is_tracing():
            # Exporting: the graph holds the ONNX op (see `symbolic`), and the loop below would
            # only be recorded to be thrown away. Right shapes are all the tracer needs.
            y = x.new_zeros(length, w.shape[0], batch, h0.shape[-1])
            c_n = torch.zeros_like(h0) if c0 is not None else h0.new_zeros(0)
            return y, torch.zeros_like(h0), c_n
        steps = torch.arange(length, device=x.device)
        if lengths is None:
            lengths = torch.full((batch,), length, dtype=torch.int32, device=x.device)
        lengths = lengths.long()
        ys, hs, cs = [], [], []
        for d in range(w.shape[0]):
            h, c = h0[d], None if c0 is None else c0[d]
            y = x.new_zeros(length, batch, h.shape[-1])
            order = range(length - 1, -1, -1) if d == 1 else range(length)
            for t in order:
                valid = (steps[t] < lengths)[:, None]  # (N, 1)
                h_new, c_new = _onnx_cell(mode, x[t], h, c, w[d], r[d], b[d],
                                          None if p is None else p[d], option)
                h = torch.where(valid, h_new, h)
                if c is not None:
                    c = torch.where(valid, c_new, c)
                y[t] = torch.where(valid, h_new, torch.zeros_like(h_new))
            ys.append(y)
            hs.append(h)
            cs.append(c)
        y = torch.stack(ys, dim=1)  # (L, D, N, H)
        h_n = torch.stack(hs)
        c_n = torch.stack(cs) if c0 is not None else h_n.new_zeros(0)
        return y, h_n, c_n

    @staticmethod
    def symbolic(g, x, h0, c0, lengths, w, r, b, p, mode, direction, option, hidden):
        from torch.onnx.symbolic_helper import _is_none

        if _is_none(lengths):  # every sequence runs the whole length: L repeated N times
            shape = g.op("Shape", x)
            length = g.op("Slice", shape, g.op("Constant", value_t=torch.tensor([0])),
                          g.op("Constant", value_t=torch.tensor([1])))
            batch = g.op("Slice", shape, g.op("Constant", value_t=torch.tensor([1])),
                         g.op("Constant", value_t=torch.tensor([2])))
            lengths = g.op("Cast", g.op("Expand", length, batch), to_i=6)  # int32
        attributes = {"direction_s": direction, "hidden_size_i": hidden}
        if mode == "LSTM":
            inputs = [x, w, r, b, lengths, h0, c0] + ([] if _is_none(p) else [p])
            return g.op("LSTM", *inputs, outputs=3, **attributes)
        if mode == "GRU":
            attributes["linear_before_reset_i"] = int(bool(option))
        else:
            directions = 2 if direction == "bidirectional" else 1
            attributes["activations_s"] = [option] * directions
        y, h_n = g.op(mode, x, w, r, b, lengths, h0, outputs=2, **attributes)
        return y, h_n, h_n  # no cell state: the third output is never read


class OnnxRecurrent(nn.Module):
    """A seqlab RNN / LSTM / GRU (same parameters, same forward signature) that exports to ONNX.

    Eval mode only: the dropout between stacked layers is left out, as it is at inference.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        # The ONNX-layout weights, computed once: in the graph they are initializers that feed
        # the operator directly (which is also what int8 quantisation of the LSTM op looks for).
        with torch.no_grad():
            for index in range(layer.num_layers):
                for name, tensor in zip("wrbp", onnx_weights(layer, index)):
                    if tensor is not None:
                        self.register_buffer(f"{name}_l{index}", tensor.detach().clone())

    def forward(self, input: Tensor, hx=None, lengths: Tensor | None = None):
        layer = self.layer
        x = input.transpose(0, 1) if layer.batch_first else input  # (L, N, H_in)
        directions, hidden = layer.num_directions, layer.hidden_size
        if hx is None:
            zeros = x.new_zeros(layer.num_layers * directions, x.shape[1], hidden)
            hx = (zeros, zeros) if layer.mode == "LSTM" else zeros
        h0, c0 = hx if layer.mode == "LSTM" else (hx, None)
        if lengths is not None:
            lengths = lengths.to(torch.int32)
        # The coupled LSTM needs no option: its i rows compute 1 - f (see onnx_weights).
        option = {"RNN": "Tanh" if layer.nonlinearity == "tanh" else "Relu",
                  "LSTM": None, "GRU": layer.reset_after}[layer.mode]
        direction = "bidirectional" if directions == 2 else "forward"
        finals_h, finals_c = [], []
        for index in range(layer.num_layers):
            rows = slice(index * directions, (index + 1) * directions)
            w, r, b, p = (getattr(self, f"{name}_l{index}", None) for name in "wrbp")
            y, h_n, c_n = _OnnxRecurrentOp.apply(
                x, h0[rows], None if c0 is None else c0[rows], lengths, w, r, b, p,
                layer.mode, direction, option, hidden)  # y (L, D, N, H)
            if directions == 2:
                x = merge_directions(y[:, 0], y[:, 1], layer.merge_mode)
            else:
                x = y[:, 0]  # (L, N, H)
            finals_h.append(h_n)
            finals_c.append(c_n)
        output = x.transpose(0, 1) if layer.batch_first else x
        h_n = torch.cat(finals_h)
        return output, ((h_n, torch.cat(finals_c)) if layer.mode == "LSTM" else h_n)


def export_recurrent_layers(model: nn.Module) -> nn.Module:
    """A copy of `model` (eval mode) whose seqlab recurrent layers are :class:`OnnxRecurrent`."""
    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _LAYERS):
                setattr(parent, name, OnnxRecurrent(child))
    return model
