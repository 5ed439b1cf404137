"""Minimal recurrent networks: minGRU and minLSTM, trained with a parallel scan, run step by step.

Feng, Tung, Ahmed, Bengio & Hajimirsadeghi (2024), "Were RNNs All We Needed?" (arXiv:2410.01201).
A GRU's or an LSTM's gates read the previous hidden state, so step t waits for step t − 1. Take
the state out of the gates (and the tanh off the candidate) and what is left is a *linear*
recurrence whose coefficients depend on the input alone:

    h_t = a_t ⊙ h_{t-1} + b_t,      a_t ∈ (0, 1), b_t computed from x_t only

Its solution is a pair of prefix sums, so every step of a sequence is computed at once:

    A_t = a_1 ⊙ … ⊙ a_t,     h_t = A_t ⊙ (h_0 + Σ_{s≤t} b_s / A_s)

The product A_t underflows after a few hundred steps (0.5^1100 is zero even in float64), so the
scan runs in log space, as in the paper (and Heinsen 2023, "Efficient Parallelization of a
Ubiquitous Sequential Computation"):

    log A_t = Σ_{s≤t} log a_s                                            (cumsum)
    h_t     = exp(log A_t) ⊙ h_0 + exp(log A_t + logcumsumexp_{s≤t}(log b_s − log A_s))

logcumsumexp subtracts its running maximum before exponentiating, so nothing overflows or
underflows: a sequence of 4,096 steps stays finite. It is not free of rounding, though:
log b_s − log A_s grows like the length (≈ 0.7 per step for a = ½), and float32 keeps about 7
digits of it, so one block of 4,096 steps loses ~1e-4 relative accuracy. The layers therefore
scan blocks of ``chunk_size`` = 64 steps, all blocks at once, and carry the state across the
L / 64 block boundaries with a short loop (:func:`parallel_scan`): ~5e-6 in float32 at L = 4096,
for one more full-size multiply-add. ``chunk_size=None`` is the paper's single scan.

The candidate values b must be positive to have a logarithm; the paper's log-space form makes
them so with g(x) = x + 0.5 for x ≥ 0, σ(x) otherwise (continuous, increasing, always
positive). The plain form (``log_space=False``) lets b have either sign and scans its positive
and negative parts separately (b = b⁺ − b⁻, each ≥ 0; the recurrence is linear, so the two
results subtract). The initial state enters through its own term exp(log A_t) ⊙ h_0, so it may
have either sign too.

Generation keeps the classic recurrent step (:meth:`MinGRU.step`): one step costs O(H·H_in), with
no cache that grows with the sequence. ``parallel=False`` runs the same step function over the
whole sequence; both modes give the same outputs (to rounding: ~1e-14 in float64).

Shapes (``batch_first=False``; ``batch_first=True`` swaps L and N in input and output only):

    input   (L, N, H_in)  or unbatched (L, H_in), or a PackedSequence
    h_0     (D·num_layers, N, H)  or unbatched (D·num_layers, H); zeros when not given
    output  (L, N, D·H) for merge_mode="concat", else (L, N, H)
    h_n     (D·num_layers, N, H)
    lengths (N,) valid length of each right-padded sequence

    L length, N batch, H_in input features, H hidden features, D = 2 if bidirectional else 1,
    G gates: 2 (minGRU: z, h̃), 3 (minLSTM: f, i, h̃).

With ``lengths`` (or a PackedSequence) every sequence is treated as if it ran alone: outputs past
its length are zero, its final state is taken at its last valid step and the backward direction
starts at that step. Parameters follow torch.nn's names: ``weight_ih_l{k}`` (G·H, H_in) and
``bias_ih_l{k}`` (G·H), ``_reverse`` for the backward direction; there is no ``weight_hh``.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from seqlab.nn.cells import check_choice, check_size, reset_recurrent_parameters
from seqlab.nn.recurrent import MERGE_MODES, check_lengths, merge_directions, reverse_padded

__all__ = ["MinGRU", "MinLSTM", "g", "log_g", "parallel_scan", "sequential_scan"]


def g(x: Tensor) -> Tensor:
    """g(x) = x + 0.5 for x ≥ 0, σ(x) otherwise: the paper's positive stand-in for the identity."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    """log g(x), computed without forming g: log(x + 0.5) for x ≥ 0, −softplus(−x) otherwise."""
    # relu keeps the unused branch finite, so its gradient (zero) never turns into NaN.
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), F.logsigmoid(x))


def _log_parts(values: Tensor) -> tuple[Tensor, Tensor]:
    """log b⁺ and log b⁻ of b = b⁺ − b⁻, each part ≥ 0; zeros become log(tiny), never −inf.

    logcumsumexp's gradient is NaN at a run of −inf, so a zero part is replaced by the smallest
    positive normal number; it adds at most L·tiny to a state, far below rounding.
    """
    tiny = torch.finfo(values.dtype).tiny
    return (torch.log(F.relu(values).clamp_min(tiny)),
            torch.log(F.relu(-values).clamp_min(tiny)))


def _logcumsumexp_in_blocks(x: Tensor) -> Tensor:
    """logcumsumexp along dim 1 of blocks (K, C, ...), in ⌈log₂ C⌉ rounds of logaddexp.

    Hillis & Steele (1986): after round r, step t holds log Σ exp(x_s) over the 2^r steps up
    to t. torch's CPU logcumsumexp works one element at a time; logaddexp is vectorised, so for
    blocks of 64 steps the six rounds take ~2.5x less time, forward and backward, for a few
    more tensors kept for the backward pass.
    """
    shift = 1
    while shift < x.shape[1]:
        x = torch.cat([x[:, :shift], torch.logaddexp(x[:, shift:], x[:, :-shift])], dim=1)
        shift *= 2
    return x


def _scan_block(log_coeffs: Tensor, log_values: Tensor, log_negative_values: Tensor | None,
                blocks: bool = False) -> tuple[Tensor, Tensor]:
    """The log-space scan from a zero state: (h_t with h_0 = 0, A_t).

    Along dim 0 of (L, ...), or with ``blocks`` along dim 1 of (K, C, ...).
    """
    dim = 1 if blocks else 0

    def logcumsumexp(x: Tensor) -> Tensor:
        return _logcumsumexp_in_blocks(x) if blocks else torch.logcumsumexp(x, dim=0)

    log_a_star = torch.cumsum(log_coeffs, dim=dim)  # log A_t
    h = torch.exp(log_a_star + logcumsumexp(log_values - log_a_star))
    if log_negative_values is not None:
        h = h - torch.exp(log_a_star + logcumsumexp(log_negative_values - log_a_star))
    return h, torch.exp(log_a_star)


def parallel_scan(log_coeffs: Tensor, log_values: Tensor, h0: Tensor | None = None,
                  log_negative_values: Tensor | None = None, chunk_size: int | None = None
                  ) -> Tensor:
    r"""All states of h_t = a_t ⊙ h_{t-1} + b_t at once, in log space, along dim 0.

        log A_t = Σ_{s≤t} log a_s
        h_t     = exp(log A_t) ⊙ h_0 + exp(log A_t + logcumsumexp_{s≤t}(log b_s − log A_s))

    ``log_coeffs`` log a (L, ...), ``log_values`` log b (L, ...), ``h0`` (...) or None for zeros.
    With ``log_negative_values`` the values are b = exp(log_values) − exp(log_negative_values)
    and the second term is computed for each part. Returns h (L, ...), h_1 … h_L.

    ``chunk_size`` C: scan blocks of C steps in parallel, all blocks at once, then carry the
    state across the L / C block boundaries with a short loop, h = h_local + A_local ⊙ h_carry.
    The sum log b_s − log A_s then grows over C steps rather than L, and so does its rounding
    error: float32 keeps ~1e-6 relative accuracy at L = 4096 instead of ~1e-4.
    """
    length = log_coeffs.shape[0]
    if chunk_size is None or length <= chunk_size:
        h, decay = _scan_block(log_coeffs, log_values, log_negative_values)
        return h if h0 is None else h + decay * h0

    pad = -length % chunk_size
    blocks = (length + pad) // chunk_size

    def blocked(t: Tensor | None) -> Tensor | None:
        # (L, ...) -> (K, C, ...): K = L / C blocks of C steps, scanned along dim 1. A view, not
        # a transpose: torch's cumulative operations are several times slower on strided input.
        # The padded steps (a = 1, b = 1) come after every real one and are cut off at the end.
        if t is None:
            return None
        t = torch.cat([t, t.new_zeros((pad, *t.shape[1:]))]) if pad else t
        return t.reshape(blocks, chunk_size, *t.shape[1:])

    local, decay = _scan_block(blocked(log_coeffs), blocked(log_values),
                               blocked(log_negative_values), blocks=True)  # (K, C, ...) each
    carry = torch.zeros_like(local[0, 0]) if h0 is None else h0  # (...)
    carries = []
    # Block ends taken once (unbind): indexing inside the loop would cost a full-size gradient
    # buffer per block in the backward pass.
    for local_end, decay_end in zip(local[:, -1].unbind(0), decay[:, -1].unbind(0)):
        carries.append(carry)
        carry = local_end + decay_end * carry
    h = local + decay * torch.stack(carries).unsqueeze(1)  # (K, C, ...)
    return h.reshape(blocks * chunk_size, *h.shape[2:])[:length]


def sequential_scan(coeffs: Tensor, values: Tensor, h0: Tensor | None = None) -> Tensor:
    """The same recurrence one step at a time: h_t = a_t ⊙ h_{t-1} + b_t along dim 0."""
    h = torch.zeros_like(values[0]) if h0 is None else h0
    states = []
    for a_t, b_t in zip(coeffs, values):
        h = a_t * h + b_t
        states.append(h)
    return torch.stack(states)


def mingru_log_terms(proj: Tensor, log_space: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """minGRU's log a, log b (and log b⁻ in the plain form) from proj = W x + b, (…, 2H).

    a = 1 − z, b = z ⊙ h̃: log(1 − z) = −softplus(k_z), log z = −softplus(−k_z).
    """
    k_z, k_h = proj.chunk(2, dim=-1)
    log_z = F.logsigmoid(k_z)  # = −softplus(−k_z), in one operation
    log_coeffs = F.logsigmoid(-k_z)
    if log_space:
        return log_coeffs, log_z + log_g(k_h), None
    log_positive, log_negative = _log_parts(k_h)
    return log_coeffs, log_z + log_positive, log_z + log_negative


def minlstm_log_terms(proj: Tensor, log_space: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """minLSTM's log f′, log(i′ ⊙ h̃) (and log b⁻ in the plain form) from proj, (…, 3H).

    f′ = f / (f + i), i′ = i / (f + i) with f = σ(k_f), i = σ(k_i). With
    d = log i − log f = softplus(−k_f) − softplus(−k_i): log f′ = −softplus(d), log i′ = −softplus(−d).
    """
    k_f, k_i, k_h = proj.chunk(3, dim=-1)
    diff = F.softplus(-k_f) - F.softplus(-k_i)
    log_forget = F.logsigmoid(-diff)
    log_input = F.logsigmoid(diff)
    if log_space:
        return log_forget, log_input + log_g(k_h), None
    log_positive, log_negative = _log_parts(k_h)
    return log_forget, log_input + log_positive, log_input + log_negative


def mingru_step(proj: Tensor, h: Tensor, log_space: bool) -> Tensor:
    """One minGRU step, written as the paper's sequential form: proj (N, 2H), h (N, H) -> (N, H)."""
    k_z, k_h = proj.chunk(2, dim=-1)
    z = torch.sigmoid(k_z)
    candidate = g(k_h) if log_space else k_h
    return (1 - z) * h + z * candidate


def minlstm_step(proj: Tensor, h: Tensor, log_space: bool) -> Tensor:
    """One minLSTM step: proj (N, 3H), h (N, H) -> (N, H)."""
    k_f, k_i, k_h = proj.chunk(3, dim=-1)
    f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
    candidate = g(k_h) if log_space else k_h
    return f / (f + i) * h + i / (f + i) * candidate


class _MinimalLayer(nn.Module):
    """What MinGRU and MinLSTM share: parameters, checks, stacking, directions, lengths, modes."""

    gates = 0

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 merge_mode: str = "concat", log_space: bool = True, parallel: bool = True,
                 chunk_size: int | None = 64, device=None, dtype=None) -> None:
        super().__init__()
        check_size("input_size", input_size)
        check_size("hidden_size", hidden_size)
        check_size("num_layers", num_layers)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not (
                0 <= dropout <= 1):
            raise ValueError(f"dropout should be a number in range [0, 1]; got {dropout!r}")
        check_choice("merge_mode", merge_mode, MERGE_MODES)
        if chunk_size is not None:
            check_size("chunk_size", chunk_size)
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
        self.log_space = bool(log_space)
        self.parallel = bool(parallel)
        self.chunk_size = chunk_size

        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else self.output_size
            for suffix in ("", "_reverse")[:self.num_directions]:
                self.register_parameter(f"weight_ih_l{layer}{suffix}", nn.Parameter(
                    torch.empty(self.gates * hidden_size, layer_input, **factory)))
                if bias:
                    self.register_parameter(f"bias_ih_l{layer}{suffix}", nn.Parameter(
                        torch.empty(self.gates * hidden_size, **factory)))
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Features per time step of the output (and of each upper layer's input)."""
        return self.hidden_size * (2 if self.bidirectional and self.merge_mode == "concat" else 1)

    def reset_parameters(self) -> None:
        """torch.nn's recurrent initialisation: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H))."""
        reset_recurrent_parameters(self, self.hidden_size)

    def _projection(self, x: Tensor, layer: int, direction: int) -> Tensor:
        """W_ih x + b_ih for every step at once: x (…, F) -> (…, G·H)."""
        suffix = ("", "_reverse")[direction]
        bias = getattr(self, f"bias_ih_l{layer}{suffix}") if self.bias else None
        return F.linear(x, getattr(self, f"weight_ih_l{layer}{suffix}"), bias)

    # Overridden by each cell: the log-space terms (parallel mode) and the step (sequential mode).
    def _log_terms(self, proj: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        raise NotImplementedError

    def _cell_step(self, proj: Tensor, h: Tensor) -> Tensor:
        raise NotImplementedError

    def _scan(self, proj: Tensor, h0: Tensor) -> Tensor:
        """Every state of one direction: proj (L, N, G·H), h0 (N, H) -> h_1 … h_L (L, N, H)."""
        if self.parallel:
            log_coeffs, log_values, log_negative_values = self._log_terms(proj)  # (L, N, H) each
            return parallel_scan(log_coeffs, log_values, h0, log_negative_values,
                                 self.chunk_size)
        h, states = h0, []
        for proj_t in proj:  # (N, G·H)
            h = self._cell_step(proj_t, h)
            states.append(h)
        return torch.stack(states)  # (L, N, H)

    def _run_layer(self, layer: int, x: Tensor, lengths: Tensor | None, valid: Tensor | None,
                   h0: Tensor) -> tuple[Tensor, Tensor]:
        """One layer, both directions: x (L, N, F) -> merged output (L, N, ·), h_n (D, N, H)."""
        outputs, finals = [], []
        for direction in range(self.num_directions):
            proj = self._projection(x, layer, direction)  # (L, N, G·H)
            if direction == 1:
                # Each sequence reversed within its length: the scan starts at its last valid step.
                proj = reverse_padded(proj, lengths)
            out = self._scan(proj, h0[direction])  # (L, N, H)
            # Padding lies after every sequence's valid steps, so the causal scan never mixes it
            # into them; the final state is the state at the last valid step.
            if lengths is None:
                final = out[-1]  # (N, H)
            else:
                last = (lengths.to(out.device) - 1).view(1, -1, 1).expand(1, -1, out.shape[-1])
                final = out.gather(0, last).squeeze(0)  # (N, H)
            if direction == 1:
                out = reverse_padded(out, lengths)
            if valid is not None:
                out = torch.where(valid, out, torch.zeros((), dtype=out.dtype, device=out.device))
            outputs.append(out)
            finals.append(final)
        out = outputs[0] if len(outputs) == 1 else merge_directions(*outputs, self.merge_mode)
        return out, torch.stack(finals)  # (L, N, ·), (D, N, H)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() not in (2, 3):
            expected = "(N, L, H_in)" if self.batch_first else "(L, N, H_in)"
            raise ValueError(f"{type(self).__name__} expects a 3-D input {expected} or an "
                             f"unbatched 2-D input (L, H_in); got shape {tuple(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__} expects {self.input_size} input features "
                             f"(input_size) in the last dimension; got input of shape "
                             f"{tuple(x.shape)}")

    def _initial_state(self, hx: Tensor | None, x: Tensor, unbatched: bool) -> Tensor:
        """Validate hx (or build zeros) and return it batched: (D·num_layers, N, H)."""
        shape = (self.num_layers * self.num_directions, x.shape[1], self.hidden_size)
        if hx is None:
            return x.new_zeros(shape)
        if isinstance(hx, (tuple, list)):
            raise ValueError(  # noqa: TRY004  (the layers' argument errors are all ValueErrors)
                f"{type(self).__name__} has no cell state: pass hx as one tensor h_0 "
                             f"of shape (D·num_layers, N, H), not a {type(hx).__name__}")
        part = hx.unsqueeze(1) if unbatched else hx
        if tuple(part.shape) != shape:
            expected = (shape[0], shape[2]) if unbatched else shape
            received = tuple(hx.shape)
            raise ValueError(f"{type(self).__name__} expects h_0 of shape {expected} "
                             f"(D·num_layers, N, H); got {received}")
        return part

    def forward(self, input: Tensor | PackedSequence, hx: Tensor | None = None,
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
        h0 = self._initial_state(hx, x, unbatched)  # (D·num_layers, N, H)

        valid = None  # (L, N, 1): True where a step lies inside its sequence
        if lengths is not None and int(lengths.min()) < x.shape[0]:
            valid = (torch.arange(x.shape[0], device=x.device).unsqueeze(1)
                     < lengths.to(x.device).unsqueeze(0)).unsqueeze(-1)
            # Whatever the padding holds (even NaN) never reaches a value or a gradient.
            x = torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device))
        directions, finals = self.num_directions, []
        for layer in range(self.num_layers):
            rows = slice(layer * directions, (layer + 1) * directions)
            x, h_n = self._run_layer(layer, x, lengths, valid, h0[rows])
            finals.append(h_n)
            if layer < self.num_layers - 1 and self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)
        output, h_n = x, torch.cat(finals)  # (L, N, ·), (D·num_layers, N, H)

        if packed_input:
            sorted_output = output.index_select(1, input.sorted_indices)
            repacked = pack_padded_sequence(sorted_output, lengths[input.sorted_indices.cpu()])
            return PackedSequence(repacked.data, repacked.batch_sizes, input.sorted_indices,
                                  input.unsorted_indices), h_n
        if unbatched:
            return output.squeeze(1), h_n.squeeze(1)
        if self.batch_first:
            output = output.transpose(0, 1)  # (N, L, ·)
        return output, h_n

    def step(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One time step for generation: input (N, H_in), hx (num_layers, N, H) or None.

        Returns (output (N, H), h (num_layers, N, H)), the same numbers as ``forward`` gives at
        that step. Each layer costs one matrix product and a few element-wise operations.
        Unidirectional layers only: the backward direction needs the future.
        """
        if self.bidirectional:
            raise ValueError(f"{type(self).__name__}.step runs forward in time and needs "
                             "bidirectional=False; use forward() on whole sequences instead")
        if input.dim() != 2 or input.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}.step expects input of shape (N, "
                             f"{self.input_size}) (N, H_in); got {tuple(input.shape)}")
        h0 = self._initial_state(hx, input.unsqueeze(0), unbatched=False)  # (num_layers, N, H)
        x, states = input, []
        for layer in range(self.num_layers):
            h = self._cell_step(self._projection(x, layer, 0), h0[layer])  # (N, H)
            states.append(h)
            x = h
            if layer < self.num_layers - 1 and self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)
        return x, torch.stack(states)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        defaults = {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0,
                    "bidirectional": False, "merge_mode": "concat", "log_space": True,
                    "parallel": True, "chunk_size": 64}
        for name, default in defaults.items():
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)!r}"
        return text


class MinGRU(_MinimalLayer):
    r"""Multi-layer minGRU (Feng et al. 2024): a GRU whose gates do not read the hidden state.

        z_t   = σ(W_z x_t + b_z)
        h̃_t   = g(W_h x_t + b_h)        (log_space=True, the default; g as in the module docstring)
        h̃_t   = W_h x_t + b_h           (log_space=False)
        h_t   = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

    Parameters: ``weight_ih_l{k}`` (2·H, H_in) = [W_z; W_h], ``bias_ih_l{k}`` (2·H) = [b_z; b_h],
    and the same with ``_reverse``. With h_0 ≥ 0 (zeros by default) and the log-space form, every
    state is a convex combination of positive values and stays positive.

    In log space (parallel mode): log a_t = log(1 − z_t) = −softplus(k_z),
    log b_t = log z_t + log h̃_t = −softplus(−k_z) + log g(k_h); see :func:`parallel_scan`.

    Arguments follow ``torch.nn.GRU`` (input_size, hidden_size, num_layers, bias, batch_first,
    dropout, bidirectional) plus ``merge_mode``, ``log_space``, ``parallel`` (True: the
    log-space scan over the whole sequence, for training; False: the step-by-step loop) and
    ``chunk_size`` (steps per block of the parallel scan; None for one block).
    ``forward(input, hx=None, lengths=None)`` returns ``output, h_n``; :meth:`step` runs one step.
    Shapes as in the module docstring. A layer's output is its hidden states (no projection).
    """

    gates = 2

    def _log_terms(self, proj: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        return mingru_log_terms(proj, self.log_space)

    def _cell_step(self, proj: Tensor, h: Tensor) -> Tensor:
        return mingru_step(proj, h, self.log_space)


class MinLSTM(_MinimalLayer):
    r"""Multi-layer minLSTM (Feng et al. 2024): an LSTM without state in its gates, output gate or tanh.

        f_t  = σ(W_f x_t + b_f),   i_t = σ(W_i x_t + b_i)
        f′_t = f_t / (f_t + i_t),  i′_t = i_t / (f_t + i_t)      (so f′ + i′ = 1)
        h̃_t  = g(W_h x_t + b_h)    (log_space=True, the default),  W_h x_t + b_h otherwise
        h_t  = f′_t ⊙ h_{t-1} + i′_t ⊙ h̃_t

    The normalisation makes the state's scale independent of the time step, as the paper
    recommends. There is no cell state: ``h_n`` is one tensor, as for a GRU.

    Parameters: ``weight_ih_l{k}`` (3·H, H_in) = [W_f; W_i; W_h], ``bias_ih_l{k}`` (3·H) and the
    same with ``_reverse``. In log space: with d = softplus(−k_f) − softplus(−k_i) = log i − log f,
    log f′ = −softplus(d), log i′ = −softplus(−d).

    Arguments and shapes as for :class:`MinGRU`.
    """

    gates = 3

    def _log_terms(self, proj: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        return minlstm_log_terms(proj, self.log_space)

    def _cell_step(self, proj: Tensor, h: Tensor) -> Tensor:
        return minlstm_step(proj, h, self.log_space)
