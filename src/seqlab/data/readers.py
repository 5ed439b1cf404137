"""Readers for the files users bring: plain text, labelled text, CoNLL, series, parallel text.

=================  ==========================================  =============================
task               formats                                     reader
=================  ==========================================  =============================
language model     plain UTF-8 text                            :func:`read_text`
classification     CSV / TSV (header row) or JSONL             :func:`read_labelled`
tagging            CoNLL: ``token ... tag`` per line, blank    :func:`read_conll`
                   line between sentences
forecasting        CSV with a header, one row per time step    :func:`read_series`
translation        TSV ``source<TAB>target``, JSONL, or two    :func:`read_parallel`
                   aligned files
=================  ==========================================  =============================

Any of them may be gzip-compressed (``train.csv.gz``): the ``.gz`` suffix decides. Every problem
in a user's file raises :class:`DataError` naming the file, the line where it makes sense, what is
wrong and how to fix it. Line numbers count from 1, header included.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import torch

__all__ = [
    "DataError",
    "iter_labelled",
    "iter_parallel",
    "numbered_lines",
    "open_text",
    "read_conll",
    "read_labelled",
    "read_parallel",
    "read_sentences",
    "read_series",
    "read_text",
]

LABELLED_FORMATS = (".csv", ".tsv", ".jsonl", ".json")
PARALLEL_FORMATS = (".tsv", ".jsonl", ".json")


class DataError(ValueError):
    """A problem in a user's data file: the message names the file, line and fix."""


def _where(path: Path | str, line: int | None = None) -> str:
    return f"{path}, line {line}" if line is not None else str(path)


def _format_of(path: Path) -> str:
    """The data suffix under an optional ``.gz``: ``x.csv.gz`` -> ``.csv``."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path} does not exist; check the path (relative to {Path.cwd()})")
    if path.is_dir():
        raise DataError(f"{path} is a directory; give the path of a file inside it")


def open_text(path: str | Path, newline: str | None = None) -> IO[str]:
    """Open a UTF-8 text file for reading; a ``.gz`` suffix means gzip, read transparently.

    A leading byte-order mark (as spreadsheet programs write) is dropped.
    """
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline=newline)
    return open(path, encoding="utf-8-sig", newline=newline)


def numbered_lines(path: Path, newline: str | None = None) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) for each line, with decoding errors as DataError."""
    number = 0
    try:
        with open_text(path, newline=newline) as handle:
            for number, line in enumerate(handle, start=1):
                yield number, line.rstrip("\r\n")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{_where(path, number + 1)}: not UTF-8 text ({error.reason}); re-save the file "
            "as UTF-8"
        ) from None
    except (gzip.BadGzipFile, EOFError) as error:
        raise DataError(f"{path}: not a readable gzip file ({error})") from None


def read_text(path: str | Path) -> str:
    """The whole file as one string (for language modelling); an empty file is an error."""
    path = Path(path)
    try:
        with open_text(path) as handle:
            text = handle.read()
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason}); re-save it as UTF-8") from None
    except (gzip.BadGzipFile, EOFError) as error:
        raise DataError(f"{path}: not a readable gzip file ({error})") from None
    if not text.strip():
        raise DataError(f"{path} is empty; a language-model corpus needs some text")
    return text


def _table_rows(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for each non-blank CSV / TSV record, header first."""
    # TSV files rarely quote, and a stray quote must not swallow the following lines.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    format_name = "TSV" if delimiter == "\t" else "CSV"
    try:
        with open_text(path, newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter, quoting=quoting, strict=True)
            try:
                for fields in reader:
                    if fields and any(field.strip() for field in fields):
                        yield reader.line_num, fields
            except csv.Error as error:
                raise DataError(
                    f"{_where(path, reader.line_num)}: malformed {format_name} ({error}); "
                    "check the quoting on this line"
                ) from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason}); re-save it as UTF-8") from None
    except (gzip.BadGzipFile, EOFError) as error:
        raise DataError(f"{path}: not a readable gzip file ({error})") from None


def _header_index(
    path: Path, header: list[str], wanted: list[str], role: str = "column"
) -> list[int]:
    names = [name.strip() for name in header]
    missing = [name for name in wanted if name not in names]
    if missing:
        raise DataError(
            f"{_where(path, 1)}: no {role} {missing[0]!r} in the header; available columns: "
            f"{names}. Rename the column or pass its name (data.text_column=... / "
            "data.label_column=... in a seqlab config)"
        )
    return [names.index(name) for name in wanted]


def _iter_labelled_table(
    path: Path, delimiter: str, text_column: str, label_column: str
) -> Iterator[tuple[str, str]]:
    rows = _table_rows(path, delimiter)
    first = next(rows, None)
    if first is None:
        raise DataError(
            f"{path} is empty; expected a header row naming the columns "
            f"({text_column!r}, {label_column!r}) and one example per line"
        )
    _, header = first
    text_index, label_index = _header_index(path, header, [text_column, label_column])
    for line, fields in rows:
        if len(fields) != len(header):
            raise DataError(
                f"{_where(path, line)}: {len(fields)} fields, but the header has {len(header)} "
                f"({[name.strip() for name in header]}); quote fields that contain the delimiter"
            )
        yield _checked_example(path, line, fields[text_index], fields[label_index])


def _checked_example(path: Path, line: int, text: object, label: object) -> tuple[str, str]:
    if not isinstance(text, str):
        raise DataError(f"{_where(path, line)}: text must be a string, got {text!r:.60}")
    if not text.strip():
        raise DataError(f"{_where(path, line)}: empty text; remove the line or fill it in")
    if label is None or isinstance(label, (dict, list)) or not str(label).strip():
        raise DataError(f"{_where(path, line)}: empty or invalid label {label!r:.60}")
    return text, str(label).strip()


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank JSON line."""
    for line, raw in numbered_lines(path):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{_where(path, line)}: malformed JSON ({error.msg} at column {error.colno}); "
                "each line must be one JSON object"
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"{_where(path, line)}: expected a JSON object per line, got "
                f"{type(record).__name__}"
            )
        yield line, record


def _field(path: Path, line: int, record: dict, key: str, role: str) -> object:
    if key not in record:
        raise DataError(
            f"{_where(path, line)}: no {role} key {key!r}; keys on this line: "
            f"{sorted(record)}. Rename the key or pass its name"
        )
    return record[key]


def iter_labelled(
    path: str | Path, text_column: str = "text", label_column: str = "label"
) -> Iterator[tuple[str, str]]:
    """Yield ``(text, label)`` pairs lazily from a CSV / TSV / JSONL file (optionally ``.gz``).

    CSV and TSV need a header row; JSONL holds one object per line. Labels come back as strings
    (``1`` in JSON becomes ``"1"``).
    """
    path = Path(path)
    kind = _format_of(path)
    if kind not in LABELLED_FORMATS:
        raise DataError(
            f"{path}: unknown file type {kind or '(no suffix)'!r}; supported: "
            f"{', '.join(LABELLED_FORMATS)} (each optionally followed by .gz)"
        )
    _check_file(path)
    count = 0
    if kind in (".csv", ".tsv"):
        examples = _iter_labelled_table(
            path, "," if kind == ".csv" else "\t", text_column, label_column
        )
    else:
        examples = (
            _checked_example(
                path,
                line,
                _field(path, line, record, text_column, "text"),
                _field(path, line, record, label_column, "label"),
            )
            for line, record in _json_lines(path)
        )
    for example in examples:
        count += 1
        yield example
    if count == 0:
        raise DataError(f"{path} has no examples; expected one (text, label) example per line")


def read_labelled(
    path: str | Path, text_column: str = "text", label_column: str = "label"
) -> list[tuple[str, str]]:
    """All ``(text, label)`` pairs of a CSV / TSV / JSONL file; see :func:`iter_labelled`."""
    return list(iter_labelled(path, text_column=text_column, label_column=label_column))


def read_sentences(
    path: str | Path, text_column: str = "text", columns: list[str] | None = None
) -> list[str] | list[tuple[str, ...]]:
    """Unlabelled text for pre-training, one example per non-blank line, stripped.

    A plain text file (any other suffix, optionally ``.gz``) gives its lines; a CSV / TSV / JSONL
    file gives the ``text_column`` of each row (the labels of a labelled set are ignored). With
    ``columns`` (two or more names), each example is the tuple of those columns' texts: the
    sentence pairs of supervised contrastive learning.
    """
    path = Path(path)
    _check_file(path)
    kind = _format_of(path)
    wanted = list(columns) if columns else [text_column]
    if kind not in LABELLED_FORMATS:
        if columns:
            raise DataError(
                f"{path}: data.pair_columns={columns} needs a CSV / TSV (with a header row) or "
                f"JSONL file; this one is plain text ({kind or 'no suffix'})"
            )
        try:
            examples = [raw.strip() for _, raw in numbered_lines(path) if raw.strip()]
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not UTF-8 text ({error.reason}); re-save it as UTF-8") from None
    elif kind in (".csv", ".tsv"):
        rows = _table_rows(path, "," if kind == ".csv" else "\t")
        first = next(rows, None)
        if first is None:
            raise DataError(f"{path} is empty; expected a header row naming the columns {wanted}")
        _, header = first
        indices = _header_index(path, header, wanted)
        examples = []
        for line, fields in rows:
            if len(fields) != len(header):
                raise DataError(
                    f"{_where(path, line)}: {len(fields)} fields, but the header has "
                    f"{len(header)}; quote fields that contain the delimiter"
                )
            examples.append(tuple(_nonempty(path, line, fields[i], "text") for i in indices))
    else:
        examples = [
            tuple(
                _nonempty(path, line, _field(path, line, record, key, "text"), "text")
                for key in wanted
            )
            for line, record in _json_lines(path)
        ]
    if kind in LABELLED_FORMATS and not columns:
        examples = [example[0] for example in examples]
    if not examples:
        raise DataError(f"{path} has no text; expected one example per line")
    return examples


def read_conll(
    path: str | Path,
    token_column: int = 0,
    tag_column: int = -1,
    comment_prefix: str | None = None,
) -> list[tuple[list[str], list[str]]]:
    """Sentences of a CoNLL-style file as ``(tokens, tags)`` pairs.

    One token per line, columns separated by spaces or tabs, a blank line between sentences;
    ``-DOCSTART-`` lines (CoNLL-2003 document breaks) are skipped, and so are lines starting
    with ``comment_prefix`` when one is given (``"#"`` for CoNLL-U).
    """
    path = Path(path)
    needed = max(
        [2] + [index + 1 if index >= 0 else -index for index in (token_column, tag_column)]
    )
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    for line, raw in numbered_lines(path):
        fields = raw.split()
        if not fields:
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        if fields[0] == "-DOCSTART-":
            continue
        if comment_prefix is not None and raw.startswith(comment_prefix):
            continue
        if len(fields) < needed:
            raise DataError(
                f"{_where(path, line)}: {len(fields)} column(s) {fields!r:.60}, need at least "
                f"{needed} (token_column={token_column}, tag_column={tag_column}); write "
                "'token tag' on each line and a blank line between sentences"
            )
        tokens.append(fields[token_column])
        tags.append(fields[tag_column])
    if tokens:
        sentences.append((tokens, tags))
    if not sentences:
        raise DataError(f"{path} has no sentences; expected 'token tag' lines")
    return sentences


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def read_series(
    path: str | Path, columns: list[str] | None = None
) -> tuple[torch.Tensor, list[str]]:
    """A time series from a CSV (or TSV) file with a header: one row per time step.

    Args:
        path: the file (``.csv``, ``.tsv``, optionally ``.gz``).
        columns: names of the columns to read; ``None`` reads every column whose first value is
            a number (so date or name columns are left out).

    Returns:
        ``(values, names)``: a float32 tensor of shape ``(T, F)`` and the ``F`` column names.
    """
    path = Path(path)
    delimiter = "\t" if _format_of(path) == ".tsv" else ","
    rows = _table_rows(path, delimiter)
    first = next(rows, None)
    if first is None:
        raise DataError(f"{path} is empty; expected a header row and one row per time step")
    header = [name.strip() for name in first[1]]
    records = list(rows)
    if not records:
        raise DataError(f"{path} has a header but no rows; add one row per time step")
    if columns is None:
        indices = [i for i, value in enumerate(records[0][1]) if _is_number(value)]
        if not indices:
            raise DataError(
                f"{_where(path, records[0][0])}: no numeric column in the first row; "
                f"columns: {header}"
            )
    else:
        indices = _header_index(path, header, list(columns))
    names = [header[i] for i in indices]
    values = torch.empty(len(records), len(indices), dtype=torch.float32)
    for row, (line, fields) in enumerate(records):
        if len(fields) != len(header):
            raise DataError(
                f"{_where(path, line)}: {len(fields)} fields, but the header has {len(header)}"
            )
        for column, index in enumerate(indices):
            try:
                values[row, column] = float(fields[index])
            except ValueError:
                raise DataError(
                    f"{_where(path, line)}, column {header[index]!r}: {fields[index]!r} is not "
                    "a number; fix the value or leave the column out with columns=[...]"
                ) from None
    return values, names


def _nonempty(path: Path, line: int, value: object, role: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(
            f"{_where(path, line)}: empty or missing {role} text {value!r:.60}; remove the "
            "pair or fill it in"
        )
    return value.strip()


def iter_parallel(
    source: str | Path,
    target: str | Path | None = None,
    source_key: str = "source",
    target_key: str = "target",
) -> Iterator[tuple[str, str]]:
    """Yield ``(source, target)`` sentence pairs lazily; see :func:`read_parallel`."""
    source = Path(source)
    if target is not None:
        yield from _iter_aligned(source, Path(target))
        return
    kind = _format_of(source)
    if kind == ".tsv":
        for line, raw in numbered_lines(source):
            if not raw.strip():
                continue
            fields = raw.split("\t")
            if len(fields) != 2:
                raise DataError(
                    f"{_where(source, line)}: {len(fields)} tab-separated fields, expected 2 "
                    "(source<TAB>target)"
                )
            yield (
                _nonempty(source, line, fields[0], "source"),
                _nonempty(source, line, fields[1], "target"),
            )
    elif kind in (".jsonl", ".json"):
        for line, record in _json_lines(source):
            yield (
                _nonempty(
                    source, line, _field(source, line, record, source_key, "source"), "source"
                ),
                _nonempty(
                    source, line, _field(source, line, record, target_key, "target"), "target"
                ),
            )
    else:
        raise DataError(
            f"{source}: unknown parallel file type {kind or '(no suffix)'!r}; give one "
            f"{' or '.join(PARALLEL_FORMATS)} file (optionally .gz), or two aligned files "
            "(source, target)"
        )


def _iter_aligned(source: Path, target: Path) -> Iterator[tuple[str, str]]:
    source_lines = [raw for _, raw in numbered_lines(source)]
    target_lines = [raw for _, raw in numbered_lines(target)]
    if len(source_lines) != len(target_lines):
        raise DataError(
            f"misaligned parallel files: {source} has {len(source_lines)} lines but {target} has "
            f"{len(target_lines)}; line i of one must translate line i of the other"
        )
    if not source_lines:
        raise DataError(f"{source} is empty; expected one sentence per line")
    for line, (source_text, target_text) in enumerate(zip(source_lines, target_lines), start=1):
        yield (
            _nonempty(source, line, source_text, "source"),
            _nonempty(target, line, target_text, "target"),
        )


def read_parallel(
    source: str | Path,
    target: str | Path | None = None,
    source_key: str = "source",
    target_key: str = "target",
) -> list[tuple[str, str]]:
    """Sentence pairs for translation-like tasks, whitespace stripped at both ends.

    * one ``.tsv`` file: ``source<TAB>target`` per line;
    * one ``.jsonl`` file: ``{"source": ..., "target": ...}`` per line (keys configurable);
    * two files (``source``, ``target``; plain or ``.gz``): line i of one pairs with line i of
      the other. Different line counts are an error naming both counts.

    An empty source or target is an error naming its line.
    """
    pairs = list(iter_parallel(source, target, source_key=source_key, target_key=target_key))
    if not pairs:
        raise DataError(f"{source} has no sentence pairs")
    return pairs
