"""BLEU / chrF against sacrebleu and the BLEU formula written out; exact match."""

import math
from collections import Counter

import pytest
import sacrebleu

from seqlab.decode.scoring import bleu, chrf, exact_match

HYPOTHESES = [
    "the cat sat on the mat .",
    "a dog runs in the park today",
    "two men are playing football outside",
]
REFERENCES = [
    "the cat is sitting on the mat .",
    "a dog is running in the park",
    "two men play soccer outside on the grass",
]


def test_identical_text_scores_100():
    assert bleu(REFERENCES, REFERENCES) == pytest.approx(100.0)
    assert chrf(REFERENCES, REFERENCES) == pytest.approx(100.0)
    assert exact_match(REFERENCES, REFERENCES) == 1.0


def test_matches_sacrebleu():
    assert bleu(HYPOTHESES, REFERENCES) == sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score
    assert chrf(HYPOTHESES, REFERENCES) == sacrebleu.corpus_chrf(HYPOTHESES, [REFERENCES]).score
    second = ["the cat sat on a mat .", "a dog runs in a park", "two men play football outside"]
    multi = [[first, other] for first, other in zip(REFERENCES, second)]
    assert bleu(HYPOTHESES, multi) == sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES, second]).score


def test_bleu_equals_the_formula():
    """Modified n-gram precision and brevity penalty computed by hand (no smoothing needed)."""

    def ngrams(tokens, n):
        return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))

    hyps = [h.split() for h in HYPOTHESES]
    refs = [r.split() for r in REFERENCES]
    log_precision = 0.0
    for n in range(1, 5):
        matches = sum(sum((ngrams(h, n) & ngrams(r, n)).values()) for h, r in zip(hyps, refs))
        total = sum(max(len(h) - n + 1, 0) for h in hyps)
        log_precision += math.log(matches / total) / 4
    c, r = sum(map(len, hyps)), sum(map(len, refs))
    brevity = min(1.0, math.exp(1 - r / c))
    assert bleu(HYPOTHESES, REFERENCES) == pytest.approx(100 * brevity * math.exp(log_precision))


def test_exact_match_counts_whole_strings():
    assert exact_match(["a b", "c d ", "e"], ["a b", "c d", "f"]) == pytest.approx(2 / 3)
    assert exact_match(["x", "y"], [["z", "x"], ["y", "w"]]) == 1.0


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="got 3 hypotheses and 2 references"):
        bleu(HYPOTHESES, REFERENCES[:2])
