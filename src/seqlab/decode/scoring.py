"""Corpus-level scores for generated text: BLEU and chrF (through sacrebleu) and exact match.

BLEU (Papineni et al. 2002) is the geometric mean of modified n-gram precisions p_1..p_4 times a
brevity penalty, over the whole corpus:

    BLEU = BP * exp(sum_{n=1..4} log(p_n) / 4),   BP = min(1, exp(1 - r / c))

with c the total hypothesis length and r the total (closest) reference length, on 13a-tokenised
text (sacrebleu's default, the tokenisation of WMT's mteval-v13a script), reported 0..100.
chrF (Popović 2015) is the F-beta score (beta = 2) of character n-grams, n = 1..6, averaged
over n, 0..100; ``word_order=2`` gives chrF++ (word uni- and bigrams added).

References are given per hypothesis: ``references[i]`` is one string, or a list of strings when
sentence i has several references (every sentence must then have the same number).
"""

from __future__ import annotations

from collections.abc import Sequence

import sacrebleu

__all__ = ["bleu", "chrf", "exact_match"]


def _reference_streams(
    hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]
) -> list[list[str]]:
    """Per-hypothesis references -> sacrebleu's layout: one list per reference "stream"."""
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError("hypotheses and references should be lists of strings, got a string")
    if len(hypotheses) != len(references):
        raise ValueError(
            f"need one reference entry per hypothesis, got {len(hypotheses)} hypotheses and "
            f"{len(references)} references"
        )
    per_sentence = [[ref] if isinstance(ref, str) else list(ref) for ref in references]
    counts = {len(refs) for refs in per_sentence}
    if len(counts) > 1 or 0 in counts:
        raise ValueError(
            f"every hypothesis needs the same number (>= 1) of references, got counts "
            f"{sorted(counts)}"
        )
    count = counts.pop() if counts else 1
    return [[refs[k] for refs in per_sentence] for k in range(count)]


def bleu(
    hypotheses: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    tokenize: str = "13a",
    lowercase: bool = False,
) -> float:
    """Corpus BLEU, 0..100, as ``sacrebleu.corpus_bleu`` computes it (exp smoothing, 13a)."""
    streams = _reference_streams(hypotheses, references)
    return sacrebleu.corpus_bleu(
        list(hypotheses), streams, tokenize=tokenize, lowercase=lowercase
    ).score


def chrf(
    hypotheses: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    word_order: int = 0,
) -> float:
    """Corpus chrF, 0..100, as ``sacrebleu.corpus_chrf`` computes it; word_order=2 is chrF++."""
    streams = _reference_streams(hypotheses, references)
    return sacrebleu.corpus_chrf(list(hypotheses), streams, word_order=word_order).score


def exact_match(
    hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]
) -> float:
    """Fraction (0..1) of hypotheses equal to one of their references, ends' whitespace ignored."""
    streams = _reference_streams(hypotheses, references)
    if not hypotheses:
        return 0.0
    hits = sum(
        any(hypothesis.strip() == stream[i].strip() for stream in streams)
        for i, hypothesis in enumerate(hypotheses)
    )
    return hits / len(hypotheses)
