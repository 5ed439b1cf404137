"""Fill in the blank (many-to-many read at one step): the answer depends on words after the blank.

Data from :func:`seqlab.data.tasks.fill_in_the_blank`: sentences such as
``"my sister took my ___ to the vet because it was purring"`` -> ``cat``, where everything left of
the blank is drawn independently of the answer. The model is a per-step tagger (embedding,
recurrent layer, linear head) whose prediction is read at the blank's position only: targets are
the answer there and -100 (ignored) everywhere else, so the loss is the cross-entropy at the blank.

A left-to-right network has seen nothing but the left context when it reaches the blank, so it
stays at chance (accuracy 1/4, loss log 4 ≈ 1.386). A bidirectional one (Schuster & Paliwal 1997)
also reads the sentence backwards, from the cue ("purring") to the blank, and can answer; its
two directions are merged by ``model.merge_mode`` (concat / sum / mean / max).

Shapes: inputs (N, L) word ids, right-padded; targets (N, L) with one answer id per row;
lengths (N,).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from pydantic import Field

from seqlab.schema import StrictModel
from seqlab.tasks import register_task
from seqlab.tasks.base import RecurrentModelConfig, TensorTask

__all__ = ["BLANK", "FillBlankTask"]

BLANK = "___"
IGNORE = -100  # torch's cross-entropy ignore_index: no loss at the other steps


class FillBlankData(StrictModel):
    train_size: int = Field(4000, ge=1)
    valid_size: int = Field(500, ge=1)
    test_size: int = Field(500, ge=1)


class FillBlankModel(RecurrentModelConfig):
    embedding_dim: int = Field(32, ge=1)


@register_task
class FillBlankTask(TensorTask):
    name = "fill_blank"
    summary = "name the word in the blank; only the words after it tell (bidirectional RNNs)"
    DataConfig = FillBlankData
    ModelConfig = FillBlankModel
    metric = "accuracy"
    mode = "max"

    tokenizer = None
    labels = None

    def prepare(self, fit_vocab: bool = True) -> None:
        from seqlab.data.tasks import fill_in_the_blank
        from seqlab.data.tokenizers import LabelVocab, Tokenizer

        d = self.data
        sizes = {"train": d.train_size, "valid": d.valid_size, "test": d.test_size}
        # Disjoint seeds per split: the three sets are independent draws.
        pairs = {split: fill_in_the_blank(size, seed=self.seed * 3 + i)
                 for i, (split, size) in enumerate(sizes.items())}
        if fit_vocab:
            self.tokenizer = self.fit_tokenizer(
                lambda: Tokenizer.from_words(text.split() for text, _ in pairs["train"])
            )
            self.labels = LabelVocab(label for _, label in pairs["train"])
        self.tensors = {split: self._encode(items) for split, items in pairs.items()}

    def _encode(self, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from seqlab.data.batching import pad_sequences

        ids, positions = [], []
        for text, _ in pairs:
            words = text.split()
            ids.append(self.tokenizer.encode_words(words))
            positions.append(words.index(BLANK))
        inputs, lengths = pad_sequences(ids, pad_value=self.tokenizer.pad_id)  # (N, L), (N,)
        targets = torch.full_like(inputs, IGNORE)  # (N, L)
        rows = torch.arange(len(pairs))
        targets[rows, torch.tensor(positions)] = torch.tensor([self.labels.encode(label) for _, label in pairs])
        return inputs, targets, lengths

    def save_artifacts(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir / "tokenizer.json")
        self.labels.save(run_dir / "labels.json")

    def load_artifacts(self, run_dir: Path) -> None:
        from seqlab.data.tokenizers import LabelVocab, Tokenizer

        self.tokenizer = Tokenizer.load(run_dir / "tokenizer.json")
        self.labels = LabelVocab.load(run_dir / "labels.json")

    def build_model(self) -> torch.nn.Module:
        from seqlab.models import SequenceTagger

        m = self.model_config
        return SequenceTagger(num_tags=len(self.labels), vocab_size=self.tokenizer.vocab_size,
                              embedding_dim=m.embedding_dim, padding_idx=self.tokenizer.pad_id,
                              bidirectional=m.bidirectional, merge_mode=m.merge_mode,
                              **m.cell_options())

    def batch_metrics(self, model, batch):
        out = model(batch["inputs"], lengths=batch["lengths"], targets=batch["targets"])
        at_blank = batch["targets"] != IGNORE  # (N, L), one True per row
        predicted = out.logits[at_blank].argmax(-1)  # (N,)
        n = batch["inputs"].size(0)
        return {"loss": float(out.loss) * n,
                "accuracy": float((predicted == batch["targets"][at_blank]).sum())}

    def predict(self, model, inputs, device):
        """Each input: a sentence with ``___`` once; the output is the predicted word."""
        from seqlab.data.readers import DataError

        lines = []
        for text in inputs:
            words = text.split()
            if words.count(BLANK) != 1:
                raise DataError(f"predict input {text!r}: write the sentence with {BLANK} exactly once")
            x = torch.tensor([self.tokenizer.encode_words(words)], device=device)  # (1, L)
            logits = model(x).logits[0, words.index(BLANK)]  # (C,)
            lines.append(self.labels.decode(int(logits.argmax())))
        return lines

    def report(self, model, device):
        classes = len(self.labels)
        line = (f"chance: accuracy {1 / classes:.3f}, loss {math.log(classes):.3f} "
                "(what a left-to-right model can do at the blank)")
        return [line]
