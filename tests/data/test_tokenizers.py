"""Tokenizers: special ids, round trips per kind, frequency ordering, save/load, label vocab."""

import json

import pytest
import tokenizers as hf

from seqlab.data import SPECIAL_TOKENS, DataError, LabelVocab, Tokenizer

TEXTS = [
    "The cat sat on the mat.\n",
    "The dog, however, did not sit!\n",
    "  tabs\tand  double  spaces \n",
    "Ünïcödé café — naïve résumé\n",
]


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_special_tokens_hold_ids_0_to_4(kind):
    tokenizer = Tokenizer.train(TEXTS, kind=kind, vocab_size=300)
    assert [tokenizer.id_to_token(i) for i in range(5)] == list(SPECIAL_TOKENS)
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2, 3)
    assert tokenizer.mask_id == 4
    assert len(tokenizer) == tokenizer.vocab_size == len(tokenizer.get_vocab())


def test_char_round_trip_is_exact_with_whitespace_and_newlines():
    tokenizer = Tokenizer.train(iter(TEXTS), kind="char")
    text = "".join(TEXTS)
    ids = tokenizer.encode(text)
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.tokens("a\tb") == ["a", "\t", "b"]
    # Distinct characters plus the five specials, nothing more.
    assert len(tokenizer) == len(set(text)) + 5


def test_char_vocab_ordered_by_frequency_then_token():
    tokenizer = Tokenizer.train(["bbbaac", "c"], kind="char")
    # b: 3, a: 2, c: 2 -> b first, then a before c (tie broken by the string).
    assert [tokenizer.id_to_token(i) for i in range(5, 8)] == ["b", "a", "c"]


def test_char_unknown_character_maps_to_unk_and_max_size_caps():
    tokenizer = Tokenizer.train(["aaab bc"], kind="char", max_size=2)
    assert len(tokenizer) == 5 + 2
    # a: 3 and b: 2 stay; " " and c (1 each) fall out and become <unk>.
    assert tokenizer.encode("ab c") == [5, 6, 1, 1]
    assert tokenizer.token_to_id("c") is None


def test_bos_eos_wrap_and_skip_special_on_decode():
    tokenizer = Tokenizer.train(TEXTS, kind="char")
    ids = tokenizer.encode("cat", add_bos=True, add_eos=True)
    assert ids[0] == 2 and ids[-1] == 3 and len(ids) == 5
    assert tokenizer.decode(ids) == "cat"
    assert tokenizer.decode(ids, skip_special=False) == "<bos>cat<eos>"
    assert tokenizer.encode_batch(["cat", "mat"], add_eos=True) == [
        tokenizer.encode("cat", add_eos=True),
        tokenizer.encode("mat", add_eos=True),
    ]


def test_word_split_lowercase_min_frequency_and_decode():
    texts = ["The cat sat.", "the cat ran, the end!", "don't stop (now)"]
    tokenizer = Tokenizer.train(texts, kind="word", lowercase=True, min_frequency=2)
    assert tokenizer.tokens("The CAT sat") == ["the", "cat", "<unk>"]
    # Only "the" (3) and "cat" (2) reach min_frequency=2.
    assert len(tokenizer) == 7
    assert tokenizer.encode("the dog cat") == [5, 1, 6]
    full = Tokenizer.train(texts, kind="word")
    assert full.tokens("the cat sat, don't!") == ["the", "cat", "sat", ",", "don't", "!"]
    assert full.decode(full.encode("The cat sat, the end!")) == "The cat sat, the end!"
    assert full.decode(full.encode("(the cat)")) == "(the cat)"


def test_word_max_size_keeps_the_most_frequent():
    tokenizer = Tokenizer.train(["a a a b b c d"], kind="word", max_size=2)
    assert [tokenizer.id_to_token(i) for i in range(5, len(tokenizer))] == ["a", "b"]


def test_byte_level_bpe_round_trip_and_size():
    corpus = ["the theme of the thesis is there"] * 20 + TEXTS
    tokenizer = Tokenizer.train(corpus, kind="bpe", vocab_size=300)
    assert len(tokenizer) == 300
    text = "".join(TEXTS) + "never seen: 漢字 ✓"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.unk_id not in tokenizer.encode(text)
    # Merges happened: "the" is one token, fewer ids than bytes.
    assert tokenizer.tokens("the") == ["the"]


def test_whitespace_bpe_joins_words_with_spaces():
    corpus = ["low lower lowest newer newest wider"] * 10
    tokenizer = Tokenizer.train(corpus, kind="bpe", vocab_size=60, byte_level=False)
    assert tokenizer.decode(tokenizer.encode("lower newest")) == "lower newest"
    assert tokenizer.tokens("low")[-1].endswith("</w>")


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_save_load_gives_an_equal_tokenizer(kind, tmp_path):
    tokenizer = Tokenizer.train(TEXTS, kind=kind, lowercase=True, vocab_size=280)
    path = tokenizer.save(tmp_path)
    assert path == tmp_path / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == "seqlab.tokenizer" and data["kind"] == kind
    loaded = Tokenizer.load(path)
    assert (loaded.kind, loaded.lowercase, len(loaded)) == (kind, True, len(tokenizer))
    assert loaded.get_vocab() == tokenizer.get_vocab()
    text = "".join(TEXTS)
    assert loaded.encode(text) == tokenizer.encode(text)
    assert loaded.decode(loaded.encode(text)) == tokenizer.decode(tokenizer.encode(text))
    assert Tokenizer.load(tmp_path).get_vocab() == tokenizer.get_vocab()


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        Tokenizer.load(tmp_path / "missing.json")
    plain = tmp_path / "plain.json"
    plain.write_text(hf.Tokenizer(hf.models.WordLevel({"a": 0}, unk_token="a")).to_str())
    with pytest.raises(DataError, match=r"plain\.json: not a seqlab tokenizer"):
        Tokenizer.load(plain)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match="invalid JSON"):
        Tokenizer.load(broken)


def test_bad_arguments_name_the_allowed_values():
    with pytest.raises(ValueError, match=r"kind must be one of \('char', 'word', 'bpe', 'wordpiece'\)"):
        Tokenizer.train(TEXTS, kind="sentencepiece")
    with pytest.raises(ValueError, match="max_size"):
        Tokenizer.train(TEXTS, kind="bpe", max_size=10)
    tokenizer = Tokenizer.train(TEXTS, kind="char")
    with pytest.raises(ValueError, match="out of range"):
        tokenizer.id_to_token(10_000)


def test_label_vocab_sorted_encode_decode_and_round_trip(tmp_path):
    vocab = LabelVocab(["pos", "neg", "neu", "pos", "neg"])
    assert vocab.labels == ["neg", "neu", "pos"] and len(vocab) == 3
    assert [vocab.encode(label) for label in ("neg", "neu", "pos")] == [0, 1, 2]
    assert vocab.decode(2) == "pos"
    with pytest.raises(ValueError, match=r"unknown label 'happy'; known labels: \['neg', 'neu'"):
        vocab.encode("happy")
    assert LabelVocab.from_dict(json.loads(json.dumps(vocab.to_dict()))) == vocab
    vocab.save(tmp_path / "labels.json")
    assert LabelVocab.load(tmp_path / "labels.json") == vocab


@pytest.mark.parametrize("lowercase", [False, True])
def test_char_fast_path_matches_the_backend(lowercase):
    tokenizer = Tokenizer.train(TEXTS, kind="char", lowercase=lowercase)
    for text in ["".join(TEXTS), "ZEBRA Ünï 漢", "a<eos>b<pad>"]:
        expected = tokenizer.backend.encode(text, add_special_tokens=False).ids
        assert tokenizer.encode(text) == expected
        assert tokenizer.decode(expected, skip_special=False) == tokenizer.backend.decode(
            expected, skip_special_tokens=False
        )


def test_from_words_keeps_pre_split_tokens_and_aligns_ids(tmp_path):
    sentences = [["The", "U.S.", "said", "."], ["the", "U.S.", "agreed", "."]]
    tokenizer = Tokenizer.from_words(sentences, lowercase=True, min_frequency=2)
    # the: 2, u.s.: 2, .: 2 (ties by string: "." < "the" < "u.s."); said / agreed dropped.
    assert [tokenizer.id_to_token(i) for i in range(5, len(tokenizer))] == [".", "the", "u.s."]
    words = ["THE", "U.S.", "said", "."]
    assert tokenizer.encode_words(words) == [6, 7, 1, 5]
    loaded = Tokenizer.load(tokenizer.save(tmp_path / "tok.json"))
    assert loaded.kind == "word" and loaded.encode_words(words) == [6, 7, 1, 5]
    assert Tokenizer.from_words(sentences, max_size=1).get_vocab() == {
        **{token: i for i, token in enumerate(SPECIAL_TOKENS)},
        ".": 5,
    }


def test_a_single_string_trains_as_one_text():
    assert (
        Tokenizer.train("to be", kind="word").get_vocab()
        == Tokenizer.train(["to be"], kind="word").get_vocab()
    )


def test_wordpiece_ids_are_numbered_by_their_text():
    texts = [f"the unbelievable {word} sat on the {word}s" for word in
             ("cat", "dog", "mat", "hat", "bat", "rat", "cats", "dogs")] * 5
    first = Tokenizer.train(texts, kind="wordpiece", vocab_size=60, lowercase=True)
    vocab = first.get_vocab()
    assert [first.id_to_token(i) for i in range(5)] == list(SPECIAL_TOKENS)
    pieces = [first.id_to_token(i) for i in range(5, len(vocab))]
    # whole-word pieces first, then continuations, each in text order
    assert pieces == sorted(pieces, key=lambda piece: (piece.startswith("##"), piece))
    # The library's trainer breaks ties between equally frequent pairs in no fixed order, so a
    # second training may differ in a few rare pieces; the common ones are always there.
    again = Tokenizer.train(texts, kind="wordpiece", vocab_size=60, lowercase=True)
    assert len(set(again.get_vocab()) & set(vocab)) >= 0.8 * len(vocab)
    assert first.tokens("The unbelievable cats") == ["the", "unbelievable", "cats"]
    assert first.decode(first.encode("the cats sat")) == "the cats sat"
