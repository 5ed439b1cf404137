"""A generated DNA task: does the sequence hold a TATA-box-like motif?

Each sequence has L letters drawn independently and uniformly (background b = 1/4 each). A
positive sequence has, in addition, one motif of k = 8 letters at a uniformly random position
p ∈ {0..L−k}, each letter drawn from its column of a position weight matrix M (consensus
TATAWAWR, after the TATA box: Lifton et al. 1978, JASPAR MA0108), so substitutions away from
the consensus are part of the motif. Negatives are background only. Classes are balanced.

The likelihood ratio of the two classes is known in closed form,

    P(x | motif) / P(x | none) = 1/(L−k+1) · Σ_p Π_{j<k} M[j, x_{p+j}] / b(x_{p+j}),

so the Bayes-optimal classifier (posterior r/(1+r) with equal priors) and its accuracy,
E_x[max(P(1|x), P(0|x))], are computed exactly per sequence; :func:`bayes_accuracy` averages
them over fresh samples. Background letters that look like the motif by chance, and motif
samples far from the consensus, make some sequences ambiguous even to that classifier.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BACKGROUND", "TATA_PWM", "bayes_accuracy", "motif_posterior", "motif_sequences"]

LETTERS = "ACGT"
BACKGROUND = np.array([0.25, 0.25, 0.25, 0.25])  # A C G T
# Rows: motif positions; columns: A C G T. Consensus T A T A W A W R (W = A/T, R = A/G).
TATA_PWM = np.array([
    [0.03, 0.03, 0.03, 0.91],
    [0.91, 0.03, 0.03, 0.03],
    [0.03, 0.03, 0.03, 0.91],
    [0.91, 0.03, 0.03, 0.03],
    [0.48, 0.02, 0.02, 0.48],
    [0.91, 0.03, 0.03, 0.03],
    [0.48, 0.02, 0.02, 0.48],
    [0.48, 0.02, 0.48, 0.02],
])


def motif_sequences(count: int, length: int = 64, seed: int = 0) -> list[tuple[str, str]]:
    """`count` (sequence, label) pairs, label "motif" or "none", alternating then shuffled."""
    k = len(TATA_PWM)
    if length < k:
        raise ValueError(f"length should be at least the motif's {k} letters, got {length}")
    rng = np.random.default_rng(seed)
    letters = rng.choice(4, size=(count, length), p=BACKGROUND)  # (N, L)
    labels = np.arange(count) % 2 == 0
    rng.shuffle(labels)
    for row in np.flatnonzero(labels):
        start = rng.integers(0, length - k + 1)
        letters[row, start:start + k] = [rng.choice(4, p=column) for column in TATA_PWM]
    alphabet = np.array(list(LETTERS))
    return [("".join(alphabet[row]), "motif" if label else "none") for row, label in zip(letters, labels)]


def motif_posterior(sequences: list[str]) -> np.ndarray:
    """P(motif | x) for each sequence (equal priors), from the exact likelihood ratio above."""
    k = len(TATA_PWM)
    log_ratio = np.log(TATA_PWM / BACKGROUND)  # (k, 4)
    index = {letter: i for i, letter in enumerate(LETTERS)}
    posteriors = []
    for sequence in sequences:
        x = np.array([index[c] for c in sequence])  # (L,)
        windows = np.lib.stride_tricks.sliding_window_view(x, k)  # (L-k+1, k)
        scores = log_ratio[np.arange(k), windows].sum(1)  # (L-k+1,) log Π M/b per position
        top = scores.max()
        log_r = top + np.log(np.exp(scores - top).mean())  # log of the mean ratio
        posteriors.append(1 / (1 + np.exp(-log_r)))
    return np.array(posteriors)


def bayes_accuracy(length: int = 64, samples: int = 20000, seed: int = 12345) -> float:
    """The Bayes-optimal accuracy E[max(P(1|x), 1−P(1|x))], averaged over fresh samples."""
    sequences = [s for s, _ in motif_sequences(samples, length, seed)]
    posterior = motif_posterior(sequences)
    return float(np.maximum(posterior, 1 - posterior).mean())
