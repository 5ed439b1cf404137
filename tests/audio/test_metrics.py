"""WER and CER against worked examples (edit distance counted by hand)."""

import pytest

pytest.importorskip("jiwer", reason="WER / CER need jiwer (pip install 'seqlab[audio]')")

from seqlab.tasks.asr import character_error_rate, word_error_rate


def test_wer_substitution_and_deletion():
    # the cat sat on the mat -> the cat SIT on _ mat: 1 substitution + 1 deletion over 6 words.
    assert word_error_rate(["the cat sat on the mat"], ["the cat sit on mat"]) == pytest.approx(2 / 6)


def test_wer_insertion_can_exceed_one():
    # "one" -> "one one one": 2 insertions over 1 reference word.
    assert word_error_rate(["one"], ["one one one"]) == pytest.approx(2.0)


def test_wer_is_pooled_over_the_corpus():
    # (1 deletion + 1 substitution) / (2 + 3) reference words, not the mean of 1/2 and 1/3.
    assert word_error_rate(["a b", "c d e"], ["a", "c x e"]) == pytest.approx(2 / 5)


def test_wer_of_an_empty_hypothesis_is_all_deletions():
    assert word_error_rate(["three one four"], [""]) == pytest.approx(1.0)


def test_cer_counts_characters_and_spaces():
    # "abc" -> "abd": 1 substitution / 3.  "ab cd" -> "abcd": 1 deletion (the space) / 5.
    assert character_error_rate(["abc"], ["abd"]) == pytest.approx(1 / 3)
    assert character_error_rate(["ab cd"], ["abcd"]) == pytest.approx(1 / 5)
    assert character_error_rate(["abc", "ab cd"], ["abd", "abcd"]) == pytest.approx(2 / 8)


def test_mismatched_counts_are_refused():
    with pytest.raises(ValueError, match="2 references and 1 hypotheses"):
        word_error_rate(["a", "b"], ["a"])
