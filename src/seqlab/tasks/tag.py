"""Sequence tagging (many-to-many, aligned): CoNLL files of `token ... tag` lines.

Data path: tokens -> word ids (N, L) + lengths -> SequenceTagger -> (N, L, C) per-token logits ->
cross-entropy over the valid (non-padding) positions only. Metrics: loss and token accuracy over
valid positions. Predictions: `token/TAG` for each whitespace-separated token of the input.
"""

from __future__ import annotations

from pathlib import Path

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
    require_path,
    split_off,
    spread,
    to_device,
)

__all__ = ["TagTask"]


class TagData(StrictModel):
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    token_column: int = 0
    tag_column: int = -1
    max_length: int | None = Field(None, ge=1)
    valid_fraction: float = Field(0.1, gt=0, lt=1)
    lowercase: bool = False
    min_frequency: int = Field(1, ge=1)
    max_vocab: int | None = Field(50000, ge=1)


class TagModel(RecurrentModelConfig):
    embedding_dim: int = Field(100, ge=1)


def _vocab_from_tokens(sentences, lowercase: bool, min_frequency: int, max_vocab: int | None):
    """A word-level Tokenizer whose tokens are exactly the corpus tokens (no re-splitting)."""
    from seqlab.data.tokenizers import Tokenizer

    # Joined with spaces, pre-split CoNLL tokens come back as the same tokens, except for
    # tokens with inner punctuation ("U.S."), which then map consistently at train and test time.
    return Tokenizer.train((" ".join(tokens) for tokens, _ in sentences), kind="word",
                           lowercase=lowercase, min_frequency=min_frequency, max_size=max_vocab)


@register_task
class TagTask(Task):
    name = "tag"
    summary = "sequence tagging from CoNLL files"
    DataConfig = TagData
    ModelConfig = TagModel
    metric = "accuracy"
    mode = "max"
    unit = "tok"

    tokenizer = None
    tags = None

    def _read(self, path: str):
        from seqlab.data.readers import DataError, read_conll

        sentences = read_conll(path, token_column=self.data.token_column, tag_column=self.data.tag_column)
        if not sentences:
            raise DataError(f"{path}: no sentences in the file")
        return sentences

    def prepare(self, fit_vocab: bool = True) -> None:
        from seqlab.data.tokenizers import LabelVocab

        data = self.data
        sentences = {}
        train = self._read(require_path(data.train, "data.train", self.recipe,
                                        "a CoNLL training file (token ... tag per line)"))
        if data.valid:
            sentences["train"], sentences["valid"] = train, self._read(data.valid)
        else:
            sentences["train"], sentences["valid"] = split_off(train, data.valid_fraction, self.seed)
        if data.test:
            sentences["test"] = self._read(data.test)
        if fit_vocab:
            self.tokenizer = self.fit_tokenizer(lambda: _vocab_from_tokens(
                sentences["train"], data.lowercase, data.min_frequency, data.max_vocab))
            self.tags = LabelVocab(tag for _, tags in sentences["train"] for tag in tags)
        self.examples = {split: self._encode(split, items) for split, items in sentences.items()}

    def _token_ids(self, tokens: list[str]) -> list[int]:
        # One id per CoNLL token (never re-split), so ids stay aligned with the tags. A sub-word
        # vocabulary (a pre-trained run's) gives each token its first piece, as BERT's taggers do.
        if self.tokenizer.kind in ("wordpiece", "bpe"):
            return [(self.tokenizer.encode(token) or [self.tokenizer.unk_id])[0] for token in tokens]
        return self.tokenizer.encode_words(tokens)

    def _encode(self, split: str, sentences) -> list[tuple[list[int], list[int]]]:
        from seqlab.data.readers import DataError

        examples = []
        for tokens, tags in sentences:
            for tag in tags:
                if tag not in self.tags:
                    known = [self.tags.decode(i) for i in range(len(self.tags))]
                    raise DataError(f"the {split} data has tag {tag!r}, which the training data does not "
                                    f"have (known tags: {', '.join(known)})")
            cut = self.data.max_length
            examples.append((self._token_ids(tokens)[:cut], [self.tags.encode(t) for t in tags][:cut]))
        return examples

    def splits(self) -> list[str]:
        return [s for s in ("valid", "test") if s in self.examples]

    def save_artifacts(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir / "tokenizer.json")
        self.tags.save(run_dir / "labels.json")

    def load_artifacts(self, run_dir: Path) -> None:
        from seqlab.data.tokenizers import LabelVocab, Tokenizer

        self.tokenizer = Tokenizer.load(run_dir / "tokenizer.json")
        self.tags = LabelVocab.load(run_dir / "labels.json")

    def build_model(self) -> torch.nn.Module:
        from seqlab.models import SequenceTagger

        m = self.model_config
        return SequenceTagger(num_tags=len(self.tags), vocab_size=self.tokenizer.vocab_size,
                              embedding_dim=m.embedding_dim, bidirectional=m.bidirectional,
                              merge_mode=m.merge_mode, padding_idx=self.tokenizer.pad_id,
                              **m.cell_options())

    def train_batches(self, epoch, batch_size, rank=0, world_size=1):
        lengths = [len(ids) for ids, _ in self.examples["train"]]
        return example_batches(lengths, batch_size, self.seed, epoch, rank, world_size)

    def _collate(self, examples) -> dict[str, torch.Tensor]:
        from seqlab.data.batching import pad_sequences

        inputs, lengths = pad_sequences([ids for ids, _ in examples], pad_value=self.tokenizer.pad_id)
        targets, _ = pad_sequences([tags for _, tags in examples], pad_value=0)
        return {"inputs": inputs, "lengths": lengths, "targets": targets}

    def collate(self, key):
        return self._collate([self.examples["train"][i] for i in key])

    def training_step(self, model, batch, carry):
        out = model(batch["inputs"], lengths=batch["lengths"], targets=batch["targets"])
        return StepOutput(out.loss, int(batch["lengths"].sum()))

    @torch.no_grad()
    def evaluate(self, model, split, batch_size, device, max_batches=None):
        model.eval()
        examples = self.examples[split]
        loss_sum, correct, count = 0.0, 0.0, 0
        for key in spread(eval_batches([len(ids) for ids, _ in examples], batch_size), max_batches):
            batch = to_device(self._collate([examples[i] for i in key]), device)
            out = model(batch["inputs"], lengths=batch["lengths"], targets=batch["targets"])
            steps = torch.arange(batch["inputs"].size(1), device=device)
            valid = steps.unsqueeze(0) < batch["lengths"].unsqueeze(1)  # (N, L)
            n = int(valid.sum())
            loss_sum += float(out.loss) * n
            correct += float(((out.logits.argmax(-1) == batch["targets"]) & valid).sum())
            count += n
        return {"loss": loss_sum / count, "accuracy": correct / count}

    def predict(self, model, inputs, device):
        model.eval()
        lines = []
        for text in inputs:
            tokens = text.split()
            if not tokens:
                lines.append("")
                continue
            ids = torch.tensor([self._token_ids(tokens)], device=device)
            logits = model(ids, lengths=torch.tensor([len(tokens)], device=device)).logits
            tags = [self.tags.decode(int(i)) for i in logits[0].argmax(-1)]
            lines.append(" ".join(f"{token}/{tag}" for token, tag in zip(tokens, tags)))
        return lines
