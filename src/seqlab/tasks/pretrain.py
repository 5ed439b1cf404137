"""Pre-training on unlabelled text: masked language modelling or contrastive sentence vectors.

The task reads text, the objective (`objective.name`) decides what is learnt from it, and the
model family (`model.family`) decides what learns it; the three are independent:

* ``mlm`` (Devlin et al. 2019): 15 % of the tokens chosen, 80 / 10 / 10 masked / random / kept,
  cross-entropy at the chosen positions (:mod:`seqlab.objectives.masked_lm`); a Transformer
  encoder (:class:`~seqlab.models.TransformerMaskedLM`) or a bidirectional recurrent one
  (:class:`~seqlab.models.RecurrentMaskedLM`).
* ``contrastive`` (Gao et al. 2021, SimCSE): InfoNCE with in-batch negatives
  (:mod:`seqlab.objectives.contrastive`) over pooled sentence vectors; the positive of a sentence
  is the sentence itself through another dropout mask, or, with `data.pair_columns`, the other
  column of its row (a translation, a paraphrase). The model is a classifier body without a head
  (:class:`~seqlab.models.TransformerClassifier` / :class:`~seqlab.models.SequenceClassifier`
  with ``num_classes=0``), so a classifier fine-tunes from it with ``model.init_from``.

Data: one example per non-blank line of a text file, or the `data.text_column` of a CSV / TSV /
JSONL file; `data.train` may list several files. Lines longer than `data.max_length` tokens are
cut into pieces. The sub-word vocabulary (WordPiece by default) is trained on the training text.
Causal language modelling is the `causal-lm` task (`seqlab train pretrain-clm`).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator

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
from seqlab.tasks.transformer import TransformerModel

__all__ = ["PretrainTask", "RecurrentFamily", "TransformerFamily"]


class PretrainData(StrictModel):
    train: str | list[str] | None = None
    valid: str | None = None
    test: str | None = None
    text_column: str = "text"
    # Two column names: each row is a positive pair for the contrastive objective.
    pair_columns: list[str] | None = Field(None, min_length=2, max_length=2)
    valid_fraction: float = Field(0.02, gt=0, lt=0.5)
    tokenizer: Literal["wordpiece", "bpe", "word", "char"] = "wordpiece"
    vocab_size: int = Field(8000, ge=6)
    max_vocab: int | None = Field(30000, ge=1)
    lowercase: bool = True
    min_frequency: int = Field(2, ge=1)
    max_length: int = Field(128, ge=2)
    min_length: int = Field(2, ge=1)
    max_examples: int | None = Field(None, ge=1)

    @field_validator("train", mode="before")
    @classmethod
    def _split_paths(cls, value):
        if isinstance(value, str) and "," in value:
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class TransformerFamily(TransformerModel):
    """`model.transformer.*`: the encoder when `model.family=transformer` (the keys of the
    Transformer tasks, with pre-training's defaults)."""

    max_length: int = Field(128, ge=1)
    norm_first: bool = True


class RecurrentFamily(RecurrentModelConfig):
    """`model.recurrent.*`: the encoder when `model.family=recurrent`."""

    hidden_size: int = Field(256, ge=1)
    embedding_dim: int = Field(256, ge=1)
    bidirectional: bool = True
    dropout: float = Field(0.1, ge=0, le=1)


class PretrainModel(StrictModel):
    family: Literal["transformer", "recurrent"] = "transformer"
    # The sentence vector for the contrastive objective (and `seqlab embed`): transformer
    # cls / mean / last, recurrent last / mean / max.
    pooling: Literal["cls", "mean", "last", "max"] = "mean"
    transformer: TransformerFamily = Field(default_factory=TransformerFamily)
    recurrent: RecurrentFamily = Field(default_factory=RecurrentFamily)

    @model_validator(mode="after")
    def _check_pooling(self):
        allowed = ("cls", "mean", "last") if self.family == "transformer" else ("last", "mean", "max")
        if self.pooling not in allowed:
            raise ValueError(
                f"model.pooling={self.pooling!r} does not apply to model.family={self.family}; "
                f"choose one of {', '.join(allowed)}"
            )
        return self


class PretrainObjective(StrictModel):
    name: Literal["mlm", "contrastive"] = "mlm"
    # Masked LM: the share of tokens chosen, then (mask, random, keep) for a chosen token.
    mask_probability: float = Field(0.15, gt=0, lt=1)
    mask_replace: list[float] = Field(default_factory=lambda: [0.8, 0.1, 0.1], min_length=3,
                                      max_length=3)
    whole_word: bool = False
    # Contrastive: InfoNCE temperature; symmetric loss for pairs (both sides are queries).
    temperature: float = Field(0.05, gt=0)
    symmetric: bool = True

    @model_validator(mode="after")
    def _check_shares(self):
        if min(self.mask_replace) < 0 or abs(sum(self.mask_replace) - 1) > 1e-6:
            raise ValueError(
                f"objective.mask_replace={self.mask_replace} must be three shares (mask, random, "
                f"keep) that are >= 0 and sum to 1, e.g. [0.8, 0.1, 0.1]"
            )
        return self


def _seed_of(*numbers: int) -> int:
    """A 31-bit seed from integers (a batch's identity), stable across runs and processes."""
    return zlib.crc32(torch.tensor(numbers, dtype=torch.int64).numpy().tobytes()) & 0x7FFFFFFF


@register_task
class PretrainTask(Task):
    name = "pretrain"
    summary = "pre-training on plain text: masked LM or contrastive, Transformer or recurrent"
    DataConfig = PretrainData
    ModelConfig = PretrainModel
    ObjectiveConfig = PretrainObjective
    metric = "loss"
    mode = "min"
    unit = "tok"

    tokenizer = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Masked LM counts tokens per second, contrastive learning sentences.
        self.unit = "tok" if self.objective.name == "mlm" else "ex"

    # Data.
    def _paths(self) -> list[str]:
        train = require_path(self.data.train, "data.train", self.recipe,
                             "unlabelled text (a text file, one example per line, or a CSV / TSV / "
                             "JSONL column)")
        return train if isinstance(train, list) else [train]

    def _read(self, path: str) -> list:
        from seqlab.data.readers import read_sentences

        return read_sentences(path, self.data.text_column, self.data.pair_columns)

    def prepare(self, fit_vocab: bool = True) -> None:
        from seqlab.data.tokenizers import Tokenizer

        data = self.data
        if self.objective.name == "mlm" and data.pair_columns:
            raise ValueError(
                "data.pair_columns gives sentence pairs, which only objective.name=contrastive uses"
            )
        rows: dict[str, list] = {}
        train = [row for path in self._paths() for row in self._read(path)]
        if data.max_examples is not None:
            train = train[: data.max_examples]
        if data.valid:
            rows["train"], rows["valid"] = train, self._read(data.valid)
        else:
            rows["train"], rows["valid"] = split_off(train, data.valid_fraction, self.seed)
        if data.test:
            rows["test"] = self._read(data.test)
        if fit_vocab:
            def texts():
                for row in rows["train"]:
                    yield from (row if isinstance(row, tuple) else (row,))

            self.tokenizer = self.fit_tokenizer(lambda: Tokenizer.train(
                texts(), kind=data.tokenizer, lowercase=data.lowercase,
                min_frequency=data.min_frequency,
                max_size=data.max_vocab if data.tokenizer in ("char", "word") else None,
                vocab_size=data.vocab_size,
            ))
        self.examples = {split: self._encode(items) for split, items in rows.items()}
        if not self.examples["train"]:
            raise ValueError(
                f"no training example has data.min_length={data.min_length} tokens or more"
            )

    def _encode(self, rows: list) -> list:
        """Token ids per example: pieces of at most max_length for text, truncated pairs."""
        length, shortest = self.data.max_length, self.data.min_length
        if self.data.pair_columns:
            pairs = []
            for row in rows:
                ids = [self.tokenizer.encode(text)[:length] for text in row]
                if all(len(side) >= shortest for side in ids):
                    pairs.append(tuple(ids))
            return pairs
        examples = []
        for text in rows:
            ids = self.tokenizer.encode(text)
            for start in range(0, len(ids), length):
                piece = ids[start:start + length]
                if len(piece) >= shortest:
                    examples.append(piece)
        return examples

    def splits(self) -> list[str]:
        return [s for s in ("valid", "test") if self.examples.get(s)]

    def save_artifacts(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir / "tokenizer.json")

    def load_artifacts(self, run_dir: Path) -> None:
        from seqlab.data.tokenizers import Tokenizer

        self.tokenizer = Tokenizer.load(run_dir / "tokenizer.json")

    def _lengths(self, split: str) -> list[int]:
        return [len(e[0]) + len(e[1]) if isinstance(e, tuple) else len(e)
                for e in self.examples[split]]

    def train_batches(self, epoch, batch_size, rank=0, world_size=1):
        batches = example_batches(self._lengths("train"), batch_size, self.seed, epoch, rank,
                                  world_size)
        return [(epoch, tuple(indices)) for indices in batches]

    # Batches.
    def _pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        from seqlab.data.batching import pad_sequences

        return pad_sequences(sequences, pad_value=self.tokenizer.pad_id)

    def _mask(self, inputs: torch.Tensor, lengths: torch.Tensor, seed: int) -> dict:
        """BERT's corruption of a padded batch, repeatable from `seed`."""
        from seqlab.data.tokenizers import SPECIAL_TOKENS
        from seqlab.objectives import mask_tokens

        tokenizer = self.tokenizer
        special = len(SPECIAL_TOKENS)  # ids below are <pad> <unk> <bos> <eos> <mask>
        positions = torch.arange(inputs.size(1))
        candidates = (positions[None, :] < lengths[:, None]) & (inputs >= special)  # (N, L)
        starts = None
        if self.objective.whole_word:
            starts = self._word_start_table()[inputs]  # (N, L)
            starts[:, 0] = True
        generator = torch.Generator().manual_seed(seed)
        masked, targets = mask_tokens(
            inputs, candidates, tokenizer.mask_id, (special, tokenizer.vocab_size),
            probability=self.objective.mask_probability,
            replace_probabilities=tuple(self.objective.mask_replace), starts=starts,
            generator=generator,
        )
        return {"inputs": masked, "lengths": lengths, "targets": targets}

    def _word_start_table(self) -> torch.Tensor:
        """(V,) bool: whether each vocabulary entry begins a word (built once)."""
        from seqlab.objectives import word_starts

        if getattr(self, "_starts", None) is None:
            tokenizer = self.tokenizer
            tokens = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
            # Every entry is judged as if it followed another piece, so its own marker decides.
            self._starts = torch.tensor(word_starts(["", *tokens], tokenizer.kind)[1:])
        return self._starts

    def _collate(self, examples: list, seed: int) -> dict[str, torch.Tensor]:
        if self.data.pair_columns:
            first, first_lengths = self._pad([a for a, _ in examples])
            second, second_lengths = self._pad([b for _, b in examples])
            return {"inputs": first, "lengths": first_lengths,
                    "positives": second, "positive_lengths": second_lengths}
        inputs, lengths = self._pad(examples)
        if self.objective.name == "mlm":
            return self._mask(inputs, lengths, seed)
        return {"inputs": inputs, "lengths": lengths}

    def collate(self, key):
        epoch, indices = key
        seed = _seed_of(self.seed, epoch, *indices[:8], len(indices))
        return self._collate([self.examples["train"][i] for i in indices], seed)

    # Model and objective.
    def build_model(self) -> torch.nn.Module:
        from seqlab.models import (
            RecurrentMaskedLM,
            SequenceClassifier,
            TransformerClassifier,
            TransformerEncoderModel,
            TransformerMaskedLM,
        )

        m = self.model_config
        vocab, pad = self.tokenizer.vocab_size, self.tokenizer.pad_id
        if m.family == "transformer":
            t = m.transformer
            if self.data.max_length > t.max_length:
                raise ValueError(
                    f"data.max_length={self.data.max_length} exceeds model.transformer.max_length="
                    f"{t.max_length} (the positions the encoder has)"
                )
            encoder = TransformerEncoderModel(
                vocab, d_model=t.d_model, nhead=t.nhead, num_layers=t.num_layers,
                dim_feedforward=t.dim_feedforward, dropout=t.dropout, activation=t.activation,
                norm_first=t.norm_first, positional=t.positional, max_length=t.max_length,
                padding_idx=pad,
            )
            if self.objective.name == "mlm":
                return TransformerMaskedLM(encoder, activation=t.activation)
            return TransformerClassifier(encoder, 0, pooling=m.pooling, dropout=t.dropout)
        r = m.recurrent
        if self.objective.name == "mlm":
            if not r.bidirectional:
                raise ValueError(
                    "masked LM reads both sides of a masked token: set "
                    "model.recurrent.bidirectional=true"
                )
            options = r.cell_options()
            return RecurrentMaskedLM(
                vocab, embedding_dim=r.embedding_dim, bidirectional=True,
                merge_mode=r.merge_mode, padding_idx=pad, **options,
            )
        return SequenceClassifier(
            0, vocab_size=vocab, embedding_dim=r.embedding_dim, bidirectional=r.bidirectional,
            merge_mode=r.merge_mode, pooling=m.pooling, padding_idx=pad, **r.cell_options(),
        )

    def _vectors(self, model, inputs, lengths) -> torch.Tensor:
        return model(inputs, lengths=lengths).pooled  # (N, H)

    def _losses(self, model, batch) -> tuple[torch.Tensor, dict[str, float], int]:
        """(loss, metric sums, count) of one batch under the objective."""
        from seqlab.objectives import in_batch_accuracy, info_nce, masked_lm_loss

        if self.objective.name == "mlm":
            chosen = batch["targets"] != -100  # (N, L)
            # The head scores the chosen positions only: logits (K, V).
            out = model(batch["inputs"], lengths=batch["lengths"], positions=chosen)
            targets = batch["targets"][chosen]  # (K,)
            loss = masked_lm_loss(out.logits, targets)
            count = int(chosen.sum())
            with torch.no_grad():
                correct = float((out.logits.argmax(-1) == targets).sum())
            return loss, {"loss": float(loss.detach()) * count, "accuracy": correct}, count
        objective = self.objective
        if "positives" in batch:
            anchors = self._vectors(model, batch["inputs"], batch["lengths"])
            positives = self._vectors(model, batch["positives"], batch["positive_lengths"])
            symmetric = objective.symmetric
        else:
            # SimCSE: the batch twice in one pass, so each copy gets its own dropout mask.
            inputs = torch.cat([batch["inputs"], batch["inputs"]])  # (2N, L)
            lengths = torch.cat([batch["lengths"], batch["lengths"]])
            vectors = self._vectors(model, inputs, lengths)  # (2N, H)
            anchors, positives = vectors.chunk(2)
            symmetric = False
        loss = info_nce(anchors, positives, objective.temperature, symmetric=symmetric)
        count = anchors.size(0)
        accuracy = float(in_batch_accuracy(anchors.detach(), positives.detach()))
        return loss, {"loss": float(loss.detach()) * count, "accuracy": accuracy * count}, count

    def training_step(self, model, batch, carry):
        loss, _, count = self._losses(model, batch)
        tokens = int(batch["lengths"].sum())
        return StepOutput(loss, tokens if self.objective.name == "mlm" else max(count, 1))

    @torch.no_grad()
    def evaluate(self, model, split, batch_size, device, max_batches=None):
        examples = self.examples[split]
        unsupervised = self.objective.name == "contrastive" and not self.data.pair_columns
        # Unsupervised SimCSE needs dropout to tell the two copies apart, so it is scored in
        # training mode, with a fixed random state that evaluation does not disturb.
        model.train(unsupervised)
        totals = {"loss": 0.0, "accuracy": 0.0}
        count = 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for number, key in enumerate(spread(eval_batches(self._lengths(split), batch_size),
                                                max_batches)):
                batch = self._collate([examples[i] for i in key], _seed_of(self.seed, -1, number))
                _, sums, n = self._losses(model, to_device(batch, device))
                for name, value in sums.items():
                    totals[name] += value
                count += n
        model.eval()
        metrics = mean_metrics(totals, count)
        if self.objective.name == "mlm":
            import math

            metrics["perplexity"] = math.exp(min(metrics["loss"], 50.0))
        return metrics

    # Using the trained model.
    def predict(self, model, inputs, device):
        """MLM: each `<mask>` in the text filled in; contrastive: the cosine similarity of
        consecutive inputs (`a`, `b`, ... -> sim(a, b), sim(b, c), ...)."""
        from seqlab.data.batching import pad_sequences
        from seqlab.data.tokenizers import SPECIAL_TOKENS

        model.eval()
        tokenizer = self.tokenizer
        if self.objective.name == "mlm":
            lines = []
            for text in inputs:
                ids = tokenizer.encode(text)[: self.data.max_length] or [tokenizer.unk_id]
                tensor = torch.tensor([ids], device=device)
                logits = model(tensor).logits[0]  # (L, V)
                special = len(SPECIAL_TOKENS)
                regular = logits[:, special:].argmax(-1) + special  # (L,) best regular token
                filled = [int(regular[t]) if i == tokenizer.mask_id else i
                          for t, i in enumerate(ids)]
                lines.append(tokenizer.decode(filled))
            return lines
        ids = [tokenizer.encode(text)[: self.data.max_length] or [tokenizer.unk_id]
               for text in inputs]
        padded, lengths = pad_sequences(ids, pad_value=tokenizer.pad_id)
        vectors = torch.nn.functional.normalize(
            self._vectors(model, padded.to(device), lengths.to(device)), dim=-1)
        if len(inputs) < 2:
            return [("give two or more texts: each line is the cosine similarity of a text "
                     "to the next")]
        return [f"{float(vectors[i] @ vectors[i + 1]):.4f}" for i in range(len(inputs) - 1)]
