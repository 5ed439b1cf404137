"""Text classification (many-to-one): a user's CSV / TSV / JSONL of (text, label) rows.

Data path: text -> tokenizer ids -> padded batch (N, L) + lengths -> SequenceClassifier -> (N, C)
logits -> cross-entropy. Metrics: loss, accuracy. Predictions: the label and its probability.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from seqlab.schema import StrictModel
from seqlab.tasks import register_task
from seqlab.tasks.base import (
    RecurrentModelConfig,
    StepOutput,
    Task,
    eval_batches,
    example_batches,
    mean_metrics,
    require_path,
    split_off,
    spread,
    to_device,
)

__all__ = ["ClassifyTask"]


class ClassifyData(StrictModel):
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    max_length: int | None = Field(None, ge=1)
    valid_fraction: float = Field(0.1, gt=0, lt=1)
    tokenizer: Literal["char", "word", "bpe", "wordpiece"] = "word"
    lowercase: bool = True
    min_frequency: int = Field(1, ge=1)
    max_vocab: int | None = Field(20000, ge=1)
    bpe_vocab_size: int = Field(8000, ge=6)


class ClassifyModel(RecurrentModelConfig):
    embedding_dim: int = Field(128, ge=1)
    pooling: Literal["last", "mean", "max"] = "last"


@register_task
class ClassifyTask(Task):
    name = "classify"
    summary = "text classification from CSV / TSV / JSONL"
    DataConfig = ClassifyData
    ModelConfig = ClassifyModel
    metric = "accuracy"
    mode = "max"
    unit = "ex"

    tokenizer = None
    labels = None

    def _read(self, path: str) -> list[tuple[str, str]]:
        from seqlab.data.readers import DataError, read_labelled

        rows = read_labelled(path, text_column=self.data.text_column, label_column=self.data.label_column)
        if not rows:
            raise DataError(f"{path}: no examples in the file")
        return rows

    def prepare(self, fit_vocab: bool = True) -> None:
        from seqlab.data.tokenizers import LabelVocab, Tokenizer

        data = self.data
        rows = {}
        if fit_vocab or self.needs_training_data or not (data.valid and data.test):
            train = self._read(require_path(data.train, "data.train", self.recipe,
                                            "a training file (CSV / TSV / JSONL with text and label columns)"))
            if data.valid:
                rows["train"], rows["valid"] = train, self._read(data.valid)
            else:
                rows["train"], rows["valid"] = split_off(train, data.valid_fraction, self.seed)
        else:
            rows["valid"] = self._read(data.valid)
        if data.test:
            rows["test"] = self._read(data.test)
        if fit_vocab:
            texts = (text for text, _ in rows["train"])
            self.tokenizer = self.fit_tokenizer(lambda: Tokenizer.train(
                texts, kind=data.tokenizer, lowercase=data.lowercase, min_frequency=data.min_frequency,
                max_size=data.max_vocab if data.tokenizer in ("char", "word") else None,
                vocab_size=data.bpe_vocab_size,
            ))
            self.labels = LabelVocab(label for _, label in rows["train"])
        self.examples = {split: self._encode(split, items) for split, items in rows.items()}

    def _encode(self, split: str, rows: list[tuple[str, str]]) -> list[tuple[list[int], int]]:
        from seqlab.data.readers import DataError

        examples = []
        for text, label in rows:
            if label not in self.labels:
                known = [self.labels.decode(i) for i in range(len(self.labels))]
                raise DataError(
                    f"the {split} data has label {label!r}, which the training data does not have "
                    f"(known labels: {', '.join(known)})"
                )
            ids = self.tokenizer.encode(text)[: self.data.max_length] or [self.tokenizer.unk_id]
            examples.append((ids, self.labels.encode(label)))
        return examples

    def splits(self) -> list[str]:
        return [s for s in ("valid", "test") if s in self.examples]

    def save_artifacts(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir / "tokenizer.json")
        self.labels.save(run_dir / "labels.json")

    def load_artifacts(self, run_dir: Path) -> None:
        from seqlab.data.tokenizers import LabelVocab, Tokenizer

        self.tokenizer = Tokenizer.load(run_dir / "tokenizer.json")
        self.labels = LabelVocab.load(run_dir / "labels.json")

    def build_model(self) -> torch.nn.Module:
        from seqlab.models import SequenceClassifier

        m = self.model_config
        return SequenceClassifier(
            num_classes=len(self.labels), vocab_size=self.tokenizer.vocab_size,
            embedding_dim=m.embedding_dim, bidirectional=m.bidirectional, merge_mode=m.merge_mode,
            pooling=m.pooling, padding_idx=self.tokenizer.pad_id, **m.cell_options(),
        )

    def train_batches(self, epoch, batch_size, rank=0, world_size=1):
        lengths = [len(ids) for ids, _ in self.examples["train"]]
        return example_batches(lengths, batch_size, self.seed, epoch, rank, world_size)

    def _collate(self, examples) -> dict[str, torch.Tensor]:
        from seqlab.data.batching import pad_sequences

        inputs, lengths = pad_sequences([ids for ids, _ in examples], pad_value=self.tokenizer.pad_id)
        targets = torch.tensor([label for _, label in examples], dtype=torch.long)
        return {"inputs": inputs, "lengths": lengths, "targets": targets}

    def collate(self, key):
        return self._collate([self.examples["train"][i] for i in key])

    def training_step(self, model, batch, carry):
        out = model(batch["inputs"], lengths=batch["lengths"], targets=batch["targets"])
        return StepOutput(out.loss, int(batch["targets"].numel()))

    @torch.no_grad()
    def evaluate(self, model, split, batch_size, device, max_batches=None):
        model.eval()
        examples = self.examples[split]
        totals = {"loss": 0.0, "accuracy": 0.0}
        count = 0
        for key in spread(eval_batches([len(ids) for ids, _ in examples], batch_size), max_batches):
            batch = to_device(self._collate([examples[i] for i in key]), device)
            out = model(batch["inputs"], lengths=batch["lengths"], targets=batch["targets"])
            n = batch["targets"].numel()
            totals["loss"] += float(out.loss) * n
            totals["accuracy"] += float((out.logits.argmax(-1) == batch["targets"]).sum())
            count += n
        return mean_metrics(totals, count)

    def predict(self, model, inputs, device):
        from seqlab.data.batching import pad_sequences

        model.eval()
        ids = [self.tokenizer.encode(text)[: self.data.max_length] or [self.tokenizer.unk_id] for text in inputs]
        padded, lengths = pad_sequences(ids, pad_value=self.tokenizer.pad_id)
        logits = model(padded.to(device), lengths=lengths.to(device)).logits.float()
        probs = logits.softmax(-1)
        best = probs.argmax(-1)
        return [f"{self.labels.decode(int(c))}\t{float(probs[i, c]):.3f}" for i, c in enumerate(best)]
