"""Checks for the course's practical sessions: a student's function against seqlab / torch.nn.

Each ``check_*`` helper calls the student's code on small random inputs (a fixed seed), compares
the result with the reference implementation and either prints one line starting with ``✓`` or
raises an :class:`AssertionError` whose message says what is wrong, most specific first:

1. the function is still the exercise's stub (it raises ``NotImplementedError``);
2. a wrong shape or a wrong number of returned tensors;
3. a known mistake, recognised because the student's numbers equal those of the reference with
   that mistake made on purpose: LSTM / GRU gates read in another order (every permutation of the
   gate blocks of the weight rows is tried), a missing bias, a missing term of the equation, a
   missing non-linearity, padding that gets attention, a gradient that stops after one step, ...;
4. otherwise the largest absolute difference: "numbers differ by X".

The signatures the notebooks use (all tensors ``float64`` so that a right answer matches to
1e-10 and a wrong one cannot hide in float rounding):

=========================================  ======================================================
helper                                     the student's code
=========================================  ======================================================
:func:`check_rnn_cell`                     ``rnn_cell(x, h, weight_ih, weight_hh, bias_ih,
                                           bias_hh) -> h'``
:func:`check_lstm_cell`                    ``lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih,
                                           bias_hh) -> (h', c')``
:func:`check_gru_cell`                     ``gru_cell(x, h, weight_ih, weight_hh, bias_ih,
                                           bias_hh) -> h'``
:func:`check_bptt`                         ``bptt(xs, h0, weight_ih, weight_hh, bias, grad_hs)
                                           -> (grad_weight_ih, grad_weight_hh, grad_bias,
                                           grad_h0)``
:func:`check_clip_grad_norm`               ``clip_grad_norm(grads, max_norm) -> (clipped,
                                           total_norm)``
:func:`check_merge`                        ``merge(forward, backward, merge_mode) -> merged``
:func:`check_attention`                    a module class ``Cls(query_size, key_size,
                                           attention_size)`` with ``query_proj``, ``key_proj``,
                                           ``v``; ``forward(query, keys, values, mask) ->
                                           (context, weights)``
:func:`check_greedy_decode`                ``greedy(model, src, src_lengths, bos_id, eos_id,
                                           max_length) -> [tokens, ...]``
:func:`check_beam_search`                  ``beam(model, src, src_lengths, bos_id, eos_id,
                                           beam_size, max_length) -> tokens`` (one sentence)
:func:`check_lora_linear`                  ``lora_linear(x, weight, bias, lora_A, lora_B, alpha,
                                           r) -> y``
:func:`check_dpo_loss`                     ``dpo_loss(policy_chosen, policy_rejected,
                                           reference_chosen, reference_rejected, beta) -> losses``
=========================================  ======================================================

Shapes (symbols as in :mod:`seqlab.nn.cells`): N batch, T steps, H_in input features, H hidden
features, S source positions, Hq / Hk query and key sizes, A attention size.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "bptt_by_hand",
    "check_attention",
    "check_beam_search",
    "check_bptt",
    "check_clip_grad_norm",
    "check_dpo_loss",
    "check_greedy_decode",
    "check_gru_cell",
    "check_lora_linear",
    "check_lstm_cell",
    "check_merge",
    "check_rnn_cell",
    "shared_data",
]

TOLERANCE = 1e-8  # float64 inputs: a right answer is exact to ~1e-15
LSTM_GATES = ("i", "f", "g", "o")
GRU_GATES = ("r", "z", "n")


def shared_data(*parts: str) -> Path | None:
    """``../shared/data/<parts>`` beside the project root (see its README), or None if absent.

    The project root is the folder with ``pyproject.toml`` above the current directory (a
    notebook runs in ``notebooks/teacher``) or above this installed file.
    """
    starts = [Path.cwd().resolve(), Path(__file__).resolve().parent]
    for start in starts:
        for folder in (start, *start.parents):
            if (folder / "pyproject.toml").is_file():
                path = folder.parent / "shared" / "data" / Path(*parts)
                if path.exists():
                    return path
                break
    return None


def _random(generator: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def _call(name: str, fn: Callable, *args, **kwargs):
    """Call the student's function; its exercise stub becomes a clear AssertionError."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as error:
        detail = f" ({error})" if str(error) else ""
        raise AssertionError(
            f"{name} is not implemented yet{detail}: fill in the TODO cell above"
        ) from None


def _as_tensor(name: str, value) -> Tensor:
    if not isinstance(value, Tensor):
        raise AssertionError(  # noqa: TRY004 - a failed check, not a caller's type error
            f"{name} should return a torch.Tensor; got {type(value).__name__}")
    return value


def _close(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=TOLERANCE,
                                                      rtol=TOLERANCE))


def _difference(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def _check_shape(name: str, got: Tensor, expected: Tensor, what: str = "") -> None:
    if got.shape != expected.shape:
        of = f" {what}" if what else ""
        raise AssertionError(
            f"{name}: wrong shape{of}: got {tuple(got.shape)}, expected {tuple(expected.shape)}")


def _diagnose(name: str, got: Sequence[Tensor], expected: Sequence[Tensor],
              mistakes: dict[str, Sequence[Tensor]], reference: str) -> None:
    """Raise unless `got` equals `expected`, naming the first mistake whose numbers it equals."""
    if all(_close(g, e) for g, e in zip(got, expected)):
        return
    for description, wrong in mistakes.items():
        if all(_close(g, w) for g, w in zip(got, wrong)):
            raise AssertionError(f"{name}: {description}")
    difference = max(_difference(g, e) for g, e in zip(got, expected))
    raise AssertionError(
        f"{name}: numbers differ by {difference:.3g} (largest absolute difference) from "
        f"{reference}")


def _ok(message: str) -> None:
    print(f"✓ {message}")


def _keeps_random_state(check: Callable) -> Callable:
    """Run a check without touching the caller's global random state (it seeds torch's)."""

    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        with torch.random.fork_rng(devices=[]):
            return check(*args, **kwargs)

    return wrapper


def _without(bias_ih: Tensor, bias_hh: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """The bias mistakes: (description, (b_ih, b_hh) as the mistaken code effectively used)."""
    zero = torch.zeros_like(bias_ih)
    return {
        "missing bias b_ih (bias_ih is never added)": (zero, bias_hh),
        "missing bias b_hh (bias_hh is never added)": (bias_ih, zero),
        "missing biases b_ih and b_hh (neither bias is added)": (zero, zero),
    }


def _permute_blocks(weight: Tensor, order: Sequence[int]) -> Tensor:
    """Rows of `weight` in gate blocks reordered: block j of the result is block order[j]."""
    blocks = weight.chunk(len(order), dim=0)
    return torch.cat([blocks[k] for k in order], dim=0)


def _gate_orders(gates: Sequence[str]):
    """Every other order the student may have used, with the block permutation that mimics it.

    A cell that reads block k of the weights as gate ``student[k]`` computes what the reference
    computes on weights whose block j (gate ``gates[j]``) is the student's block of that gate.
    """
    for student in itertools.permutations(gates):
        if tuple(student) == tuple(gates):
            continue
        order = [student.index(gate) for gate in gates]
        yield ", ".join(student), order


def _gate_and_bias_mistakes(gates: Sequence[str], reference: str, cell: Callable,
                            w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> dict:
    """The outputs of `cell(w_ih, w_hh, b_ih, b_hh)` for every other gate order, each bias left
    out, and both mistakes together, keyed by the message that names them."""
    identity = list(range(len(gates)))
    orders = [("", identity)] + [
        (f"wrong gate order: your cell reads the weight blocks as {text}; {reference} stores them "
         + f"as {', '.join(gates)}", order) for text, order in _gate_orders(gates)]
    biases = [("", (b_ih, b_hh))] + list(_without(b_ih, b_hh).items())
    mistakes = {}
    for (order_text, order), (bias_text, (bi, bh)) in itertools.product(orders, biases):
        if order_text or bias_text:
            description = " and ".join(text for text in (order_text, bias_text) if text)
            mistakes[description] = cell(*(_permute_blocks(t, order) for t in (w_ih, w_hh, bi, bh)))
    return mistakes


# Recurrent cells

def _rnn_reference(x, h, w_ih, w_hh, b_ih, b_hh, recurrent=True, tanh=True):
    pre = F.linear(x, w_ih, b_ih) + (F.linear(h, w_hh, b_hh) if recurrent else b_hh)
    return torch.tanh(pre) if tanh else pre


@_keeps_random_state
def check_rnn_cell(fn: Callable, batch: int = 3, input_size: int = 4, hidden_size: int = 5,
                   seed: int = 0) -> None:
    """Check ``fn(x, h, weight_ih, weight_hh, bias_ih, bias_hh) -> h'`` against torch.nn.RNNCell.

        h' = tanh(W_ih x + b_ih + W_hh h + b_hh)

    x (N, H_in), h (N, H), weight_ih (H, H_in), weight_hh (H, H), biases (H,) -> h' (N, H).
    """
    g = torch.Generator().manual_seed(seed)
    reference = torch.nn.RNNCell(input_size, hidden_size).double()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.copy_(_random(g, *parameter.shape) * 0.5)
    x, h = _random(g, batch, input_size), _random(g, batch, hidden_size)
    w_ih, w_hh, b_ih, b_hh = (p.detach() for p in (reference.weight_ih, reference.weight_hh,
                                                   reference.bias_ih, reference.bias_hh))
    got = _as_tensor("rnn_cell", _call("rnn_cell", fn, x, h, w_ih, w_hh, b_ih, b_hh))
    with torch.no_grad():
        expected = reference(x, h)
    _check_shape("rnn_cell", got, expected, "of h'")
    mistakes = {d: [_rnn_reference(x, h, w_ih, w_hh, *b)] for d, b in _without(b_ih, b_hh).items()}
    mistakes["missing term W_hh h: the previous state never enters"] = [
        _rnn_reference(x, h, w_ih, w_hh, b_ih, b_hh, recurrent=False)]
    mistakes["missing non-linearity: apply tanh to the sum"] = [
        _rnn_reference(x, h, w_ih, w_hh, b_ih, b_hh, tanh=False)]
    mistakes["tanh(W_ih x + b_ih) + W_hh h + b_hh: the tanh must wrap the whole sum"] = [
        torch.tanh(F.linear(x, w_ih, b_ih)) + F.linear(h, w_hh, b_hh)]
    _diagnose("rnn_cell", [got], [expected], mistakes, "torch.nn.RNNCell")
    _ok(f"rnn_cell matches torch.nn.RNNCell (N={batch}, H_in={input_size}, H={hidden_size})")


def _lstm_reference(x, h, c, w_ih, w_hh, b_ih, b_hh, forget=True, tanh_cell=True,
                    candidate=torch.tanh):
    i, f, g, o = (F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)).chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), candidate(g), torch.sigmoid(o)
    c_next = (f * c if forget else c) + i * g
    h_next = o * (torch.tanh(c_next) if tanh_cell else c_next)
    return h_next, c_next


@_keeps_random_state
def check_lstm_cell(fn: Callable, batch: int = 3, input_size: int = 4, hidden_size: int = 5,
                    seed: int = 0) -> None:
    """Check ``fn(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh) -> (h', c')`` against
    torch.nn.LSTMCell (Hochreiter & Schmidhuber 1997; forget gate of Gers et al. 2000):

        i = σ(W_ii x + b_ii + W_hi h + b_hi)     f = σ(W_if x + b_if + W_hf h + b_hf)
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)  o = σ(W_io x + b_io + W_ho h + b_ho)
        c' = f ⊙ c + i ⊙ g                       h' = o ⊙ tanh(c')

    weight_ih (4H, H_in) and weight_hh (4H, H) hold the gates' rows in the order i, f, g, o.
    A cell that reads the blocks in another order is named with the order it used.
    """
    g = torch.Generator().manual_seed(seed)
    reference = torch.nn.LSTMCell(input_size, hidden_size).double()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.copy_(_random(g, *parameter.shape) * 0.5)
    x, h, c = (_random(g, batch, size) for size in (input_size, hidden_size, hidden_size))
    w_ih, w_hh, b_ih, b_hh = (p.detach() for p in (reference.weight_ih, reference.weight_hh,
                                                   reference.bias_ih, reference.bias_hh))
    got = _call("lstm_cell", fn, x, h, c, w_ih, w_hh, b_ih, b_hh)
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise AssertionError("lstm_cell should return the pair (h', c'); got "
                             f"{type(got).__name__}" + (f" of {len(got)}" if isinstance(
                                 got, (tuple, list)) else ""))
    got = [_as_tensor("lstm_cell", t) for t in got]
    with torch.no_grad():
        expected = list(reference(x, (h, c)))
    for tensor, want, what in zip(got, expected, ("of h'", "of c'")):
        _check_shape("lstm_cell", tensor, want, what)
    mistakes = {}
    if _close(got[0], expected[1]) and _close(got[1], expected[0]):
        mistakes["returned (c', h'); return (h', c') in that order"] = got
    mistakes.update(_gate_and_bias_mistakes(
        LSTM_GATES, "torch.nn.LSTMCell", lambda *w: list(_lstm_reference(x, h, c, *w)),
        w_ih, w_hh, b_ih, b_hh))
    args = (x, h, c, w_ih, w_hh, b_ih, b_hh)
    mistakes["missing forget gate: c' = f ⊙ c + i ⊙ g, not c + i ⊙ g"] = list(
        _lstm_reference(*args, forget=False))
    mistakes["missing tanh on the cell: h' = o ⊙ tanh(c'), not o ⊙ c'"] = list(
        _lstm_reference(*args, tanh_cell=False))
    mistakes["the candidate g takes tanh, not a sigmoid"] = list(
        _lstm_reference(*args, candidate=torch.sigmoid))
    _diagnose("lstm_cell", got, expected, mistakes, "torch.nn.LSTMCell")
    _ok(f"lstm_cell matches torch.nn.LSTMCell (N={batch}, H_in={input_size}, H={hidden_size}, "
        "gates i, f, g, o)")


def _gru_reference(x, h, w_ih, w_hh, b_ih, b_hh, reset_after=True, swap_update=False):
    x_r, x_z, x_n = F.linear(x, w_ih, b_ih).chunk(3, dim=1)
    hidden = h.shape[1]
    h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, dim=1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    if reset_after:
        n = torch.tanh(x_n + r * h_n)
    else:
        n = torch.tanh(x_n + F.linear(r * h, w_hh[2 * hidden:], b_hh[2 * hidden:]))
    return z * n + (1 - z) * h if swap_update else (1 - z) * n + z * h


@_keeps_random_state
def check_gru_cell(fn: Callable, batch: int = 3, input_size: int = 4, hidden_size: int = 5,
                   seed: int = 0) -> None:
    """Check ``fn(x, h, weight_ih, weight_hh, bias_ih, bias_hh) -> h'`` against torch.nn.GRUCell
    (Cho et al. 2014, in torch's "reset after" form):

        r = σ(W_ir x + b_ir + W_hr h + b_hr)     z = σ(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
        h' = (1 − z) ⊙ n + z ⊙ h

    weight_ih (3H, H_in) and weight_hh (3H, H) hold the gates' rows in the order r, z, n.
    """
    g = torch.Generator().manual_seed(seed)
    reference = torch.nn.GRUCell(input_size, hidden_size).double()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.copy_(_random(g, *parameter.shape) * 0.5)
    x, h = _random(g, batch, input_size), _random(g, batch, hidden_size)
    w_ih, w_hh, b_ih, b_hh = (p.detach() for p in (reference.weight_ih, reference.weight_hh,
                                                   reference.bias_ih, reference.bias_hh))
    got = _as_tensor("gru_cell", _call("gru_cell", fn, x, h, w_ih, w_hh, b_ih, b_hh))
    with torch.no_grad():
        expected = reference(x, h)
    _check_shape("gru_cell", got, expected, "of h'")
    mistakes = _gate_and_bias_mistakes(
        GRU_GATES, "torch.nn.GRUCell", lambda *w: [_gru_reference(x, h, *w)],
        w_ih, w_hh, b_ih, b_hh)
    args = (x, h, w_ih, w_hh, b_ih, b_hh)
    mistakes["h' = z ⊙ n + (1 − z) ⊙ h: z is the share of the OLD state, "
             "h' = (1 − z) ⊙ n + z ⊙ h"] = [_gru_reference(*args, swap_update=True)]
    mistakes["reset before the product, tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn): that is the "
             "paper's form; torch.nn applies r after it, r ⊙ (W_hn h + b_hn)"] = [
        _gru_reference(*args, reset_after=False)]
    _diagnose("gru_cell", [got], [expected], mistakes, "torch.nn.GRUCell")
    _ok(f"gru_cell matches torch.nn.GRUCell (N={batch}, H_in={input_size}, H={hidden_size}, "
        "gates r, z, n)")


# Backpropagation through time

def bptt_by_hand(xs: Tensor, h0: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias: Tensor,
                 grad_hs: Tensor, through_time: bool = True, tanh_derivative: bool = True,
                 previous_state: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients of a tanh RNN, h_t = tanh(W_ih x_t + W_hh h_{t-1} + b), written out.

    With ``g_t = ∂L/∂h_t`` as given by the loss at step t alone (``grad_hs``), going backwards:

        δh_t = g_t + W_hhᵀ δa_{t+1}        (δa_{T+1} = 0)
        δa_t = δh_t ⊙ (1 − h_t²)
        ∂L/∂W_ih = Σ_t δa_t x_tᵀ,  ∂L/∂W_hh = Σ_t δa_t h_{t-1}ᵀ,  ∂L/∂b = Σ_t δa_t,
        ∂L/∂h_0 = W_hhᵀ δa_1

    xs (T, H_in), h0 (H,), grad_hs (T, H). The three flags switch one piece off, to recognise
    the usual mistakes: no path back through W_hh, no tanh derivative, h_t in place of h_{t-1}.
    """
    hs = [h0]
    for x in xs:
        hs.append(torch.tanh(weight_ih @ x + weight_hh @ hs[-1] + bias))
    grad_ih, grad_hh, grad_b = (torch.zeros_like(t) for t in (weight_ih, weight_hh, bias))
    delta_a = torch.zeros_like(h0)
    for t in range(len(xs), 0, -1):
        delta_h = grad_hs[t - 1] + (weight_hh.T @ delta_a if through_time else 0)
        delta_a = delta_h * (1 - hs[t] ** 2) if tanh_derivative else delta_h
        grad_ih += torch.outer(delta_a, xs[t - 1])
        grad_hh += torch.outer(delta_a, hs[t - 1] if previous_state else hs[t])
        grad_b += delta_a
    return grad_ih, grad_hh, grad_b, weight_hh.T @ delta_a


@_keeps_random_state
def check_bptt(fn: Callable, steps: int = 4, input_size: int = 2, hidden_size: int = 3,
               seed: int = 0) -> None:
    """Check a hand-written BPTT ``fn(xs, h0, weight_ih, weight_hh, bias, grad_hs) ->
    (grad_weight_ih, grad_weight_hh, grad_bias, grad_h0)`` against autograd.

    The network is h_t = tanh(W_ih x_t + W_hh h_{t-1} + b), t = 1..T, unbatched: xs (T, H_in),
    h0 (H,); ``grad_hs`` (T, H) holds ∂L/∂h_t from the loss at step t alone (the loss
    L = Σ_t grad_hs[t] · h_t has exactly these). The total ∂L/∂h_t also receives what flows back
    from step t+1 through W_hh: that is the "through time" of BPTT.
    """
    g = torch.Generator().manual_seed(seed)
    xs, h0 = _random(g, steps, input_size), _random(g, hidden_size)
    w_ih = _random(g, hidden_size, input_size) * 0.7
    w_hh = _random(g, hidden_size, hidden_size) * 0.7
    bias, grad_hs = _random(g, hidden_size) * 0.5, _random(g, steps, hidden_size)
    params = [t.clone().requires_grad_(True) for t in (w_ih, w_hh, bias, h0)]
    h, loss = params[3], 0.0
    for t in range(steps):
        h = torch.tanh(params[0] @ xs[t] + params[1] @ h + params[2])
        loss = loss + (grad_hs[t] * h).sum()
    expected = list(torch.autograd.grad(loss, params))
    got = _call("bptt", fn, xs, h0, w_ih, w_hh, bias, grad_hs)
    names = ("grad_weight_ih", "grad_weight_hh", "grad_bias", "grad_h0")
    if not isinstance(got, (tuple, list)) or len(got) != 4:
        raise AssertionError(f"bptt should return the 4 tensors ({', '.join(names)}); got "
                             f"{type(got).__name__}" + (f" of {len(got)}" if isinstance(
                                 got, (tuple, list)) else ""))
    got = [_as_tensor("bptt", t) for t in got]
    for tensor, want, name in zip(got, expected, names):
        _check_shape("bptt", tensor, want, f"of {name}")
    args = (xs, h0, w_ih, w_hh, bias, grad_hs)
    mistakes = {
        "the gradient does not flow back through time: ∂L/∂h_t must add W_hhᵀ δa_{t+1} "
        "from the next step": list(bptt_by_hand(*args, through_time=False)),
        "missing tanh derivative: δa_t = δh_t ⊙ (1 − h_t²)": list(
            bptt_by_hand(*args, tanh_derivative=False)),
        "∂L/∂W_hh pairs δa_t with h_t; it must be the previous state h_{t-1}": list(
            bptt_by_hand(*args, previous_state=False)),
    }
    for k, name in enumerate(names):
        if not _close(got[k], expected[k]):
            for description, wrong in mistakes.items():
                if all(_close(a, b) for a, b in zip(got, wrong)):
                    raise AssertionError(f"bptt: {description}")
            raise AssertionError(f"bptt: {name} differs from autograd's by "
                                 f"{_difference(got[k], expected[k]):.3g} (largest absolute "
                                 "difference)")
    _ok(f"bptt matches autograd (T={steps}, H_in={input_size}, H={hidden_size})")


@_keeps_random_state
def check_clip_grad_norm(fn: Callable, max_norm: float = 1.0, seed: int = 0) -> None:
    """Check ``fn(grads, max_norm) -> (clipped, total_norm)`` against
    torch.nn.utils.clip_grad_norm_:

        ‖g‖ = sqrt(Σ_k ‖g_k‖²) over ALL tensors together,   g_k ← g_k · min(1, max_norm / ‖g‖)

    ``grads`` is a list of tensors; ``clipped`` the list of clipped tensors (new or in place).
    torch adds 1e-6 to the norm in the division; either form passes.
    """
    g = torch.Generator().manual_seed(seed)
    for scale in (3.0, 0.1):  # one list above max_norm, one below it
        grads = [_random(g, 4, 3) * scale, _random(g, 5) * scale]
        copies = [t.clone().requires_grad_(True) for t in grads]
        for copy, grad in zip(copies, grads):
            copy.grad = grad.clone()
        expected_norm = torch.nn.utils.clip_grad_norm_(copies, max_norm)
        expected = [copy.grad for copy in copies]
        result = _call("clip_grad_norm", fn, [t.clone() for t in grads], max_norm)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise AssertionError("clip_grad_norm should return (clipped, total_norm)")
        clipped, total = result
        total = torch.as_tensor(total, dtype=torch.float64)
        per_tensor = [torch.linalg.vector_norm(t) for t in grads]
        if not torch.allclose(total, expected_norm.double(), atol=1e-6):
            if any(torch.allclose(total, n) for n in per_tensor) or torch.allclose(
                    total, sum(per_tensor)):
                raise AssertionError(
                    "clip_grad_norm: the norm is taken over all tensors together, "
                    "sqrt(Σ_k ‖g_k‖²), not per tensor nor as a sum of norms")
            raise AssertionError(f"clip_grad_norm: total_norm is {float(total):.6g}; torch "
                                 f"gives {float(expected_norm):.6g}")
        clipped = [_as_tensor("clip_grad_norm", t) for t in clipped]
        if scale < 1 and not all(_close(a, b) for a, b in zip(clipped, grads)):
            raise AssertionError("clip_grad_norm: gradients whose norm is below max_norm must be "
                                 "left unchanged")
        for a, b in zip(clipped, expected):
            _check_shape("clip_grad_norm", a, b, "of a clipped gradient")
            if not torch.allclose(a, b.double(), atol=1e-6, rtol=1e-5):
                raise AssertionError(
                    f"clip_grad_norm: clipped gradients differ by {_difference(a, b):.3g} from "
                    "torch.nn.utils.clip_grad_norm_: scale every tensor by max_norm / ‖g‖")
    _ok("clip_grad_norm matches torch.nn.utils.clip_grad_norm_ (above and below max_norm)")


# Bidirectional layers

@_keeps_random_state
def check_merge(fn: Callable, seed: int = 0) -> None:
    """Check ``fn(forward, backward, merge_mode) -> merged`` for the four merge modes of
    :mod:`seqlab.nn.recurrent`: each direction's output (L, N, H) ->

        concat  [→h ; ←h]  (L, N, 2H)      sum   →h + ←h  (L, N, H)
        mean    (→h + ←h) / 2              max   elementwise max(→h, ←h)
    """
    from seqlab.nn.recurrent import merge_directions

    g = torch.Generator().manual_seed(seed)
    forward, backward = _random(g, 4, 2, 3), _random(g, 4, 2, 3)
    for mode in ("concat", "sum", "mean", "max"):
        got = _as_tensor("merge", _call("merge", fn, forward, backward, mode))
        expected = merge_directions(forward, backward, mode)
        name = f"merge(mode={mode!r})"
        if mode == "concat" and got.shape == (8, 2, 3):
            raise AssertionError(f"{name}: wrong shape {tuple(got.shape)}: the directions were "
                                 "joined along time (dim 0); concatenate the features (dim -1)")
        if mode == "concat" and got.shape == (4, 4, 3):
            raise AssertionError(f"{name}: wrong shape {tuple(got.shape)}: the directions were "
                                 "joined along the batch (dim 1); concatenate the features "
                                 "(dim -1)")
        _check_shape(name, got, expected)
        mistakes = {}
        if mode == "concat":
            mistakes["backward output first: the forward direction comes first, [→h ; ←h]"] = [
                torch.cat([backward, forward], dim=-1)]
        if mode == "mean":
            mistakes["that is the sum; the mean divides by 2"] = [forward + backward]
        if mode == "max":
            mistakes["that is the minimum; take the elementwise maximum"] = [
                torch.minimum(forward, backward)]
        _diagnose(name, [got], [expected], mistakes, "seqlab.nn.recurrent.merge_directions")
    _ok("merge matches seqlab's merge modes (concat, sum, mean, max)")


# Attention

@_keeps_random_state
def check_attention(module_class: type, query_size: int = 5, key_size: int = 6,
                    attention_size: int = 4, seed: int = 0) -> None:
    """Check a Bahdanau attention module against :class:`seqlab.nn.AdditiveAttention`:

        e_s = vᵀ tanh(W_q q + W_k k_s),  a = softmax over the valid s of e,  c = Σ_s a_s v_s

    ``module_class(query_size, key_size, attention_size)`` must hold ``query_proj`` (nn.Linear
    Hq → A, no bias), ``key_proj`` (nn.Linear Hk → A, no bias) and ``v`` (A,), and its
    ``forward(query (N, Hq), keys (N, S, Hk), values (N, S, Hv), mask (N, S) bool)`` return
    ``(context (N, Hv), weights (N, S))``; padding (mask False) gets weight exactly 0.
    """
    from seqlab.nn.attention import AdditiveAttention

    torch.manual_seed(seed)
    reference = AdditiveAttention(query_size, key_size, attention_size).double()
    try:
        student = _call("attention", module_class, query_size, key_size, attention_size).double()
    except TypeError as error:
        raise AssertionError(f"attention: could not build {module_class.__name__}(query_size, "
                             f"key_size, attention_size): {error}") from None
    expected_names = sorted(reference.state_dict())
    names = sorted(student.state_dict())
    if names != expected_names:
        raise AssertionError(f"attention: the module's parameters are {names}; expected "
                             f"{expected_names} (query_proj and key_proj are nn.Linear without "
                             "bias, v a vector)")
    for name, tensor in student.state_dict().items():
        want = reference.state_dict()[name]
        if tensor.shape != want.shape:
            raise AssertionError(f"attention: {name} has shape {tuple(tensor.shape)}; expected "
                                 f"{tuple(want.shape)}")
    student.load_state_dict(reference.state_dict())
    g = torch.Generator().manual_seed(seed)
    batch, length = 3, 5
    query, keys = _random(g, batch, query_size), _random(g, batch, length, key_size)
    values = _random(g, batch, length, 7)
    mask = torch.arange(length) < torch.tensor([5, 3, 1])[:, None]  # (N, S)
    with torch.no_grad():
        result = _call("attention", student, query, keys, values, mask)
        expected = reference(query, keys, values, mask)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise AssertionError("attention should return the pair (context, weights)")
    context, weights = (_as_tensor("attention", t) for t in result)
    _check_shape("attention", weights, expected[1], "of the weights")
    _check_shape("attention", context, expected[0], "of the context")
    if (weights.masked_fill(mask, 0.0).abs() > 0).any():
        raise AssertionError("attention: padding positions (mask False) get weight > 0: fill "
                             "their scores with -inf before the softmax")
    sums = weights.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-6):
        raise AssertionError(f"attention: the weights of a sentence sum to {sums.tolist()}, not "
                             "1: take the softmax over the source positions (the last dim)")
    with torch.no_grad():
        scores = (reference.query_proj(query).unsqueeze(1) + reference.key_proj(keys)) @ reference.v
        no_tanh = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)  # (N, S)
    _diagnose("attention (weights)", [weights], [expected[1]],
              {"missing tanh: e_s = vᵀ tanh(W_q q + W_k k_s)": [no_tanh]},
              "seqlab.nn.AdditiveAttention")
    _diagnose("attention (context)", [context], [expected[0]], {},
              "seqlab.nn.AdditiveAttention: c = Σ_s a_s v_s")
    _ok(f"attention matches seqlab.nn.AdditiveAttention (N={batch}, S={length}, Hq={query_size}, "
        f"Hk={key_size}, A={attention_size}, with padding)")


# Decoding

def _toy_seq2seq(seed: int, vocab: int = 7):
    from seqlab.models.seq2seq import Seq2Seq

    torch.manual_seed(seed)
    model = Seq2Seq(vocab, vocab, embedding_dim=4, hidden_size=6, cell="gru", pad_id=0).eval()
    with torch.no_grad():  # sharper distributions than the default init, so EOS comes early
        model.decoder.out.weight.mul_(4.0)
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (4, 5), generator=g)
    lengths = torch.tensor([5, 4, 2, 3])
    src[torch.arange(5) >= lengths[:, None]] = 0
    return model, src, lengths


@_keeps_random_state
def check_greedy_decode(fn: Callable, seed: int = 0, max_length: int = 8) -> None:
    """Check ``fn(model, src, src_lengths, bos_id, eos_id, max_length) -> [tokens, ...]``
    against :func:`seqlab.decode.greedy_decode` on a small random seqlab Seq2Seq.

    y_t = argmax_y log p(y | y_<t, x); each sentence stops at EOS (not returned) or after
    ``max_length`` steps. ``model`` has the step API (``encode``, ``init_state``, ``step``).
    """
    from seqlab.decode import greedy_decode

    bos, eos = 1, 2
    mistakes_seen = []
    for offset in range(3):
        model, src, lengths = _toy_seq2seq(seed + offset)
        expected = [tokens for tokens, _ in greedy_decode(model, src, lengths, bos, eos,
                                                          max_length=max_length)]
        with torch.no_grad():
            got = _call("greedy", fn, model, src, lengths, bos, eos, max_length)
        got = [list(map(int, tokens)) for tokens in got]
        if len(got) != len(expected):
            raise AssertionError(f"greedy: {len(got)} outputs for {len(expected)} sentences")
        for k, (a, b) in enumerate(zip(got, expected)):
            if a == b:
                continue
            if a == b + [eos] or a[:1] == [bos] and a[1:] == b:
                raise AssertionError("greedy: leave BOS and EOS out of the returned tokens")
            if len(a) > len(b) and a[:len(b)] == b:
                raise AssertionError(f"greedy: sentence {k} goes on after EOS: {a} (expected {b})")
            if len(a) > max_length:
                raise AssertionError(f"greedy: sentence {k} has {len(a)} tokens; stop after "
                                     f"max_length={max_length} steps")
            mistakes_seen.append(f"sentence {k} of batch {offset}: got {a}, expected {b}")
    if mistakes_seen:
        raise AssertionError("greedy: different tokens from seqlab.decode.greedy_decode ("
                             + "; ".join(mistakes_seen[:3]) + "): feed back the argmax of "
                             "each step and carry the state")
    _ok("greedy matches seqlab.decode.greedy_decode (3 batches of 4 sentences)")


@_keeps_random_state
def check_beam_search(fn: Callable, seed: int = 0, beam_size: int = 3, max_length: int = 8) -> None:
    """Check ``fn(model, src (1, S), src_lengths (1,), bos_id, eos_id, beam_size, max_length)
    -> tokens`` (the best hypothesis of ONE sentence, without BOS / EOS) against
    :func:`seqlab.decode.beam_search` ranking by summed log-probability (``length_penalty=0``).
    """
    from seqlab.decode import beam_search, greedy_decode

    bos, eos = 1, 2
    for offset in range(3):
        model, src, lengths = _toy_seq2seq(seed + offset)
        for row in range(src.size(0)):
            one, length = src[row:row + 1, :int(lengths[row])], lengths[row:row + 1]
            (expected, _), = beam_search(model, one, length, bos, eos, beam_size=beam_size,
                                         length_penalty=0.0, max_length=max_length)[0]
            with torch.no_grad():
                got = _call("beam", fn, model, one, length, bos, eos, beam_size, max_length)
            got = list(map(int, got))
            if got != expected:
                greedy = greedy_decode(model, one, length, bos, eos, max_length=max_length)[0][0]
                hint = (" (that is the greedy answer: keep beam_size hypotheses per step)"
                        if got == greedy and greedy != expected else "")
                raise AssertionError(f"beam: sentence {row} of batch {offset}: got {got}, "
                                     f"expected {expected}{hint}")
    _ok(f"beam matches seqlab.decode.beam_search (beam_size={beam_size}, 12 sentences)")


# Tuning and alignment

@_keeps_random_state
def check_lora_linear(fn: Callable, rank: int = 2, alpha: float = 4.0, seed: int = 0) -> None:
    """Check ``fn(x, weight, bias, lora_A, lora_B, alpha, r) -> y`` against seqlab's LoRA
    (Hu et al. 2021):

        y = x Wᵀ + b + (alpha / r) · x Aᵀ Bᵀ,   A (r, in), B (out, r)
    """
    from seqlab.tune.lora import LoraLinear

    g = torch.Generator().manual_seed(seed)
    base = torch.nn.Linear(6, 5).double()
    torch.manual_seed(seed)
    layer = LoraLinear(base, r=rank, alpha=alpha).double()
    with torch.no_grad():
        layer.lora_B.copy_(_random(g, *layer.lora_B.shape))  # B = 0 at the start; not here
    x = _random(g, 3, 6)
    with torch.no_grad():
        expected = layer(x)
        weight, bias = base.weight.detach(), base.bias.detach()
        a, b = layer.lora_A.detach(), layer.lora_B.detach()
        got = _as_tensor("lora_linear", _call("lora_linear", fn, x, weight, bias, a, b, alpha,
                                              rank))
    _check_shape("lora_linear", got, expected)
    update = x @ a.T @ b.T
    mistakes = {
        "missing scale alpha / r on the update": [F.linear(x, weight, bias) + update],
        "the base output x Wᵀ + b is missing: LoRA adds to the frozen layer": [
            (alpha / rank) * update],
        "missing bias b of the frozen layer": [F.linear(x, weight) + (alpha / rank) * update],
        "scale r / alpha; it is alpha / r": [F.linear(x, weight, bias) + (rank / alpha) * update],
    }
    _diagnose("lora_linear", [got], [expected], mistakes, "seqlab.tune.LoraLinear")
    _ok(f"lora_linear matches seqlab.tune.LoraLinear (r={rank}, alpha={alpha})")


@_keeps_random_state
def check_dpo_loss(fn: Callable, beta: float = 0.1, seed: int = 0) -> None:
    """Check ``fn(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)
    -> losses (N,)`` against :func:`seqlab.align.dpo_loss` (Rafailov et al. 2023):

        L = −log σ(β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))])
    """
    from seqlab.align import dpo_loss

    g = torch.Generator().manual_seed(seed)
    logps = [_random(g, 6) * 3 - 10 for _ in range(4)]
    expected = dpo_loss(*logps, beta=beta)[0]
    got = _as_tensor("dpo_loss", _call("dpo_loss", fn, *logps, beta))
    _check_shape("dpo_loss", got, expected, "(one loss per pair)")
    pc, pr, rc, rr = logps
    mistakes = {
        "missing β: the margin is β times the log-ratio difference": [
            -F.logsigmoid((pc - rc) - (pr - rr))],
        "chosen and rejected swapped: the loss falls as the chosen answer gets likelier": [
            -F.logsigmoid(beta * ((pr - rr) - (pc - rc)))],
        "the reference is missing: use log π − log π_ref for each answer": [
            -F.logsigmoid(beta * (pc - pr))],
        "missing minus sign: L = −log σ(...)": [F.logsigmoid(beta * ((pc - rc) - (pr - rr)))],
        "log σ is missing: L = −log σ(margin), not −margin": [-beta * ((pc - rc) - (pr - rr))],
    }
    _diagnose("dpo_loss", [got], [expected], mistakes, "seqlab.align.dpo_loss")
    same = _call("dpo_loss", fn, pc, pr, pc, pr, beta)
    if not torch.allclose(same, torch.full_like(same, float(torch.log(torch.tensor(2.0))))):
        raise AssertionError("dpo_loss: with the policy equal to the reference every loss must "
                             "be log 2")
    _ok(f"dpo_loss matches seqlab.align.dpo_loss (beta={beta}; log 2 when policy = reference)")
