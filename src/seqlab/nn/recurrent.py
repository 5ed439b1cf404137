"""Recurrent layers: RNN, LSTM and GRU over whole sequences, drop-in for their torch.nn namesakes.

A layer runs its cell over time, stacks ``num_layers`` of them (each layer reads the previous
layer's outputs, with dropout in between) and, when ``bidirectional``, runs a second cell from the
end of each sequence back to its start and merges the two directions.

    for each layer k:
        x_proj = W_ih x + b_ih                       # every time step in one matrix product
        for t in 1..L:  h_t = cell(x_proj_t, h_{t-1})  # (and from L down to 1 for the reverse cell)
        x = merge(h_forward, h_backward)             # concat / sum / mean / max, then dropout

Shapes (``batch_first=False``; ``batch_first=True`` swaps L and N in input and output only):

    input   (L, N, H_in)  or unbatched (L, H_in), or a PackedSequence
    h_0     (D·num_layers, N, H)  or unbatched (D·num_layers, H); LSTM also c_0, same shape
    output  (L, N, D·H) for merge_mode="concat", else (L, N, H)
    h_n     (D·num_layers, N, H); LSTM also c_n
    lengths (N,) valid length of each right-padded sequence

    L length, N batch, H_in input features, H hidden features, D = 2 if bidirectional else 1.

Parameters carry torch.nn's names and layouts: ``weight_ih_l{k}``, ``weight_hh_l{k}``,
``bias_ih_l{k}``, ``bias_hh_l{k}`` and the ``_reverse`` suffix for the backward direction (plus
``weight_ch_l{k}`` for LSTM peepholes), so ``load_state_dict(torch_module.state_dict())`` works.

With ``lengths`` (or a PackedSequence) every sequence is treated as if it ran alone: outputs past
its length are zero, its final state is taken at its last valid step and the backward direction
starts at that step.

Speed: when the cell is one torch has a fused kernel for (tanh / ReLU RNN, plain LSTM, GRU with
``reset_after=True``) the layer calls that kernel (cuDNN on a GPU), for all layers at once when
``merge_mode="concat"`` and one layer at a time otherwise. The other variants run the visible time
loop below, with the input projection hoisted out of it. ``fused=False`` forces the visible loop.
"""

from __future__ import annotations

import warnings

import torch
from torch import _VF, Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from seqlab.nn.cells import (
    INITS,
    NONLINEARITIES,
    check_choice,
    check_size,
    num_gates,
    reset_recurrent_parameters,
)
from seqlab.nn.scan import scan

MERGE_MODES = ("concat", "sum", "mean", "max")

State = Tensor | tuple[Tensor, Tensor]


def check_lengths(lengths: Tensor, x: Tensor) -> Tensor:
    """Validate per-sequence lengths against a time-major batch x (L, N, ·); return them int64 (N,)."""
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    if lengths.dim() != 1 or lengths.shape[0] != x.shape[1]:
        raise ValueError(f"lengths must have shape ({x.shape[1]},), one length per sequence; "
                         f"got {tuple(lengths.shape)}")
    if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > x.shape[0]):
        raise ValueError(f"lengths must lie in [1, {x.shape[0]}] (the padded length); got "
                         f"min {int(lengths.min())}, max {int(lengths.max())}")
    return lengths


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of a time-major batch within its own length; padding stays put.

    x (L, N, F), lengths (N,) -> (L, N, F). Applying it twice gives x back.
    """
    if lengths is None:
        return x.flip(0)
    steps = torch.arange(x.shape[0], device=x.device).unsqueeze(1)  # (L, 1)
    lengths = lengths.to(x.device).unsqueeze(0)  # (1, N)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)  # (L, N)
    return x.gather(0, index.unsqueeze(-1).expand_as(x))


def merge_directions(forward: Tensor, backward: Tensor, merge_mode: str) -> Tensor:
    """Combine the two directions' outputs, each (L, N, H), into (L, N, 2H) or (L, N, H)."""
    if merge_mode == "concat":
        return torch.cat([forward, backward], dim=-1)
    if merge_mode == "sum":
        return forward + backward
    if merge_mode == "mean":
        return (forward + backward) / 2
    return torch.maximum(forward, backward)


class _RecurrentLayer(nn.Module):
    """What RNN, LSTM and GRU share: parameters, argument checks, stacking, directions, lengths."""

    mode = ""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 merge_mode: str = "concat", *, nonlinearity: str = "tanh",
                 init: str = "default", peephole: bool = False, coupled: bool = False,
                 reset_after: bool = True, fused: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        check_size("input_size", input_size)
        check_size("hidden_size", hidden_size)
        check_size("num_layers", num_layers)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not (
                0 <= dropout <= 1):
            raise ValueError(f"dropout should be a number in range [0, 1]; got {dropout!r}")
        check_choice("merge_mode", merge_mode, MERGE_MODES)
        if merge_mode != "concat" and not bidirectional:
            raise ValueError(f"merge_mode={merge_mode!r} combines two directions and needs "
                             "bidirectional=True; drop merge_mode or set bidirectional=True")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout={dropout} acts between recurrent layers and has no effect with "
                          "num_layers=1", stacklevel=3)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.merge_mode = merge_mode
        self.nonlinearity = nonlinearity
        self.init = init
        self.peephole = peephole
        self.coupled = coupled
        self.reset_after = reset_after
        self.fused = fused

        directions = 2 if bidirectional else 1
        gate_size = num_gates(self.mode, coupled) * hidden_size
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else self.output_size
            for suffix in self._suffixes()[:directions]:
                self._add(f"weight_ih_l{layer}{suffix}", gate_size, layer_input, **factory)
                self._add(f"weight_hh_l{layer}{suffix}", gate_size, hidden_size, **factory)
                if bias:
                    self._add(f"bias_ih_l{layer}{suffix}", gate_size, **factory)
                    self._add(f"bias_hh_l{layer}{suffix}", gate_size, **factory)
                if peephole:
                    self._add(f"weight_ch_l{layer}{suffix}", (2 if coupled else 3) * hidden_size,
                              **factory)
        reset_recurrent_parameters(self, hidden_size, init)
        self.flatten_parameters()

    @staticmethod
    def _suffixes() -> tuple[str, str]:
        return ("", "_reverse")

    def _add(self, name: str, *shape: int, device=None, dtype=None) -> None:
        self.register_parameter(name, nn.Parameter(torch.empty(*shape, device=device, dtype=dtype)))

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Features per time step of the output (and of each upper layer's input)."""
        return self.hidden_size * (2 if self.bidirectional and self.merge_mode == "concat" else 1)

    @property
    def has_fused_cell(self) -> bool:
        """Whether torch has a fused kernel for this cell (initialisation does not matter)."""
        if not self.fused:
            return False
        if self.mode == "LSTM":
            return not (self.peephole or self.coupled)
        if self.mode == "GRU":
            return self.reset_after
        return True

    def flatten_parameters(self) -> None:
        """Lay the weights out in one contiguous chunk, as cuDNN wants; a no-op off the GPU.

        Only for the one-call fused path (plain cells, ``merge_mode="concat"``); torch.nn does
        the same after ``.to(device)``. Parameters stay the same objects, now views of one buffer.
        """
        if not (self.has_fused_cell and self.merge_mode == "concat"):
            return
        weights = [w for layer in range(self.num_layers) for d in range(self.num_directions)
                   for w in self._weights(layer, d)]
        first = weights[0]
        if not all(w.is_cuda and w.dtype == first.dtype and torch.backends.cudnn.is_acceptable(w)
                   for w in weights):
            return
        if len({w.data_ptr() for w in weights}) != len(weights):
            return
        from torch.backends.cudnn import rnn as cudnn_rnn
        cudnn_mode = self.mode if self.mode != "RNN" else f"RNN_{self.nonlinearity.upper()}"
        with torch.cuda.device_of(first), torch.no_grad():
            if torch._use_cudnn_rnn_flatten_weight():
                torch._cudnn_rnn_flatten_weight(
                    weights, 4 if self.bias else 2, self.input_size,
                    cudnn_rnn.get_cudnn_mode(cudnn_mode), self.hidden_size, 0, self.num_layers,
                    self.batch_first, self.bidirectional)

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        self.flatten_parameters()
        return result

    def reset_parameters(self) -> None:
        reset_recurrent_parameters(self, self.hidden_size, self.init)

    def _weights(self, layer: int, direction: int) -> list[Tensor]:
        """[w_ih, w_hh, b_ih, b_hh] (biases only when bias=True), torch's fused-kernel order."""
        suffix = self._suffixes()[direction]
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])
        return [getattr(self, f"{name}_l{layer}{suffix}") for name in names]

    def _fused_call(self, x: Tensor, batch_sizes: Tensor | None, hx: State, weights: list[Tensor],
                    num_layers: int, bidirectional: bool, dropout: float) -> tuple[Tensor, State]:
        """torch's fused kernel on a time-major tensor, or on packed data when batch_sizes is set."""
        args = (weights, self.bias, num_layers, dropout, self.training, bidirectional)
        kernel = {"LSTM": _VF.lstm, "GRU": _VF.gru}.get(self.mode)
        if kernel is None:
            kernel = _VF.rnn_tanh if self.nonlinearity == "tanh" else _VF.rnn_relu
        with warnings.catch_warnings():
            # One layer at a time (merge modes) cannot share cuDNN's single weight buffer.
            warnings.filterwarnings("ignore", message="RNN module weights are not part")
            if batch_sizes is None:
                result = kernel(x, hx, *args, False)
            else:
                result = kernel(x, batch_sizes, hx, *args)
        if self.mode == "LSTM":
            return result[0], (result[1], result[2])
        return result[0], result[1]

    def _run_layer(self, layer: int, x: Tensor, lengths: Tensor | None, valid: Tensor | None,
                   h0: Tensor, c0: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """One layer, both directions: x (L, N, F) -> merged output (L, N, ·), h_n, c_n (D, N, H)."""
        directions = range(self.num_directions)
        if self.has_fused_cell:
            weights = [w for d in directions for w in self._weights(layer, d)]
            state = (h0, c0) if self.mode == "LSTM" else h0
            if lengths is None:
                out, state = self._fused_call(x, None, state, weights, 1, self.bidirectional, 0.0)
            else:
                packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
                order = packed.sorted_indices
                state = self._permute(state, order)
                data, state = self._fused_call(packed.data, packed.batch_sizes, state, weights, 1,
                                               self.bidirectional, 0.0)
                state = self._permute(state, packed.unsorted_indices)
                out, _ = pad_packed_sequence(packed._replace(data=data), total_length=x.shape[0])
            h_n, c_n = state if self.mode == "LSTM" else (state, None)
            if self.bidirectional:
                out = merge_directions(*out.chunk(2, dim=-1), self.merge_mode)
            return out, h_n, c_n

        outputs, finals_h, finals_c = [], [], []
        option = {"RNN": self.nonlinearity, "LSTM": self.coupled, "GRU": self.reset_after}[self.mode]
        for direction in directions:
            w_ih, w_hh, *biases = self._weights(layer, direction)
            b_ih, b_hh = biases if self.bias else (None, None)
            suffix = self._suffixes()[direction]
            weight_ch = getattr(self, f"weight_ch_l{layer}{suffix}") if self.peephole else None
            if b_hh is not None and self.mode != "GRU":
                # RNN and LSTM add b_hh straight to the gates: fold it into the input projection
                b_ih, b_hh = b_ih + b_hh, None
            x_proj = F.linear(x, w_ih, b_ih)  # (L, N, G·H) for every step at once
            if direction == 1:
                x_proj = reverse_padded(x_proj, lengths)
            out, h, c = scan(self.mode, x_proj, h0[direction],
                             None if c0 is None else c0[direction], w_hh, b_hh, weight_ch, valid,
                             option, tag=f"layer {layer}{' reverse' if direction else ''}")
            if direction == 1:
                out = reverse_padded(out, lengths)
            outputs.append(out)
            finals_h.append(h)
            finals_c.append(c)
        out = outputs[0] if len(outputs) == 1 else merge_directions(*outputs, self.merge_mode)
        c_n = torch.stack(finals_c) if self.mode == "LSTM" else None
        return out, torch.stack(finals_h), c_n

    @staticmethod
    def _permute(state: State, index: Tensor | None) -> State:
        if index is None:
            return state
        if isinstance(state, tuple):
            return tuple(s.index_select(1, index) for s in state)
        return state.index_select(1, index)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() not in (2, 3):
            expected = "(N, L, H_in)" if self.batch_first else "(L, N, H_in)"
            raise ValueError(f"{type(self).__name__} expects a 3-D input {expected} or an "
                             f"unbatched 2-D input (L, H_in); got shape {tuple(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__} expects {self.input_size} input features "
                             f"(input_size) in the last dimension; got input of shape "
                             f"{tuple(x.shape)}")

    def _initial_state(self, hx: State | None, x: Tensor, unbatched: bool) -> State:
        """Validate hx (or build zeros) and return it batched: (D·num_layers, N, H) each."""
        batch = x.shape[1]
        shape = (self.num_layers * self.num_directions, batch, self.hidden_size)
        if hx is None:
            zeros = x.new_zeros(shape)
            return (zeros, zeros) if self.mode == "LSTM" else zeros
        parts = hx if self.mode == "LSTM" else (hx,)
        if self.mode == "LSTM" and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise ValueError("LSTM expects hx as a tuple (h_0, c_0)")
        checked = []
        for name, part in zip(("h_0", "c_0"), parts):
            part = part.unsqueeze(1) if unbatched else part
            if tuple(part.shape) != shape:
                expected = (shape[0], shape[2]) if unbatched else shape
                received = tuple(part.shape[:1] + part.shape[2:]) if unbatched else tuple(part.shape)
                raise ValueError(f"{type(self).__name__} expects {name} of shape {expected} "
                                 f"(D·num_layers, N, H); got {received}")
            checked.append(part)
        return (checked[0], checked[1]) if self.mode == "LSTM" else checked[0]

    def forward(self, input: Tensor | PackedSequence, hx: State | None = None,
                lengths: Tensor | None = None):
        packed_input = isinstance(input, PackedSequence)
        if packed_input:
            if lengths is not None:
                raise ValueError("pass either a PackedSequence or lengths, not both")
            x, lengths = pad_packed_sequence(input)  # (L, N, H_in), original batch order
            unbatched = False
        else:
            self._check_input(input)
            unbatched = input.dim() == 2
            x = input.unsqueeze(1) if unbatched else input
            if self.batch_first and not unbatched:
                x = x.transpose(0, 1)  # (L, N, H_in)
            if lengths is not None:
                lengths = check_lengths(lengths, x)
        if x.shape[-1] != self.input_size:
            self._check_input(x)
        state = self._initial_state(hx, x, unbatched)

        if self.has_fused_cell and self.merge_mode == "concat":
            output, state = self._forward_fused(x, lengths, state,
                                                input if packed_input else None)
        else:
            output, state = self._forward_layers(x, lengths, state)

        if packed_input:
            sorted_output = output.index_select(1, input.sorted_indices)
            repacked = pack_padded_sequence(sorted_output, lengths[input.sorted_indices.cpu()])
            return PackedSequence(repacked.data, repacked.batch_sizes, input.sorted_indices,
                                  input.unsorted_indices), state
        if unbatched:
            output = output.squeeze(1)
            state = tuple(s.squeeze(1) for s in state) if isinstance(state, tuple) \
                else state.squeeze(1)
        elif self.batch_first:
            output = output.transpose(0, 1)  # (N, L, ·)
        return output, state

    def _forward_fused(self, x: Tensor, lengths: Tensor | None, state: State,
                       packed: PackedSequence | None) -> tuple[Tensor, State]:
        """All layers in one call of torch's fused kernel (plain cells, concat merge)."""
        weights = [w for layer in range(self.num_layers) for d in range(self.num_directions)
                   for w in self._weights(layer, d)]
        call_args = (weights, self.num_layers, self.bidirectional, self.dropout)
        if lengths is None:
            return self._fused_call(x, None, state, *call_args)
        if packed is None:
            packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        state = self._permute(state, packed.sorted_indices)
        data, state = self._fused_call(packed.data, packed.batch_sizes, state, *call_args)
        output, _ = pad_packed_sequence(packed._replace(data=data), total_length=x.shape[0])
        return output, self._permute(state, packed.unsorted_indices)

    def _forward_layers(self, x: Tensor, lengths: Tensor | None, state: State
                        ) -> tuple[Tensor, State]:
        """Layer by layer: each merges its directions before the next layer reads it."""
        h0, c0 = state if self.mode == "LSTM" else (state, None)
        directions = self.num_directions
        valid = None  # (L, N, 1): True where a step lies inside its sequence
        if lengths is not None and int(lengths.min()) < x.shape[0]:
            valid = (torch.arange(x.shape[0], device=x.device).unsqueeze(1)
                     < lengths.to(x.device).unsqueeze(0)).unsqueeze(-1)
        finals_h, finals_c = [], []
        for layer in range(self.num_layers):
            rows = slice(layer * directions, (layer + 1) * directions)
            x, h_n, c_n = self._run_layer(layer, x, lengths, valid, h0[rows],
                                          None if c0 is None else c0[rows])
            finals_h.append(h_n)
            finals_c.append(c_n)
            if layer < self.num_layers - 1 and self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)
        h_n = torch.cat(finals_h)
        return x, ((h_n, torch.cat(finals_c)) if self.mode == "LSTM" else h_n)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        defaults = {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0,
                    "bidirectional": False, "merge_mode": "concat", "fused": True}
        defaults.update(self._variant_defaults())
        for name, default in defaults.items():
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)!r}"
        return text

    def _variant_defaults(self) -> dict:
        return {}


class RNN(_RecurrentLayer):
    r"""Multi-layer Elman RNN, drop-in for ``torch.nn.RNN``.

        h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),   act = tanh or ReLU (``nonlinearity``)

    ``init="identity"`` is the IRNN of Le, Jaitly & Hinton (2015): W_hh = I, zero biases, and
    W_ih ~ N(0, 0.001²); with ReLU it learns long dependencies a tanh RNN cannot.

    Arguments follow ``torch.nn.RNN`` (input_size, hidden_size, num_layers, nonlinearity, bias,
    batch_first, dropout, bidirectional) plus ``merge_mode`` and ``init``; shapes as in the module
    docstring.
    """

    mode = "RNN"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, merge_mode: str = "concat",
                 init: str = "default", fused: bool = True, device=None, dtype=None) -> None:
        check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
        check_choice("init", init, INITS)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, merge_mode, nonlinearity=nonlinearity, init=init,
                         fused=fused, device=device, dtype=dtype)

    def _variant_defaults(self) -> dict:
        return {"nonlinearity": "tanh", "init": "default"}


class LSTM(_RecurrentLayer):
    r"""Multi-layer LSTM, drop-in for ``torch.nn.LSTM`` (no ``proj_size``).

    Each layer runs :class:`seqlab.nn.LSTMCell`'s equations; ``peephole=True`` adds the diagonal
    peepholes of Gers & Schmidhuber (2000) in ``weight_ch_l{k}`` (3·H: i, f, o), ``coupled=True``
    sets i = 1 − f (Greff et al. 2017) and stores 3 gates in the order f, g, o. Both may be
    combined (``weight_ch_l{k}`` then holds f and o, 2·H).

    ``forward`` returns ``output, (h_n, c_n)``; shapes as in the module docstring.
    """

    mode = "LSTM"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 merge_mode: str = "concat", peephole: bool = False, coupled: bool = False,
                 fused: bool = True, device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, merge_mode, peephole=bool(peephole),
                         coupled=bool(coupled), fused=fused, device=device, dtype=dtype)

    def _variant_defaults(self) -> dict:
        return {"peephole": False, "coupled": False}


class GRU(_RecurrentLayer):
    r"""Multi-layer GRU, drop-in for ``torch.nn.GRU``.

    Each layer runs :class:`seqlab.nn.GRUCell`'s equations; ``reset_after=True`` is torch's and
    cuDNN's form, n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)); ``reset_after=False`` is Cho et
    al.'s (2014), n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn). Both use h' = (1 − z) ⊙ n + z ⊙ h.
    """

    mode = "GRU"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 merge_mode: str = "concat", reset_after: bool = True, fused: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, merge_mode, reset_after=bool(reset_after), fused=fused,
                         device=device, dtype=dtype)

    def _variant_defaults(self) -> dict:
        return {"reset_after": True}
