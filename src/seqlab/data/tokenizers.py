"""Tokenizers (char / word / BPE) and label vocabularies that save to one JSON file.

Text reaches a model through three steps::

    text --tokens()--> ["h", "e", ...] --encode()--> [12, 9, ...] --nn.Embedding--> (L, E)

The string-to-token split and the token-to-index table live in a Hugging Face
``tokenizers.Tokenizer`` (fast, streaming-friendly training, a standard serialisation); this
module wraps it with the choices seqlab makes everywhere:

* the special tokens ``<pad> <unk> <bos> <eos> <mask>`` always hold ids 0..4, so a padded batch
  is zeros and ``nn.Embedding(padding_idx=0)`` works for every tokenizer;
* three kinds: ``char`` (every character is a token, whitespace and newlines included, so
  ``decode(encode(t)) == t``), ``word`` (whitespace + punctuation split, unknown words map to
  ``<unk>``) and ``bpe`` (byte pair encoding, Sennrich et al. 2016, "Neural Machine Translation
  of Rare Words with Subword Units"; byte-level as in GPT-2 by default, so nothing is unknown);
* one JSON file holds the backend serialisation plus seqlab's own fields (``kind`` ...).

Char and word vocabularies are ordered by frequency (most frequent first), ties by the token
string, so training on the same text always gives the same ids. A special token written out in
the text (``"<eos>"``) is read as that token, as in Hugging Face tokenizers.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import tokenizers as hf
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers

from seqlab.data.readers import DataError

__all__ = ["SPECIAL_TOKENS", "LabelVocab", "Tokenizer"]

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>", "<mask>")
# The same roles under BERT's names, accepted at the same ids in a Hugging Face tokenizer.
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, BOS_ID, EOS_ID, MASK_ID = range(len(SPECIAL_TOKENS))

KINDS = ("char", "word", "bpe", "wordpiece")
FORMAT_NAME = "seqlab.tokenizer"
FORMAT_VERSION = 1
DEFAULT_FILENAME = "tokenizer.json"

# A word keeps inner apostrophes ("don't") and every punctuation mark is a token of its own.
_WORD_PATTERN = r"\w+(?:['’]\w+)*|[^\w\s]"
# Word detokenisation: no space before closing marks, none after opening ones.
_NO_SPACE_BEFORE = frozenset(".,!?;:%)]}")
_NO_SPACE_AFTER = frozenset("([{$")


def _resolve_path(path: str | Path) -> Path:
    """A directory means ``<dir>/tokenizer.json``; anything else is the file itself."""
    path = Path(path)
    return path / DEFAULT_FILENAME if path.is_dir() else path


def _join_words(words: Sequence[str]) -> str:
    """Join word tokens with single spaces, attaching punctuation to its neighbour."""
    pieces: list[str] = []
    for word in words:
        if pieces and word not in _NO_SPACE_BEFORE and pieces[-1] not in _NO_SPACE_AFTER:
            pieces.append(" ")
        pieces.append(word)
    return "".join(pieces)


def _normalize(backend: hf.Tokenizer, text: str) -> str:
    return text if backend.normalizer is None else backend.normalizer.normalize_str(text)


def _char_backend(lowercase: bool) -> hf.Tokenizer:
    backend = hf.Tokenizer(models.WordLevel(unk_token="<unk>"))
    if lowercase:
        backend.normalizer = normalizers.Lowercase()
    # Every code point, newline included, is its own piece.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return backend


def _word_backend(lowercase: bool) -> hf.Tokenizer:
    backend = hf.Tokenizer(models.WordLevel(unk_token="<unk>"))
    if lowercase:
        backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(Regex(_WORD_PATTERN), behavior="isolated"),
        ]
    )
    return backend


def _wordpiece_backend(lowercase: bool) -> hf.Tokenizer:
    # BERT's scheme: split on whitespace and punctuation, then each word into the longest
    # pieces in the vocabulary, "##" marking a piece that continues a word.
    backend = hf.Tokenizer(models.WordPiece(unk_token="<unk>", continuing_subword_prefix="##"))
    steps = [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()]
    backend.normalizer = normalizers.Sequence(steps if lowercase else steps[:1])
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    return backend


def _bpe_backend(lowercase: bool, byte_level: bool) -> hf.Tokenizer:
    if byte_level:
        # GPT-2 style: text is bytes, each byte a base symbol, so there is no <unk> and
        # spaces survive the round trip.
        backend = hf.Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
    else:
        # Sennrich et al. style: words split on whitespace, "</w>" marks a word end.
        backend = hf.Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
        backend.pre_tokenizer = pre_tokenizers.Whitespace()
        backend.decoder = decoders.BPEDecoder(suffix="</w>")
    if lowercase:
        backend.normalizer = normalizers.Lowercase()
    return backend


class Tokenizer:
    """A trained char / word / BPE tokenizer with seqlab's special tokens at ids 0..4.

    Build one with :meth:`train` or :meth:`load`; wrapping an existing Hugging Face
    ``tokenizers.Tokenizer`` works too when its ids 0..4 are ``SPECIAL_TOKENS``.

    Args:
        backend: the ``tokenizers.Tokenizer`` doing the work.
        kind: ``"char"``, ``"word"`` or ``"bpe"`` (decides how ids are joined back into text).
        lowercase: whether the backend lowercases its input (recorded for the user).
        byte_level: for ``bpe``, whether it is byte-level (recorded for the user).
    """

    pad_id = PAD_ID
    unk_id = UNK_ID
    bos_id = BOS_ID
    eos_id = EOS_ID
    mask_id = MASK_ID

    def __init__(
        self,
        backend: hf.Tokenizer,
        kind: str,
        lowercase: bool = False,
        byte_level: bool | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        for token_id, names in enumerate(zip(SPECIAL_TOKENS, BERT_SPECIAL_TOKENS)):
            if all(backend.token_to_id(name) != token_id for name in names):
                raise ValueError(
                    f"special token {names[0]!r} (or {names[1]!r}) must have id {token_id}, got "
                    f"{backend.token_to_id(names[0])!r}; seqlab expects {SPECIAL_TOKENS} (or "
                    f"BERT's {BERT_SPECIAL_TOKENS}) at ids 0..4"
                )
        self.backend = backend
        self.kind = kind
        self.lowercase = lowercase
        self.byte_level = byte_level
        # Lookup tables for the pure-Python fast paths (a dict lookup per character is ~50x
        # faster than the backend on a megabyte of text, with identical ids).
        self._token_ids: dict[str, int] | None = None
        self._id_tokens: list[str] | None = None
        self._char_table: np.ndarray | None = None

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        kind: str = "char",
        lowercase: bool = False,
        min_frequency: int = 1,
        max_size: int | None = None,
        vocab_size: int = 8000,
        byte_level: bool = True,
    ) -> Tokenizer:
        """Learn a vocabulary from an iterable of texts (read once, streamed).

        Args:
            texts: strings (lines, documents); a generator is fine.
            kind: ``"char"``, ``"word"``, ``"bpe"`` or ``"wordpiece"`` (BERT's sub-words:
                whitespace / punctuation split, then greedy longest pieces, ``##`` continuing).
            lowercase: lowercase text before splitting (and at encode time).
            min_frequency: char / word: drop tokens seen fewer times; bpe: least frequency of a
                merged pair.
            max_size: char / word only: keep at most this many regular tokens (the most frequent),
                not counting the five special tokens. ``None`` keeps all.
            vocab_size: bpe / wordpiece: total vocabulary size, special tokens included.
            byte_level: bpe only: byte-level BPE (GPT-2; lossless, no ``<unk>``) when True,
                whitespace-split BPE with ``</w>`` word ends (Sennrich et al. 2016) when False.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if min_frequency < 1:
            raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be None or >= 1, got {max_size}")
        if kind in ("bpe", "wordpiece") and max_size is not None:
            raise ValueError(
                f"max_size applies to kind='char' or 'word'; for {kind!r} use vocab_size"
            )
        if kind in ("bpe", "wordpiece") and vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size must be > {len(SPECIAL_TOKENS)}, got {vocab_size}")

        if kind == "bpe":
            backend = _bpe_backend(lowercase, byte_level)
            options = (
                {"initial_alphabet": pre_tokenizers.ByteLevel.alphabet()}
                if byte_level
                else {"end_of_word_suffix": "</w>"}
            )
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=list(SPECIAL_TOKENS),
                show_progress=False,
                **options,
            )
        elif kind == "wordpiece":
            backend = _wordpiece_backend(lowercase)
            trainer = trainers.WordPieceTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=list(SPECIAL_TOKENS),
                continuing_subword_prefix="##",
                show_progress=False,
            )
        else:
            backend = _char_backend(lowercase) if kind == "char" else _word_backend(lowercase)
            # The trainer's size counts the special tokens; a huge cap means "keep all".
            size = len(SPECIAL_TOKENS) + max_size if max_size is not None else 2**31 - 1
            trainer = trainers.WordLevelTrainer(
                vocab_size=size,
                min_frequency=min_frequency,
                special_tokens=list(SPECIAL_TOKENS),
                show_progress=False,
            )
        if isinstance(texts, str):
            texts = [texts]  # one document, not an iterable of one-character texts
        backend.train_from_iterator(iter(texts), trainer=trainer)
        if kind == "wordpiece":
            # The trainer numbers its pieces in a varying order (and breaks ties between equally
            # frequent pairs in no fixed order, so a rare piece may differ between trainings):
            # number them by their text, so the same pieces always get the same ids.
            vocab = backend.get_vocab()
            pieces = sorted(set(vocab) - set(SPECIAL_TOKENS), key=lambda p: (p.startswith("##"), p))
            ordered = {token: i for i, token in enumerate(SPECIAL_TOKENS + tuple(pieces))}
            backend.model = models.WordPiece(ordered, unk_token="<unk>",
                                             continuing_subword_prefix="##")
        return cls(
            backend,
            kind=kind,
            lowercase=lowercase,
            byte_level=byte_level if kind == "bpe" else None,
        )

    @classmethod
    def from_words(
        cls,
        sentences: Iterable[Sequence[str]],
        lowercase: bool = False,
        min_frequency: int = 1,
        max_size: int | None = None,
    ) -> Tokenizer:
        """A word tokenizer whose vocabulary is exactly the given, already split tokens.

        For pre-tokenised corpora (CoNLL): ``"U.S."`` stays one token instead of being split at
        its dots. Ordering matches :meth:`train` (frequency, then token). Encode such tokens with
        :meth:`encode_words`; free text still goes through the usual word split.
        """
        if min_frequency < 1:
            raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be None or >= 1, got {max_size}")
        backend = _word_backend(lowercase)
        counts = Counter(_normalize(backend, token) for tokens in sentences for token in tokens)
        for token in SPECIAL_TOKENS:
            counts.pop(token, None)
        ranked = sorted(
            (token for token, count in counts.items() if count >= min_frequency),
            key=lambda token: (-counts[token], token),
        )[:max_size]
        vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + tuple(ranked))}
        backend.model = models.WordLevel(vocab, unk_token="<unk>")
        backend.add_special_tokens(list(SPECIAL_TOKENS))
        return cls(backend, kind="word", lowercase=lowercase)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (
            f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, "
            f"lowercase={self.lowercase})"
        )

    def token_to_id(self, token: str) -> int | None:
        """The id of ``token``, or None when it is not in the vocabulary."""
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str:
        token = self.backend.id_to_token(int(token_id))
        if token is None:
            raise ValueError(f"token id {token_id} out of range [0, {self.vocab_size})")
        return token

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    def tokens(self, text: str) -> list[str]:
        """The token strings ``text`` splits into (unknown pieces shown as ``<unk>``)."""
        return self.backend.encode(text, add_special_tokens=False).tokens

    def _wrap(self, ids: list[int], add_bos: bool, add_eos: bool) -> list[int]:
        return ([BOS_ID] if add_bos else []) + ids + ([EOS_ID] if add_eos else [])

    def _tables(self) -> tuple[dict[str, int], list[str]]:
        if self._token_ids is None:
            self._token_ids = self.get_vocab()
            self._id_tokens = [""] * self.vocab_size
            for token, token_id in self._token_ids.items():
                self._id_tokens[token_id] = token
        return self._token_ids, self._id_tokens

    def _encode_chars(self, text: str) -> list[int] | None:
        """Char ids by table lookup, or None when the backend must decide (a special token
        written out in the text, which the backend matches as one token)."""
        if any(token in text for token in SPECIAL_TOKENS):
            return None
        text = _normalize(self.backend, text)
        if self._char_table is None:
            # id of every code point up to the largest in the vocabulary, <unk> elsewhere
            token_ids, _ = self._tables()
            chars = {ord(token): i for token, i in token_ids.items() if len(token) == 1}
            self._char_table = np.full(max(chars, default=0) + 1, UNK_ID, dtype=np.int64)
            self._char_table[list(chars)] = list(chars.values())
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = self._char_table
        known = points < len(table)
        return np.where(known, table[np.where(known, points, 0)], UNK_ID).tolist()

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids of ``text``, optionally framed by ``<bos>`` / ``<eos>``."""
        ids = self._encode_chars(text) if self.kind == "char" else None
        if ids is None:
            ids = self.backend.encode(text, add_special_tokens=False).ids
        return self._wrap(ids, add_bos, add_eos)

    def encode_words(self, words: Sequence[str]) -> list[int]:
        """One id per already split token (normalised, e.g. lowercased; unknown -> ``<unk>``),
        so ids stay aligned with per-token tags."""
        token_ids, _ = self._tables()
        return [token_ids.get(_normalize(self.backend, word), UNK_ID) for word in words]

    def encode_batch(
        self, texts: Sequence[str], add_bos: bool = False, add_eos: bool = False
    ) -> list[list[int]]:
        """:meth:`encode` for many texts (the backend runs them in parallel)."""
        encodings = self.backend.encode_batch(list(texts), add_special_tokens=False)
        return [self._wrap(encoding.ids, add_bos, add_eos) for encoding in encodings]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text from ids (a list or a 1-D tensor).

        char: the exact concatenation of the characters; word: tokens joined by single spaces,
        punctuation attached; bpe: the backend's decoder (byte-level: the original text).
        """
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        ids = [int(i) for i in ids]
        if skip_special:
            ids = [i for i in ids if i >= len(SPECIAL_TOKENS)]
        if self.kind == "word":
            return _join_words([self.id_to_token(i) for i in ids])
        if self.kind == "char" and all(0 <= i < self.vocab_size for i in ids):
            _, id_tokens = self._tables()
            return "".join(id_tokens[i] for i in ids)
        return self.backend.decode(ids, skip_special_tokens=False)

    def decode_batch(self, batch: Iterable[Iterable[int]], skip_special: bool = True) -> list[str]:
        return [self.decode(ids, skip_special=skip_special) for ids in batch]

    def to_dict(self) -> dict:
        """Everything needed to rebuild the tokenizer, as JSON-able data."""
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "kind": self.kind,
            "lowercase": self.lowercase,
            "byte_level": self.byte_level,
            "special_tokens": list(SPECIAL_TOKENS),
            "backend": json.loads(self.backend.to_str()),
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> Tokenizer:
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise DataError(
                f"{source}: not a seqlab tokenizer (expected a JSON object with "
                f'"format": "{FORMAT_NAME}"); create one with Tokenizer.train(...).save(path)'
            )
        if data.get("version") != FORMAT_VERSION:
            raise DataError(
                f"{source}: seqlab tokenizer format version {data.get('version')!r} is not "
                f"supported (this seqlab reads version {FORMAT_VERSION})"
            )
        backend = hf.Tokenizer.from_str(json.dumps(data["backend"]))
        return cls(
            backend,
            kind=data.get("kind"),
            lowercase=bool(data.get("lowercase")),
            byte_level=data.get("byte_level"),
        )

    @classmethod
    def from_hf_file(cls, path: str | Path, renumber: bool = False):
        """A Hugging Face ``tokenizer.json`` (as ``save_pretrained`` writes it) whose ids 0..4 are
        the special tokens (seqlab's names or BERT's ``[PAD] [UNK] [CLS] [SEP] [MASK]``).

        With ``renumber=True`` a WordPiece vocabulary that has the five special tokens elsewhere
        (BERT's published ones put ``[UNK]`` at 100) is renumbered with them first, and the call
        returns ``(tokenizer, order)``: ``order[new_id]`` is the old id, so rows of an embedding
        matrix are reordered with ``weight[order]`` (``order`` is None when nothing moved).
        """
        if renumber:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            order = _specials_first(data)
            if order is None:
                return cls.from_hf_file(path), None
            return cls._from_hf_backend(hf.Tokenizer.from_str(json.dumps(data)), path), order
        return cls._from_hf_backend(hf.Tokenizer.from_file(str(path)), path)

    @classmethod
    def _from_hf_backend(cls, backend: hf.Tokenizer, path) -> Tokenizer:
        kind = {"WordPiece": "wordpiece", "BPE": "bpe", "WordLevel": "word"}.get(
            type(backend.model).__name__
        )
        if kind is None:
            raise ValueError(
                f"{path}: a {type(backend.model).__name__} tokenizer; seqlab reads WordPiece, BPE "
                f"and WordLevel ones"
            )
        backend.post_processor = None  # seqlab adds its own special tokens where it wants them
        backend.no_padding()
        backend.no_truncation()
        return cls(backend, kind=kind, lowercase=False)

    def save(self, path: str | Path) -> Path:
        """Write one JSON file; a directory means ``<dir>/tokenizer.json``. Returns the file."""
        path = _resolve_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a file written by :meth:`save` (or ``<dir>/tokenizer.json``)."""
        path = _resolve_path(path)
        if not path.exists():
            raise DataError(f"{path}: tokenizer file does not exist; save one with Tokenizer.save")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(f"{path}: not a seqlab tokenizer (invalid JSON: {error})") from None
        return cls.from_dict(data, source=str(path))


def _specials_first(data: dict) -> list[int] | None:
    """Renumber a WordPiece ``tokenizer.json`` (in place) so its five special tokens take ids
    0..4 in seqlab's order; the new-to-old id order, or None when they are there already."""
    model = data.get("model") or {}
    vocab = model.get("vocab")
    if model.get("type") != "WordPiece" or not isinstance(vocab, dict):
        return None
    specials = []
    for names in zip(SPECIAL_TOKENS, BERT_SPECIAL_TOKENS):
        found = [name for name in names if name in vocab]
        if not found:
            return None
        specials.append(found[0])
    if [vocab[name] for name in specials] == list(range(len(specials))):
        return None
    by_id = sorted(vocab, key=vocab.get)
    rest = [token for token in by_id if token not in specials]
    order = [vocab[token] for token in specials + rest]
    model["vocab"] = {token: new for new, token in enumerate(specials + rest)}
    for added in data.get("added_tokens") or []:
        if added.get("content") in model["vocab"]:
            added["id"] = model["vocab"][added["content"]]
    data["post_processor"] = None  # its special ids are the old ones; seqlab adds its own
    return order


class LabelVocab:
    """Class labels or tags <-> ids, sorted so the same label set always gives the same ids.

    Args:
        labels: any iterable of label strings (repeats are fine).
    """

    def __init__(self, labels: Iterable[str]) -> None:
        self.labels: list[str] = sorted({str(label) for label in labels})
        if not self.labels:
            raise ValueError("LabelVocab needs at least one label, got none")
        self._ids = {label: index for index, label in enumerate(self.labels)}

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: str) -> bool:
        return label in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelVocab) and self.labels == other.labels

    def __repr__(self) -> str:
        return f"LabelVocab({self.labels!r})"

    def encode(self, label: str) -> int:
        try:
            return self._ids[label]
        except KeyError:
            shown = self.labels if len(self.labels) <= 20 else self.labels[:20] + ["..."]
            raise ValueError(f"unknown label {label!r}; known labels: {shown}") from None

    def decode(self, index: int) -> str:
        index = int(index)
        if not 0 <= index < len(self.labels):
            raise ValueError(f"label id {index} out of range [0, {len(self.labels)})")
        return self.labels[index]

    def to_dict(self) -> dict:
        return {"format": "seqlab.labels", "labels": list(self.labels)}

    @classmethod
    def from_dict(cls, data: dict) -> LabelVocab:
        labels = data.get("labels") if isinstance(data, dict) else None
        if not isinstance(labels, list):
            raise TypeError(f'expected a dict with a "labels" list, got {data!r:.80}')
        return cls(labels)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> LabelVocab:
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: label file does not exist")
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError, ValueError) as error:
            raise DataError(f"{path}: not a seqlab label file ({error})") from None
