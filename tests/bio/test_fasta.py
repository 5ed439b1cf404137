"""FASTA reading on edge cases, labels from headers and TSV files, and the motif task's
Bayes posterior against the likelihood ratio written out by hand."""

import gzip

import numpy as np
import pytest

from seqlab.data.fasta import (
    FastaRecord,
    normalize_sequence,
    read_fasta,
    read_labelled_fasta,
    write_fasta,
)
from seqlab.data.motifs import TATA_PWM, motif_posterior, motif_sequences
from seqlab.data.readers import DataError


def test_multiline_records_blank_lines_lowercase_stop_and_crlf(tmp_path):
    path = tmp_path / "x.fa"
    text = ">s1 label=yes source=test\r\nacgt\r\nAC GT\r\n\r\n>s2  label=no\r\nTTTT\r\n\r\n"
    path.write_bytes(text.encode())
    records = read_fasta(path, "dna")
    assert [(r.id, r.description, r.sequence) for r in records] == [
        ("s1", "label=yes source=test", "ACGTACGT"), ("s2", "label=no", "TTTT")]
    protein = tmp_path / "p.fa"
    protein.write_text(">p1\nmkv*\n>p2\nMBZ\n")
    assert [r.sequence for r in read_fasta(protein, "protein")] == ["MKV", "MXX"]  # stop dropped, B/Z → X


def test_gzip_and_round_trip(tmp_path):
    records = [FastaRecord("a", "label=1", "ACGT" * 20), FastaRecord("b", "", "GG")]
    plain = write_fasta(tmp_path / "r.fa", records, width=7)
    assert plain.read_text().splitlines()[1] == "ACGTACG"
    packed = tmp_path / "r.fa.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert [(r.id, r.sequence) for r in read_fasta(packed)] == [("a", "ACGT" * 20), ("b", "GG")]


def test_iupac_codes_and_rna():
    assert normalize_sequence("acgu rykn", "dna") == "ACGTNNNN"
    with pytest.raises(ValueError, match=r"'-' at position 3 is not a dna letter.*alignment gaps"):
        normalize_sequence("AC-GT", "dna")
    with pytest.raises(ValueError, match="'1' at position 2 is not a protein letter"):
        normalize_sequence("M1", "protein")


def test_empty_record_is_an_error(tmp_path):
    path = tmp_path / "e.fa"
    path.write_text(">s1\nACGT\n>s2 label=x\n\n>s3\nGG\n")
    with pytest.raises(DataError, match=r"line 3: record 's2' has no sequence"):
        read_fasta(path)
    path.write_text(">s1\n*\n")
    with pytest.raises(DataError, match="empty once the stop"):
        read_fasta(path)


def test_not_fasta_is_an_error(tmp_path):
    path = tmp_path / "n.fa"
    path.write_text("id,sequence\ns1,ACGT\n")
    with pytest.raises(DataError, match=r"line 1: not a FASTA file.*'id,sequence'"):
        read_fasta(path)
    path.write_text("\n\n")
    with pytest.raises(DataError, match="no FASTA records"):
        read_fasta(path)
    path.write_text(">s1\nACGZ\n")
    with pytest.raises(DataError, match=r"record 's1' \(line 1\): 'Z' at position 4"):
        read_fasta(path, "dna")


def test_labels_from_header_or_tsv(tmp_path):
    fasta = tmp_path / "l.fa"
    fasta.write_text(">a kind=x|label=pos\nACGT\n>b label=neg;other=1\nGGGG\n")
    assert read_labelled_fasta(fasta, "dna") == [("ACGT", "pos"), ("GGGG", "neg")]
    table = tmp_path / "labels.tsv"
    table.write_text("id\tlabel\nb\tB\na\tA\n")
    assert read_labelled_fasta(fasta, "dna", labels=table) == [("ACGT", "A"), ("GGGG", "B")]
    table.write_text("a\tA\n")
    with pytest.raises(DataError, match="no label for 1 record.*'b'"):
        read_labelled_fasta(fasta, "dna", labels=table)
    with pytest.raises(DataError, match=r"record 'b' has no 'kind=\.\.\.'"):
        read_labelled_fasta(fasta, "dna", label_key="kind")


def test_motif_posterior_is_the_likelihood_ratio():
    # A sequence exactly one motif long has one position: r = Π_j M[j, x_j] / (1/4).
    sequence = "TATAAAAG"
    columns = ["ACGT".index(c) for c in sequence]
    ratio = np.prod([TATA_PWM[j, c] / 0.25 for j, c in enumerate(columns)])
    assert motif_posterior([sequence])[0] == pytest.approx(ratio / (1 + ratio))
    # Two positions: the ratio is the mean over positions.
    sequence = "CTATAAAAG"
    per_position = [np.prod([TATA_PWM[j, "ACGT".index(c)] / 0.25 for j, c in enumerate(sequence[p:p + 8])])
                    for p in (0, 1)]
    ratio = np.mean(per_position)
    assert motif_posterior([sequence])[0] == pytest.approx(ratio / (1 + ratio))


def test_motif_sequences_are_seeded_and_balanced():
    rows = motif_sequences(200, length=30, seed=3)
    assert rows == motif_sequences(200, length=30, seed=3)
    assert sum(label == "motif" for _, label in rows) == 100
    assert all(len(s) == 30 and set(s) <= set("ACGT") for s, _ in rows)
    posterior = motif_posterior([s for s, _ in rows])
    truth = np.array([label == "motif" for _, label in rows])
    assert ((posterior > 0.5) == truth).mean() > 0.8  # the motif is visible in most sequences
