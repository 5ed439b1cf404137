"""FASTA files: DNA or protein sequences, with class labels from the header or a TSV.

A record is a header line ``>id description`` followed by sequence lines (any number of them,
of any width) up to the next header::

    >seq1 label=promoter organism=E.coli
    TTGACAATTAATCATCGGCTCGTATAATGTGTGGA
    ATTGTGAGC
    >seq2 label=other
    ...

The reader accepts blank lines, lowercase letters (read as uppercase), a final ``*`` (a stop
codon in translated proteins, dropped), Windows line endings and gzip; it refuses a record with
no sequence, a file whose first non-blank line is not a header, and letters outside the
alphabet, each with a :class:`~seqlab.data.readers.DataError` naming the file, the line and the
fix. IUPAC ambiguity codes become ``N`` (DNA: R Y S W K M B D H V, and U → T for RNA) or ``X``
(protein: B Z J U O). Labels come from a ``key=value`` word of the description (``label=`` by
default) or from a TSV file of ``id<TAB>label`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ALPHABETS",
    "FastaRecord",
    "fasta_labels",
    "normalize_sequence",
    "read_fasta",
    "read_labelled_fasta",
    "write_fasta",
]

# The letters a model sees for each alphabet; anything else is mapped by _AMBIGUOUS or refused.
ALPHABETS = {"dna": "ACGTN", "protein": "ACDEFGHIKLMNPQRSTVWYX"}
_AMBIGUOUS = {
    "dna": {**dict.fromkeys("RYSWKMBDHV", "N"), "U": "T"},
    "protein": dict.fromkeys("BZJUO", "X"),
}


@dataclass
class FastaRecord:
    """One record: the id (the header's first word), the rest of the header, the sequence."""

    id: str
    description: str
    sequence: str
    line: int = 0  # where the header is, for error messages


def normalize_sequence(sequence: str, alphabet: str, where: str = "sequence") -> str:
    """Uppercase, IUPAC ambiguity codes to N / X, a final ``*`` dropped; ValueError naming the
    first letter outside ``ALPHABETS[alphabet]``."""
    if alphabet not in ALPHABETS:
        raise ValueError(f"alphabet should be one of {', '.join(ALPHABETS)}, got {alphabet!r}")
    sequence = "".join(sequence.split()).upper().removesuffix("*")
    allowed, mapping = ALPHABETS[alphabet], _AMBIGUOUS[alphabet]
    letters = []
    for position, letter in enumerate(sequence, start=1):
        if letter in allowed:
            letters.append(letter)
        elif letter in mapping:
            letters.append(mapping[letter])
        else:
            hint = " (alignment gaps: remove '-' and '.' first)" if letter in "-." else ""
            raise ValueError(
                f"{where}: {letter!r} at position {position} is not a {alphabet} letter "
                f"({allowed} and IUPAC codes {''.join(sorted(mapping))}){hint}"
            )
    return "".join(letters)


def read_fasta(path: str | Path, alphabet: str | None = None) -> list[FastaRecord]:
    """The records of a FASTA file (``.gz`` read as-is), in file order.

    With ``alphabet`` ("dna" or "protein") each sequence is normalised and checked by
    :func:`normalize_sequence`; without, it is only uppercased with whitespace and a final
    ``*`` removed.
    """
    from seqlab.data.readers import DataError, numbered_lines

    path = Path(path)
    records: list[FastaRecord] = []
    parts: list[str] = []

    def close(record: FastaRecord | None) -> None:
        if record is None:
            return
        if not parts:
            raise DataError(
                f"{path}, line {record.line}: record {record.id!r} has no sequence; "
                "remove the header or add the sequence lines under it"
            )
        sequence = "".join(parts)
        where = f"{path}, record {record.id!r} (line {record.line})"
        if alphabet is not None:
            try:
                sequence = normalize_sequence(sequence, alphabet, where)
            except ValueError as error:
                raise DataError(str(error)) from None
        else:
            sequence = sequence.upper().removesuffix("*")
        if not sequence:
            raise DataError(f"{where}: the sequence is empty once the stop '*' is dropped")
        record.sequence = sequence
        records.append(record)

    current: FastaRecord | None = None
    for number, line in numbered_lines(path):
        line = line.strip()
        if not line:
            continue
        if line.startswith(">"):
            close(current)
            parts = []
            header = line[1:].strip()
            if not header:
                raise DataError(f"{path}, line {number}: a header '>' with no id; write '>id description'")
            identifier, _, description = header.partition(" ")
            current = FastaRecord(identifier, description.strip(), "", number)
        elif current is None:
            raise DataError(
                f"{path}, line {number}: not a FASTA file (expected a '>id description' header "
                f"first, found {line[:40]!r})"
            )
        elif line.startswith(";"):
            continue  # an old-style comment line
        else:
            parts.append("".join(line.split()))
    close(current)
    if not records:
        raise DataError(f"{path} has no FASTA records; expected '>id description' headers with sequence lines")
    return records


def _header_label(record: FastaRecord, key: str) -> str | None:
    for word in record.description.replace(";", " ").replace("|", " ").split():
        name, equals, value = word.partition("=")
        if equals and name == key and value:
            return value
    return None


def fasta_labels(path: str | Path, records: list[FastaRecord], labels: str | Path | None = None,
                 label_key: str = "label") -> list[str]:
    """One label per record: from a TSV of ``id<TAB>label`` rows (a first row ``id<TAB>label``
    is a header) when `labels` is given, else from the header word ``<label_key>=value``."""
    from seqlab.data.readers import DataError, numbered_lines

    if labels is None:
        found = []
        for record in records:
            label = _header_label(record, label_key)
            if label is None:
                raise DataError(
                    f"{path}, line {record.line}: record {record.id!r} has no '{label_key}=...' in its "
                    f"header; add one, or give the labels in a TSV file of id<TAB>label rows"
                )
            found.append(label)
        return found
    table: dict[str, str] = {}
    for number, line in numbered_lines(Path(labels)):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            raise DataError(f"{labels}, line {number}: expected 'id<TAB>label', got {line[:60]!r}")
        identifier, label = fields[0].strip(), fields[1].strip()
        if number == 1 and (identifier, label) == ("id", "label"):
            continue
        table[identifier] = label
    missing = [record.id for record in records if record.id not in table]
    if missing:
        raise DataError(f"{labels} has no label for {len(missing)} record(s) of {path}, e.g. {missing[0]!r}")
    return [table[record.id] for record in records]


def read_labelled_fasta(path: str | Path, alphabet: str, labels: str | Path | None = None,
                        label_key: str = "label") -> list[tuple[str, str]]:
    """(sequence, label) pairs of a FASTA file; see :func:`read_fasta` and :func:`fasta_labels`."""
    from seqlab.data.readers import DataError

    records = read_fasta(path, alphabet)
    seen: dict[str, int] = {}
    for record in records:
        if record.id in seen and labels is not None:
            raise DataError(
                f"{path}, line {record.line}: id {record.id!r} repeats line {seen[record.id]}; "
                "ids must be unique to match the labels file"
            )
        seen[record.id] = record.line
    return list(zip([r.sequence for r in records], fasta_labels(path, records, labels, label_key)))


def write_fasta(path: str | Path, records: list[FastaRecord], width: int = 60) -> Path:
    """Write records as FASTA with sequence lines of `width` letters."""
    path = Path(path)
    lines = []
    for record in records:
        lines.append(f">{record.id} {record.description}".rstrip())
        lines += [record.sequence[i:i + width] for i in range(0, len(record.sequence), width)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
