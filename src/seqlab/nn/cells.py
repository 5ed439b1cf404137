"""Recurrent cells: one time step of a vanilla RNN, an LSTM (with peepholes and coupled gates) and a GRU.

Each cell is written as a *step function* that takes the input already projected
(``x_proj = W_ih x + b_ih``) and the previous state, so the layers in
:mod:`seqlab.nn.recurrent` can project the whole sequence with one matrix product before the
time loop and reuse exactly the same gate math. The ``*Cell`` modules below wrap the step
functions with their parameters and mirror ``torch.nn.RNNCell / LSTMCell / GRUCell``: same
argument names, parameter names (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``) and gate
layouts (LSTM ``i, f, g, o``; GRU ``r, z, n``), so ``load_state_dict`` of a torch cell just works.

Shapes (symbols used in every docstring of this package):

    N      batch size
    H_in   input features (``input_size``)
    H      hidden features (``hidden_size``)
    G      gates: 1 (RNN), 4 (LSTM), 3 (coupled LSTM), 3 (GRU)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

NONLINEARITIES = ("tanh", "relu")
INITS = ("default", "identity")


def check_choice(name: str, value, allowed) -> None:
    """Raise a ValueError naming the bad value and the allowed ones."""
    if value not in allowed:
        allowed_text = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {allowed_text}; got {value!r}")


def check_size(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


def rnn_step(x_proj: Tensor, h: Tensor, weight_hh: Tensor, bias_hh: Tensor | None,
             nonlinearity: str) -> Tensor:
    """h' = act(x_proj + W_hh h + b_hh), with x_proj = W_ih x + b_ih.  (N, H)"""
    pre = x_proj + F.linear(h, weight_hh, bias_hh)
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def lstm_step(x_proj: Tensor, h: Tensor, c: Tensor, weight_hh: Tensor, bias_hh: Tensor | None,
              weight_ch: Tensor | None = None, coupled: bool = False) -> tuple[Tensor, Tensor]:
    """One LSTM step; see :class:`LSTMCell` for the equations.  Returns (h', c'), each (N, H)."""
    gates = x_proj + F.linear(h, weight_hh, bias_hh)  # (N, G*H)
    if coupled:
        f, g, o = gates.chunk(3, dim=1)
    else:
        i, f, g, o = gates.chunk(4, dim=1)
    if weight_ch is not None:
        # Peepholes are diagonal: each gate unit sees only its own cell.
        if coupled:
            w_cf, w_co = weight_ch.chunk(2)
        else:
            w_ci, w_cf, w_co = weight_ch.chunk(3)
            i = i + w_ci * c
        f = f + w_cf * c
    f = torch.sigmoid(f)
    i = 1.0 - f if coupled else torch.sigmoid(i)
    c_next = f * c + i * torch.tanh(g)
    if weight_ch is not None:
        o = o + w_co * c_next  # the output gate looks at the new cell
    h_next = torch.sigmoid(o) * torch.tanh(c_next)
    return h_next, c_next


def gru_step(x_proj: Tensor, h: Tensor, weight_hh: Tensor, bias_hh: Tensor | None,
             reset_after: bool = True) -> Tensor:
    """One GRU step; see :class:`GRUCell` for the equations.  Returns h' (N, H)."""
    x_r, x_z, x_n = x_proj.chunk(3, dim=1)
    hidden = h.shape[1]
    if reset_after:
        h_r, h_z, h_n = F.linear(h, weight_hh, bias_hh).chunk(3, dim=1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
    else:
        # The reset gate scales h *before* the candidate's matrix product.
        bias_rz = bias_n = None
        if bias_hh is not None:
            bias_rz, bias_n = bias_hh[: 2 * hidden], bias_hh[2 * hidden:]
        h_r, h_z = F.linear(h, weight_hh[: 2 * hidden], bias_rz).chunk(2, dim=1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + F.linear(r * h, weight_hh[2 * hidden:], bias_n))
    return (1.0 - z) * n + z * h


def num_gates(mode: str, coupled: bool = False) -> int:
    if mode == "LSTM":
        return 3 if coupled else 4
    return {"RNN": 1, "GRU": 3}[mode]


def reset_recurrent_parameters(module: nn.Module, hidden_size: int, init: str = "default") -> None:
    """torch.nn's initialisation: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)).

    ``init="identity"`` (IRNN, Le et al. 2015) sets each ``weight_hh`` to the identity, every bias
    to zero and each ``weight_ih`` ~ N(0, 0.001²) as in the paper.
    """
    bound = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0
    for name, parameter in module.named_parameters(recurse=False):
        if init == "identity":
            if name.startswith("weight_hh"):
                with torch.no_grad():
                    parameter.copy_(torch.eye(hidden_size, dtype=parameter.dtype,
                                              device=parameter.device))
            elif name.startswith("bias"):
                nn.init.zeros_(parameter)
            else:
                nn.init.normal_(parameter, mean=0.0, std=0.001)
        else:
            nn.init.uniform_(parameter, -bound, bound)


class _CellBase(nn.Module):
    """Parameters and input checks shared by the three cells."""

    mode = ""

    def __init__(self, input_size: int, hidden_size: int, bias: bool, gates: int) -> None:
        super().__init__()
        check_size("input_size", input_size)
        check_size("hidden_size", hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.weight_ih = nn.Parameter(torch.empty(gates * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(gates * hidden_size, hidden_size))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(gates * hidden_size))
            self.bias_hh = nn.Parameter(torch.empty(gates * hidden_size))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)

    def _prepare(self, input: Tensor, hx: Tensor | None) -> tuple[Tensor, bool]:
        if input.dim() not in (1, 2):
            raise ValueError(
                f"{type(self).__name__} expects input of shape (N, {self.input_size}) or "
                f"({self.input_size},); got {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__} expects {self.input_size} input features (input_size); "
                f"got input of shape {tuple(input.shape)}")
        unbatched = input.dim() == 1
        return (input.unsqueeze(0) if unbatched else input), unbatched

    def _state(self, hx: Tensor | None, batch: int, input: Tensor, unbatched: bool) -> Tensor:
        if hx is None:
            return input.new_zeros(batch, self.hidden_size)
        hx = hx.unsqueeze(0) if unbatched else hx
        if hx.shape != (batch, self.hidden_size):
            expected = (self.hidden_size,) if unbatched else (batch, self.hidden_size)
            shape = tuple(hx.shape[1:]) if unbatched else tuple(hx.shape)
            raise ValueError(f"{type(self).__name__} expects a state of shape {expected}; "
                             f"got {shape}")
        return hx

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class RNNCell(_CellBase):
    r"""Elman RNN cell (Elman 1990).

        h' = act(W_ih x + b_ih + W_hh h + b_hh),   act = tanh or ReLU

    ``init="identity"`` gives the IRNN of Le, Jaitly & Hinton (2015), "A Simple Way to Initialize
    Recurrent Networks of Rectified Linear Units": W_hh = I and zero biases, so a ReLU network
    starts by copying its state forward and gradients neither vanish nor explode at first.

    Shapes: input (N, H_in) or (H_in,); hx and output (N, H) or (H,).
    Parameters: weight_ih (H, H_in), weight_hh (H, H), bias_ih (H), bias_hh (H).
    """

    mode = "RNN"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", init: str = "default") -> None:
        check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
        check_choice("init", init, INITS)
        super().__init__(input_size, hidden_size, bias, gates=1)
        self.nonlinearity = nonlinearity
        self.init = init
        reset_recurrent_parameters(self, hidden_size, init)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, unbatched = self._prepare(input, hx)
        h = self._state(hx, x.shape[0], x, unbatched)
        h = rnn_step(F.linear(x, self.weight_ih, self.bias_ih), h, self.weight_hh, self.bias_hh,
                     self.nonlinearity)
        return h.squeeze(0) if unbatched else h


class LSTMCell(_CellBase):
    r"""Long short-term memory cell (Hochreiter & Schmidhuber 1997; forget gate, Gers et al. 2000).

        i  = σ(W_ii x + b_ii + W_hi h + b_hi [+ w_ci ⊙ c])
        f  = σ(W_if x + b_if + W_hf h + b_hf [+ w_cf ⊙ c])
        g  = tanh(W_ig x + b_ig + W_hg h + b_hg)
        c' = f ⊙ c + i ⊙ g
        o  = σ(W_io x + b_io + W_ho h + b_ho [+ w_co ⊙ c'])
        h' = o ⊙ tanh(c')

    ``peephole=True`` adds the bracketed diagonal peephole terms of Gers & Schmidhuber (2000),
    "Recurrent nets that time and count": i and f look at the previous cell c, o at the new cell
    c'. They live in ``weight_ch`` of shape (3·H), ordered i, f, o.

    ``coupled=True`` ties the input gate to the forget gate, i = 1 − f (the "CIFG" variant of
    Greff et al. 2017, "LSTM: A Search Space Odyssey"). The input gate then has no parameters:
    ``weight_ih`` / ``weight_hh`` / biases hold 3 gates in the order f, g, o, and with peepholes
    ``weight_ch`` holds (2·H) for f and o.

    Shapes: input (N, H_in) or (H_in,); hx = (h, c), each (N, H) or (H,); returns (h', c').
    Parameters: weight_ih (G·H, H_in), weight_hh (G·H, H), bias_ih (G·H), bias_hh (G·H),
    weight_ch (3·H or 2·H) with ``peephole``; G = 4, or 3 when coupled.
    """

    mode = "LSTM"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 peephole: bool = False, coupled: bool = False) -> None:
        super().__init__(input_size, hidden_size, bias, gates=num_gates("LSTM", coupled))
        self.peephole = peephole
        self.coupled = coupled
        if peephole:
            self.weight_ch = nn.Parameter(torch.empty((2 if coupled else 3) * hidden_size))
        else:
            self.register_parameter("weight_ch", None)
        reset_recurrent_parameters(self, hidden_size)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, Tensor]:
        x, unbatched = self._prepare(input, hx)
        if hx is None:
            h = c = x.new_zeros(x.shape[0], self.hidden_size)
        else:
            h = self._state(hx[0], x.shape[0], x, unbatched)
            c = self._state(hx[1], x.shape[0], x, unbatched)
        h, c = lstm_step(F.linear(x, self.weight_ih, self.bias_ih), h, c, self.weight_hh,
                         self.bias_hh, self.weight_ch, self.coupled)
        return (h.squeeze(0), c.squeeze(0)) if unbatched else (h, c)

    def extra_repr(self) -> str:
        options = [name for name in ("peephole", "coupled") if getattr(self, name)]
        return super().extra_repr() + "".join(f", {name}=True" for name in options)


class GRUCell(_CellBase):
    r"""Gated recurrent unit cell (Cho et al. 2014).

        r  = σ(W_ir x + b_ir + W_hr h + b_hr)
        z  = σ(W_iz x + b_iz + W_hz h + b_hz)
        n  = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))        reset_after=True  (torch / cuDNN)
        n  = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)        reset_after=False (Cho et al.)
        h' = (1 − z) ⊙ n + z ⊙ h

    Cho et al. write h' = z ⊙ h + (1 − z) ⊙ h̃ with z the *update* gate, as here; many course notes
    write h' = (1 − z) ⊙ h + z ⊙ h̃ instead. The two are the same model with z replaced by 1 − z
    (the gate's weights and bias change sign), so either reading trains identically. seqlab keeps
    torch's convention so torch checkpoints load unchanged.

    Shapes: input (N, H_in) or (H_in,); hx and output (N, H) or (H,).
    Parameters: weight_ih (3·H, H_in), weight_hh (3·H, H), bias_ih (3·H), bias_hh (3·H); gates r, z, n.
    """

    mode = "GRU"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 reset_after: bool = True) -> None:
        super().__init__(input_size, hidden_size, bias, gates=3)
        self.reset_after = reset_after
        reset_recurrent_parameters(self, hidden_size)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, unbatched = self._prepare(input, hx)
        h = self._state(hx, x.shape[0], x, unbatched)
        h = gru_step(F.linear(x, self.weight_ih, self.bias_ih), h, self.weight_hh, self.bias_hh,
                     self.reset_after)
        return h.squeeze(0) if unbatched else h

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.reset_after else ", reset_after=False")
