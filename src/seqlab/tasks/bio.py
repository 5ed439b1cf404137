"""Biological sequence classification: DNA or protein sequences from FASTA, one label each.

Data: FASTA files (`data.train`, optional `data.valid` / `data.test`) with the label in each
header (`>id label=...`, key `data.label_key`) or in a TSV of `id<TAB>label` rows
(`data.labels`), read by :mod:`seqlab.data.fasta`. Without `data.train`, a seeded generated
task runs out of the box: DNA sequences that do or do not hold a TATA-box-like motif
(:mod:`seqlab.data.motifs`, Bayes-optimal accuracy about 90 % at the default length of 64).

Tokens are single letters of a fixed alphabet (`data.alphabet`): A C G T N for DNA, the 20
amino acids and X for proteins; IUPAC ambiguity codes map to N / X. With `data.kmer=k` > 1 the
tokens are the overlapping k-mers instead (DNABERT, Ji et al. 2021: ACGTA → ACG CGT GTA for
k = 3), so one token already holds a short word and a motif is a conjunction of a few tokens;
a k-mer holding N / X is unknown. The model and metrics are
those of `classify` (a recurrent encoder, pooled) and `classify-transformer` (a Transformer
encoder, pooled): loss and accuracy. `seqlab predict RUN ACGT...` prints the label and its
probability.
"""

from __future__ import annotations

from itertools import product
from typing import Literal

from pydantic import Field

from seqlab.schema import StrictModel
from seqlab.tasks import register_task
from seqlab.tasks.base import split_off
from seqlab.tasks.classify import ClassifyModel, ClassifyTask
from seqlab.tasks.transformer import EncoderClassifierModel, TransformerClassifyTask

__all__ = ["SequenceClassifyTask", "TransformerSequenceClassifyTask"]


class SequenceData(StrictModel):
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    labels: str | None = None
    label_key: str = "label"
    alphabet: Literal["dna", "protein"] = "dna"
    # Tokens: single letters (1), or overlapping k-mers as DNABERT's (Ji et al. 2021).
    kmer: int = Field(1, ge=1, le=6)
    max_length: int | None = Field(512, ge=1)
    valid_fraction: float = Field(0.1, gt=0, lt=1)
    # The generated motif task (when data.train is not given).
    sequence_length: int = Field(64, ge=8)
    train_size: int = Field(4000, ge=2)
    valid_size: int = Field(500, ge=1)
    test_size: int = Field(1000, ge=0)


@register_task
class SequenceClassifyTask(ClassifyTask):
    name = "seq-classify"
    summary = "DNA / protein sequence classification from FASTA (default: a generated motif task)"
    DataConfig = SequenceData
    ModelConfig = ClassifyModel

    def _tokens(self, sequence: str) -> str:
        """The sequence as the tokenizer's text: itself (letters), or its k-mers joined by spaces."""
        k = self.data.kmer
        if k == 1 or len(sequence) < k:
            return sequence
        return " ".join(sequence[i:i + k] for i in range(len(sequence) - k + 1))

    def _read(self, path: str) -> list[tuple[str, str]]:
        from seqlab.data.fasta import read_labelled_fasta

        d = self.data
        return read_labelled_fasta(path, d.alphabet, labels=d.labels, label_key=d.label_key)

    def _rows(self) -> dict[str, list[tuple[str, str]]]:
        from seqlab.data.motifs import motif_sequences

        d = self.data
        if d.train is None:
            if d.alphabet != "dna":
                from seqlab.schema import ConfigError

                raise ConfigError("the generated motif task is DNA: set data.alphabet=dna, or give "
                                  "protein FASTA files with data.train=PATH")
            # One draw split three ways, so the splits never share a seed's stream.
            size = d.train_size + d.valid_size + d.test_size
            rows = motif_sequences(size, d.sequence_length, seed=self.seed)
            splits = {"train": rows[:d.train_size], "valid": rows[d.train_size:d.train_size + d.valid_size]}
            if d.test_size:
                splits["test"] = rows[d.train_size + d.valid_size:]
            return splits
        train = self._read(d.train)
        if d.valid:
            splits = {"train": train, "valid": self._read(d.valid)}
        else:
            splits = dict(zip(("train", "valid"), split_off(train, d.valid_fraction, self.seed)))
        if d.test:
            splits["test"] = self._read(d.test)
        return splits

    def prepare(self, fit_vocab: bool = True) -> None:
        from seqlab.data.fasta import ALPHABETS
        from seqlab.data.tokenizers import LabelVocab, Tokenizer

        rows = {split: [(self._tokens(s), label) for s, label in items] for split, items in self._rows().items()}
        if fit_vocab:
            # A fixed alphabet rather than the letters the training set happens to use, so an
            # unseen but valid letter (N, X) has its own id.
            alphabet = ALPHABETS[self.data.alphabet]
            if self.data.kmer == 1:
                self.tokenizer = self.fit_tokenizer(lambda: Tokenizer.train([alphabet], kind="char"))
            else:
                words = [" ".join("".join(letters) for letters in product(alphabet[:-1], repeat=self.data.kmer))]
                self.tokenizer = self.fit_tokenizer(lambda: Tokenizer.train(words, kind="word"))
            self.labels = LabelVocab(label for _, label in rows["train"])
        self.examples = {split: self._encode(split, items) for split, items in rows.items()}

    def predict(self, model, inputs, device):
        """Each input: a sequence (letters of data.alphabet, any case); prints label and probability."""
        from seqlab.data.fasta import normalize_sequence
        from seqlab.data.readers import DataError

        try:
            sequences = [self._tokens(normalize_sequence(text, self.data.alphabet, f"predict input {text[:30]!r}"))
                         for text in inputs]
        except ValueError as error:
            raise DataError(str(error)) from None
        return super().predict(model, sequences, device)


@register_task
class TransformerSequenceClassifyTask(SequenceClassifyTask, TransformerClassifyTask):
    name = "seq-classify-transformer"
    summary = "DNA / protein sequence classification with a Transformer encoder"
    ModelConfig = EncoderClassifierModel
