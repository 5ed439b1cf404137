"""Generated tasks from the recurrent-network literature, exactly reproducible from a seed.

Each task probes one ability and comes with the score a model gets without it:

==========================  =====================================  ===========================
task                        tests                                  baseline (no memory)
==========================  =====================================  ===========================
:func:`adding_problem`      carry two values across T steps        MSE 1/6 ≈ 0.167 (predict 1)
:func:`adding_problem_hs97` the same, 1997 definition              success needs |err| < 0.04
:func:`copy_memory`         recall 10 symbols after T steps        CE 10·log 8 / (T + 20)
:func:`digits`              pixel-by-pixel classification          10 classes, 10 % by chance
:func:`reversal`            seq2seq alignment                      —
:func:`dates`               seq2seq normalisation                  —
:func:`fill_in_the_blank`   context to the right of a position     1/4 at the blank (left-only)
==========================  =====================================  ===========================

Tensor tasks draw from a ``torch.Generator`` seeded with ``seed``, text tasks from
``random.Random(seed)``; nothing touches the global random state.

=========  ============================================
symbol     meaning
=========  ============================================
N          number of examples (``size``)
T          sequence length (``length``)
K          number of symbols (``num_symbols``)
C          symbols to copy (``copy_length``)
=========  ============================================
"""

from __future__ import annotations

import calendar
import datetime
import functools
import math
import random

import numpy as np
import torch

__all__ = [
    "ADDING_HS97_TOLERANCE",
    "adding_problem",
    "adding_problem_hs97",
    "copy_memory",
    "copy_memory_baseline",
    "dates",
    "digits",
    "fill_in_the_blank",
    "reversal",
]

ADDING_HS97_TOLERANCE = 0.04


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _check_positive(name: str, value: int, least: int = 1) -> None:
    if value < least:
        raise ValueError(f"{name} must be >= {least}, got {value}")


def adding_problem(size: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The adding problem in its modern form (Le et al. 2015; Arjovsky et al. 2016).

    Each step carries two numbers: a value ``u_t ~ U[0, 1]`` and a marker ``m_t``. Exactly two
    markers are 1, one at a uniform position in the first half ``[0, T//2)`` and one in the
    second half ``[T//2, T)``; the target is the sum of the two marked values::

        y = sum_t m_t · u_t

    A model that ignores its input and predicts the mean 1 scores MSE = Var(y) = 2 · 1/12 =
    1/6 ≈ 0.167, the line a trained model has to beat.

    References: Le, Jaitly & Hinton, "A Simple Way to Initialize Recurrent Networks of
    Rectified Linear Units", 2015; Arjovsky, Shah & Bengio, "Unitary Evolution Recurrent Neural
    Networks", ICML 2016.

    Returns:
        ``x`` float ``(N, T, 2)`` (channel 0 values, channel 1 markers) and ``y`` float ``(N,)``.
    """
    _check_positive("size", size)
    _check_positive("length", length, least=2)
    generator = _generator(seed)
    values = torch.rand(size, length, generator=generator)  # (N, T)
    first = torch.randint(0, length // 2, (size,), generator=generator)  # (N,)
    second = torch.randint(length // 2, length, (size,), generator=generator)  # (N,)
    rows = torch.arange(size)
    markers = torch.zeros(size, length)  # (N, T)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = torch.stack([values, markers], dim=-1)  # (N, T, 2)
    y = values[rows, first] + values[rows, second]  # (N,)
    return x, y


def adding_problem_hs97(
    size: int, length: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The adding problem as first defined (Hochreiter & Schmidhuber 1997, Experiment 4).

    From the paper: each step is a pair. The first component is a value drawn uniformly from
    [-1, 1]; the second is a marker in {1, 0, -1}. A sequence's length is drawn uniformly
    between T and T + T/10. Exactly two pairs are marked with 1: one of the first ten pairs
    (value X1), then one of the first T/2 - 1 still unmarked pairs (value X2). All other
    markers are 0 except those of the first and the final pair, which are -1 (a first pair
    that is marked keeps the marker 1, and its value is set to 0, as the paper says for X1).
    The target, given at the sequence end only, is::

        y = 0.5 + (X1 + X2) / 4.0          (the sum scaled to [0, 1])

    A sequence counts as solved when ``|prediction - y| < 0.04`` (``ADDING_HS97_TOLERANCE``).

    Reference: Hochreiter & Schmidhuber, "Long Short-Term Memory", Neural Computation 9(8),
    1997, Section 5.4.

    Args:
        size: number of sequences N.
        length: the minimal length T (>= 22, so the first ten pairs lie in the first half).

    Returns:
        ``x`` float ``(N, T + T//10, 2)`` right-padded with zeros past each sequence's length,
        ``y`` float ``(N,)`` and ``lengths`` int64 ``(N,)``.
    """
    _check_positive("size", size)
    _check_positive("length", length, least=22)
    generator = _generator(seed)
    max_length = length + length // 10
    lengths = torch.randint(length, max_length + 1, (size,), generator=generator)  # (N,)
    values = torch.rand(size, max_length, generator=generator) * 2.0 - 1.0  # (N, T_max)
    first = torch.randint(0, 10, (size,), generator=generator)  # (N,)
    # One of the T/2 - 1 unmarked positions in [0, T/2): skip over the first mark.
    second = torch.randint(0, length // 2 - 1, (size,), generator=generator)  # (N,)
    second = second + (second >= first).long()
    rows = torch.arange(size)
    steps = torch.arange(max_length)  # (T_max,)
    markers = torch.zeros(size, max_length)  # (N, T_max)
    markers[:, 0] = -1.0
    markers[rows, lengths - 1] = -1.0
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    values[:, 0] = torch.where(markers[:, 0] == 1.0, 0.0, values[:, 0])
    valid = steps.unsqueeze(0) < lengths.unsqueeze(1)  # (N, T_max)
    values = torch.where(valid, values, 0.0)
    y = 0.5 + (values[rows, first] + values[rows, second]) / 4.0  # (N,)
    x = torch.stack([values, markers], dim=-1)  # (N, T_max, 2)
    return x, y, lengths


def copy_memory_baseline(length: int, num_symbols: int = 8, copy_length: int = 10) -> float:
    """Cross-entropy per step of the best memoryless model on :func:`copy_memory`.

    Without memory the best guess is "blank" for the first T + C steps (certain, zero loss)
    and the uniform distribution over the K symbols for the last C steps::

        CE = C · log(K) / (T + 2C)          (10 · log 8 / (T + 20) in Arjovsky et al. 2016)
    """
    return copy_length * math.log(num_symbols) / (length + 2 * copy_length)


def copy_memory(
    size: int,
    length: int,
    seed: int = 0,
    num_symbols: int = 8,
    copy_length: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The copy memory task (Arjovsky, Shah & Bengio 2016; after Hochreiter & Schmidhuber 1997).

    Input: C symbols drawn uniformly from ``1..K``, then T - 1 blanks (0), a delimiter
    (K + 1) and C more blanks. Target: blanks for the first T + C steps, then the C symbols in
    their original order. With the defaults (K = 8, C = 10) the alphabet is
    ``0`` blank, ``1..8`` symbols, ``9`` delimiter. A memoryless model scores
    :func:`copy_memory_baseline` = 10·log(8)/(T + 20) per step.

    Reference: Arjovsky, Shah & Bengio, "Unitary Evolution Recurrent Neural Networks",
    ICML 2016, Section 4.1.

    Returns:
        ``x`` and ``y``, both int64 ``(N, T + 2C)``.
    """
    _check_positive("size", size)
    _check_positive("length", length)
    _check_positive("num_symbols", num_symbols)
    _check_positive("copy_length", copy_length)
    generator = _generator(seed)
    total = length + 2 * copy_length
    symbols = torch.randint(1, num_symbols + 1, (size, copy_length), generator=generator)
    x = torch.zeros(size, total, dtype=torch.int64)  # (N, T + 2C)
    x[:, :copy_length] = symbols
    x[:, copy_length + length - 1] = num_symbols + 1
    y = torch.zeros(size, total, dtype=torch.int64)  # (N, T + 2C)
    y[:, -copy_length:] = symbols
    return x, y


DIGITS_SEQUENCES = ("rows", "pixels")


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.data, dtype=torch.float32) / 16.0  # (N, 64)
    labels = torch.tensor(data.target, dtype=torch.int64)  # (N,)
    return images, labels


def digits(
    sequence: str = "rows",
    permuted: bool = False,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's 8×8 handwritten digits read as sequences (a small "sequential MNIST").

    1797 images, 10 classes, pixel values 0..16 scaled to [0, 1]. ``sequence="rows"`` feeds
    one row of 8 pixels per step (T = 8, F = 8); ``"pixels"`` feeds one pixel per step
    (T = 64, F = 1), the pixel-by-pixel setting of Le et al. 2015. ``permuted=True`` applies one
    fixed permutation of the 64 pixels, drawn from ``seed``, to every image (their "permuted
    MNIST"), which spreads neighbouring pixels far apart in time.

    Reference: Le, Jaitly & Hinton 2015 (sequential / permuted MNIST); the data are the UCI
    optical recognition of handwritten digits test set shipped with scikit-learn.

    Returns:
        ``{"train": (x, y), "test": (x, y)}`` with ``x`` float ``(N, 8, 8)`` or ``(N, 64, 1)``
        and ``y`` int64 ``(N,)``; the split is a seeded shuffle.
    """
    if sequence not in DIGITS_SEQUENCES:
        raise ValueError(f"sequence must be one of {DIGITS_SEQUENCES}, got {sequence!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    images, labels = _load_digits()
    if permuted:
        pixel_order = torch.from_numpy(np.random.default_rng([seed, 1]).permutation(64))
        images = images[:, pixel_order]  # (N, 64)
    if sequence == "rows":
        images = images.view(-1, 8, 8)  # (N, T=8, F=8)
    else:
        images = images.view(-1, 64, 1)  # (N, T=64, F=1)
    order = torch.from_numpy(np.random.default_rng([seed, 0]).permutation(len(labels)))
    n_test = round(len(labels) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def reversal(
    size: int,
    min_length: int = 1,
    max_length: int = 30,
    num_symbols: int = 10,
    seed: int = 0,
) -> list[tuple[str, str]]:
    """Sequence reversal, the smallest sequence-to-sequence task.

    The first output symbol is the last input symbol, so an encoder-decoder without attention
    must carry the whole sequence in its final state, while attention learns the (anti-diagonal)
    alignment directly. Sources are ``min_length..max_length`` symbols drawn uniformly from the
    first ``num_symbols`` lowercase letters, separated by spaces; the target is the same symbols
    in reverse order: ``("c a d", "d a c")``.
    """
    _check_positive("size", size)
    _check_positive("min_length", min_length)
    if max_length < min_length:
        raise ValueError(f"max_length must be >= min_length ({min_length}), got {max_length}")
    if not 1 <= num_symbols <= len(_LETTERS):
        raise ValueError(f"num_symbols must be in 1..{len(_LETTERS)}, got {num_symbols}")
    rng = random.Random(seed)
    symbols = _LETTERS[:num_symbols]
    pairs = []
    for _ in range(size):
        tokens = [rng.choice(symbols) for _ in range(rng.randint(min_length, max_length))]
        pairs.append((" ".join(tokens), " ".join(reversed(tokens))))
    return pairs


# English names written out: calendar.month_name follows the process locale.
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _date_formats(date: datetime.date) -> list[str]:
    """Human spellings of ``date``; slashes are US month/day, dots European day.month."""
    y, m, d = date.year, date.month, date.day
    month, mon = _MONTHS[m - 1], _MONTHS[m - 1][:3]
    weekday = _WEEKDAYS[calendar.weekday(y, m, d)]
    return [
        f"{d} {month} {y}",
        f"{month} {d}, {y}",
        f"{m:02d}/{d:02d}/{y % 100:02d}",
        f"{weekday[:3]} {d} {mon} {y}",
        f"{y}-{m}-{d}",
        f"{d} {mon} {y}",
        f"{mon} {d} {y}",
        f"{weekday}, {month} {d}, {y}",
        f"{d:02d}.{m:02d}.{y}",
        f"{m}/{d}/{y}",
        f"{month.lower()} {d} {y}",
        f"the {_ordinal(d)} of {month}, {y}",
        f"{y}/{m:02d}/{d:02d}",
        f"{d}-{mon.upper()}-{y % 100:02d}",
    ]


DATES_FIRST = datetime.date(1950, 1, 1)
DATES_LAST = datetime.date(2049, 12, 31)


def dates(size: int, seed: int = 0) -> list[tuple[str, str]]:
    """Date normalisation: a date as people write it -> ISO 8601 ``YYYY-MM-DD``.

    Dates are uniform over 1950-01-01..2049-12-31, so a two-digit year is unambiguous
    (00-49 -> 20xx, 50-99 -> 19xx). Each source uses one of fourteen spellings, e.g.
    ``"3 March 1998"``, ``"March 3, 1998"``, ``"03/03/98"`` (US month/day),
    ``"Tue 3 Mar 1998"``, ``"1998-3-3"``, ``"03.03.1998"`` (day.month), ``"the 3rd of March,
    1998"``; the target is ``"1998-03-03"``. This is the classic small exercise for attention
    (the alignment between the day, month and year pieces is visible in the weights).
    """
    _check_positive("size", size)
    rng = random.Random(seed)
    first, last = DATES_FIRST.toordinal(), DATES_LAST.toordinal()
    pairs = []
    for _ in range(size):
        date = datetime.date.fromordinal(rng.randint(first, last))
        pairs.append((rng.choice(_date_formats(date)), date.isoformat()))
    return pairs


# The words before the blank are the same for every label; only the cue after it decides.
_BLANK_SUBJECTS = ("I", "my sister", "our neighbour", "the boy", "she", "he", "my friend")
_BLANK_VERBS = ("took", "brought", "carried", "drove", "rushed", "walked")
_BLANK_LINKS = ("because it was", "after it started", "when it kept", "while it was")
_BLANK_CUES = {
    "dog": ("barking", "wagging its tail", "fetching sticks", "growling at the postman"),
    "cat": ("purring", "meowing", "chasing mice", "scratching the sofa"),
    "bird": ("singing", "flapping its wings", "building a nest", "pecking at seeds"),
    "fish": ("blowing bubbles", "swimming in circles", "hiding under a rock", "gulping water"),
}
_BLANK_ENDINGS = ("", " all day", " again", " this morning", " in the garden")


def fill_in_the_blank(size: int, seed: int = 0) -> list[tuple[str, str]]:
    """Name the animal in the blank; only words after the blank tell which one.

    Sentences like ``"my sister took my ___ to the vet because it was purring"`` -> ``"cat"``.
    Everything left of the blank is drawn independently of the label, so a model reading left
    to right and answering at the blank is at chance (1/4); a bidirectional model sees the cue
    (the motivation for bidirectional RNNs, Schuster & Paliwal 1997).

    Returns:
        ``(text, label)`` pairs; the text holds ``"___"`` once; labels are dog, cat, bird, fish.
    """
    _check_positive("size", size)
    rng = random.Random(seed)
    labels = sorted(_BLANK_CUES)
    pairs = []
    for _ in range(size):
        label = rng.choice(labels)
        text = (
            f"{rng.choice(_BLANK_SUBJECTS)} {rng.choice(_BLANK_VERBS)} my ___ to the vet "
            f"{rng.choice(_BLANK_LINKS)} {rng.choice(_BLANK_CUES[label])}"
            f"{rng.choice(_BLANK_ENDINGS)}"
        )
        pairs.append((text, label))
    return pairs
