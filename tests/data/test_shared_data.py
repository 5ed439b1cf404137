"""The readers and tokenizers on the real corpora in ../shared/data (skipped when absent)."""

from pathlib import Path

import pytest

from seqlab.data import Tokenizer, read_parallel, read_text

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SHAKESPEARE = DATA / "tinyshakespeare" / "input.txt"
MULTI30K = DATA / "multi30k"


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="tinyshakespeare not at hand")
def test_char_tokenizer_round_trips_tinyshakespeare():
    text = read_text(SHAKESPEARE)
    tokenizer = Tokenizer.train([text], kind="char")
    # char-rnn's tinyshakespeare has 65 distinct characters.
    assert len(tokenizer) == 65 + 5
    ids = tokenizer.encode(text)
    assert len(ids) == len(text) and tokenizer.decode(ids) == text


@pytest.mark.skipif(not (MULTI30K / "val.de.gz").exists(), reason="Multi30k not at hand")
def test_multi30k_validation_pairs_align():
    pairs = read_parallel(MULTI30K / "val.de.gz", MULTI30K / "val.en.gz")
    assert len(pairs) == 1014
    assert all(source and target for source, target in pairs)
