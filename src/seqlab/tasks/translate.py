"""Sequence to sequence (many-to-many, unaligned): translation, reversal, date normalisation.

Data path: (source text, target text) -> tokenizers -> source ids (N, S) + lengths, target ids
framed as <bos> ... <eos> (N, T) -> Seq2Seq -> per-token cross-entropy.

`data.vocab` chooses the vocabularies: `joint` (one tokenizer fitted on both sides, as generated
tasks and subword translation often use) or `separate` (one per side: the output layer then
covers exactly the target types, so it is narrower and a source-only word can never be
produced). A separate run keeps `tokenizer.json` (the target side) and `source_tokenizer.json`.
Evaluation adds decoding (greedy, or beam search with `predict.eval_beam_size` > 1) and scores
the detokenised output against the reference text: BLEU and chrF (sacrebleu, 13a) and exact match.
Predictions use beam search (`predict.beam_size`, `predict.length_penalty`).

`data.corpus` picks the pairs: `files` (a TSV / JSONL file, or two aligned files given as a
common prefix plus `data.source_suffix` / `data.target_suffix`, e.g. Multi30k's `train` +
`.de.gz` / `.en.gz`), or a generated task, `reversal` or `dates` (seqlab.data.tasks).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator

from seqlab.schema import StrictModel
from seqlab.tasks import register_task
from seqlab.tasks.base import (
    RecurrentModelConfig,
    StepOutput,
    Task,
    eval_batches,
    example_batches,
    require_path,
    shard_batches,
    split_off,
    spread,
    target_nll,
    to_device,
)

__all__ = ["TranslateTask"]


class TranslateData(StrictModel):
    corpus: Literal["files", "reversal", "dates"] = "files"
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    source_suffix: str | None = None
    target_suffix: str | None = None
    valid_fraction: float = Field(0.05, gt=0, lt=1)
    # Generated corpora: sizes, and reversal's lengths and alphabet.
    train_size: int = Field(20000, ge=1)
    valid_size: int = Field(500, ge=1)
    test_size: int = Field(500, ge=1)
    min_length: int = Field(1, ge=1)
    max_length: int = Field(20, ge=1)
    num_symbols: int = Field(10, ge=1, le=26)
    # Training pairs with more tokens than this on either side are left out (None keeps all).
    max_tokens: int | None = Field(80, ge=1)
    # Training batches by padded tokens (source + target of the longest pair x pairs) instead
    # of trainer.batch_size pairs; None batches by pairs.
    batch_tokens: int | None = Field(None, ge=1)
    tokenizer: Literal["char", "word", "bpe", "wordpiece"] = "word"
    vocab: Literal["joint", "separate"] = "joint"
    lowercase: bool = False
    min_frequency: int = Field(1, ge=1)
    max_vocab: int | None = Field(None, ge=1)
    bpe_vocab_size: int = Field(8000, ge=6)

    @model_validator(mode="after")
    def _check_suffixes(self):
        if (self.source_suffix is None) != (self.target_suffix is None):
            raise ValueError(
                "give both data.source_suffix and data.target_suffix (two aligned files, "
                "e.g. .de.gz and .en.gz) or neither (one TSV / JSONL file)"
            )
        return self


class TranslateModel(RecurrentModelConfig):
    cell: Literal["rnn", "lstm", "gru", "mingru", "minlstm"] = "gru"
    hidden_size: int = Field(256, ge=1)
    bidirectional: bool = True
    embedding_dim: int = Field(128, ge=1)
    encoder_hidden_size: int | None = Field(None, ge=1)
    attention: Literal["none", "bahdanau", "dot", "general", "concat"] = "bahdanau"
    attention_size: int | None = Field(None, ge=1)
    input_feeding: bool = False
    tie_embeddings: bool = False
    bridge: Literal["last", "projection", "zeros"] = "projection"
    teacher_forcing_ratio: float = Field(1.0, ge=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    max_source_length: int | None = Field(None, ge=1)


class TranslatePredict(StrictModel):
    beam_size: int = Field(5, ge=1)
    length_penalty: float = Field(1.0, ge=0)
    max_length_ratio: float = Field(2.0, gt=0)
    # A fixed cap on output tokens (EOS included); None caps at max_length_ratio x source length.
    max_length: int | None = Field(None, ge=1)
    eval_beam_size: int = Field(1, ge=1)
    num_examples: int = Field(5, ge=0)


@register_task
class TranslateTask(Task):
    name = "translate"
    summary = "sequence to sequence with attention: translation, reversal, dates"
    DataConfig = TranslateData
    ModelConfig = TranslateModel
    PredictConfig = TranslatePredict
    metric = "loss"
    mode = "min"
    unit = "tok"

    tokenizer = None  # the target side's (and the source's too with data.vocab=joint)
    source_tokenizer = None

    def _read(self, path: str) -> list[tuple[str, str]]:
        from seqlab.data.readers import read_parallel

        data = self.data
        if data.source_suffix is not None:
            return read_parallel(path + data.source_suffix, path + data.target_suffix)
        return read_parallel(path)

    def _pairs(self) -> dict[str, list[tuple[str, str]]]:
        from seqlab.data import tasks

        data = self.data
        if data.corpus == "files":
            what = "parallel text (a TSV / JSONL file, or a prefix with data.source_suffix / data.target_suffix)"
            train = self._read(require_path(data.train, "data.train", self.recipe, what))
            pairs = {}
            if data.valid:
                pairs["train"], pairs["valid"] = train, self._read(data.valid)
            else:
                pairs["train"], pairs["valid"] = split_off(train, data.valid_fraction, self.seed)
            if data.test:
                pairs["test"] = self._read(data.test)
            return pairs

        def generate(size: int, seed: int) -> list[tuple[str, str]]:
            if data.corpus == "dates":
                return tasks.dates(size, seed=seed)
            return tasks.reversal(
                size,
                min_length=data.min_length,
                max_length=data.max_length,
                num_symbols=data.num_symbols,
                seed=seed,
            )

        train = generate(data.train_size, self.seed)
        seen = {source for source, _ in train}
        # Held-out pairs whose source occurs in training would only measure memory.
        held = {
            split: [pair for pair in generate(size, self.seed + offset) if pair[0] not in seen]
            for split, size, offset in (("valid", data.valid_size, 1), ("test", data.test_size, 2))
        }
        return {"train": train, **held}

    def prepare(self, fit_vocab: bool = True) -> None:
        from seqlab.data.tokenizers import Tokenizer

        data = self.data
        pairs = self._pairs()
        if fit_vocab:
            def fit(texts):
                return Tokenizer.train(
                    texts,
                    kind=data.tokenizer,
                    lowercase=data.lowercase,
                    min_frequency=data.min_frequency,
                    max_size=data.max_vocab if data.tokenizer in ("char", "word") else None,
                    vocab_size=data.bpe_vocab_size,
                )

            train = pairs["train"]
            if data.vocab == "joint":
                texts = [text for pair in train for text in pair]
                self.tokenizer = self.source_tokenizer = self.fit_tokenizer(lambda: fit(texts))
            else:
                self.source_tokenizer = fit([source for source, _ in train])
                self.tokenizer = fit([target for _, target in train])
        self.references = {split: [target for _, target in items] for split, items in pairs.items()}
        self.sources = {split: [source for source, _ in items] for split, items in pairs.items()}
        self.examples = {
            split: [self._encode(s, t) for s, t in items] for split, items in pairs.items()
        }
        if data.max_tokens is not None:
            limit = data.max_tokens + 2  # the target also holds <bos> and <eos>
            self.examples["train"] = [
                (src, tgt)
                for src, tgt in self.examples["train"]
                if len(src) <= data.max_tokens and len(tgt) <= limit
            ]
        if data.lowercase:
            self.references = {k: [r.lower() for r in v] for k, v in self.references.items()}

    def source_ids(self, text: str) -> list[int]:
        """A source text's ids (the unknown token for an empty text)."""
        return self.source_tokenizer.encode(text) or [self.source_tokenizer.unk_id]

    def _encode(self, source: str, target: str) -> tuple[list[int], list[int]]:
        return self.source_ids(source), self.tokenizer.encode(target, add_bos=True, add_eos=True)

    def splits(self) -> list[str]:
        return [s for s in ("valid", "test") if self.examples.get(s)]

    def save_artifacts(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir / "tokenizer.json")
        if self.source_tokenizer is not self.tokenizer:
            self.source_tokenizer.save(run_dir / "source_tokenizer.json")

    def load_artifacts(self, run_dir: Path) -> None:
        from seqlab.data.readers import DataError
        from seqlab.data.tokenizers import Tokenizer

        self.tokenizer = self.source_tokenizer = Tokenizer.load(run_dir / "tokenizer.json")
        if self.data.vocab == "separate":
            path = Path(run_dir) / "source_tokenizer.json"
            if not path.is_file():
                raise DataError(
                    f"{run_dir} was trained with data.vocab=separate but has no "
                    f"source_tokenizer.json; copy the run directory whole"
                )
            self.source_tokenizer = Tokenizer.load(path)

    def build_model(self) -> torch.nn.Module:
        from seqlab.models import Seq2Seq

        m = self.model_config
        return Seq2Seq(
            self.source_tokenizer.vocab_size,
            self.tokenizer.vocab_size,
            embedding_dim=m.embedding_dim,
            bidirectional=m.bidirectional,
            merge_mode=m.merge_mode,
            **m.cell_options(),  # cell, sizes, dropout and the cell's variant options
            encoder_hidden_size=m.encoder_hidden_size,
            attention=m.attention,
            attention_size=m.attention_size,
            input_feeding=m.input_feeding,
            tie_embeddings=m.tie_embeddings,
            bridge=m.bridge,
            teacher_forcing_ratio=m.teacher_forcing_ratio,
            label_smoothing=m.label_smoothing,
            pad_id=self.tokenizer.pad_id,
            max_source_length=m.max_source_length,
        )

    def train_batches(self, epoch, batch_size, rank=0, world_size=1):
        examples = self.examples["train"]
        if self.data.batch_tokens is None:
            lengths = [len(src) for src, _ in examples]
            return example_batches(lengths, batch_size, self.seed, epoch, rank, world_size)
        from seqlab.data.batching import token_batches

        lengths = [len(src) + len(tgt) for src, tgt in examples]
        order = token_batches(lengths, self.data.batch_tokens, seed=self.seed, epoch=epoch)
        return shard_batches(order, rank, world_size)

    def _collate(self, examples) -> dict[str, torch.Tensor]:
        from seqlab.data.batching import pad_sequences

        src, src_lengths = pad_sequences(
            [src for src, _ in examples], pad_value=self.source_tokenizer.pad_id
        )
        tgt, _ = pad_sequences([tgt for _, tgt in examples], pad_value=self.tokenizer.pad_id)
        return {"src": src, "src_lengths": src_lengths, "tgt": tgt}

    def collate(self, key):
        return self._collate([self.examples["train"][i] for i in key])

    def training_step(self, model, batch, carry):
        out = model(batch["src"], batch["src_lengths"], batch["tgt"])
        tokens = int((batch["tgt"][:, 1:] != self.tokenizer.pad_id).sum())
        return StepOutput(out.loss, tokens)

    def _decode(self, model, src, src_lengths, beam_size: int) -> list[list[int]]:
        from seqlab.decode import best_outputs

        p, t = self.predict_config, self.tokenizer
        return best_outputs(model, src, src_lengths, t.bos_id, t.eos_id, beam_size=beam_size,
                            length_penalty=p.length_penalty, max_length=p.max_length,
                            max_length_ratio=p.max_length_ratio)

    @torch.no_grad()
    def evaluate(self, model, split, batch_size, device, max_batches=None):
        from seqlab.decode import bleu, chrf, exact_match

        model.eval()
        examples = self.examples[split]
        hypotheses: dict[int, str] = {}
        total_loss, total_tokens = 0.0, 0
        for key in spread(eval_batches([len(src) for src, _ in examples], batch_size), max_batches):
            batch = to_device(self._collate([examples[i] for i in key]), device)
            out = model(batch["src"], batch["src_lengths"], batch["tgt"])
            nll, tokens = target_nll(out.logits, batch["tgt"], self.tokenizer.pad_id)
            total_loss += nll
            total_tokens += tokens
            decoded = self._decode(
                model, batch["src"], batch["src_lengths"], self.predict_config.eval_beam_size
            )
            for index, ids in zip(key, decoded):
                hypotheses[index] = self.tokenizer.decode(ids)
        indices = sorted(hypotheses)
        references = [self.references[split][i] for i in indices]
        hypotheses = [hypotheses[i] for i in indices]
        loss = total_loss / max(total_tokens, 1)
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "bleu": bleu(hypotheses, references),
            "chrf": chrf(hypotheses, references),
            "exact_match": exact_match(hypotheses, references),
        }

    def predict(self, model, inputs, device):
        from seqlab.data.batching import pad_sequences
        from seqlab.data.readers import DataError

        model.eval()
        ids = [self.source_ids(text) for text in inputs]
        limit = self.model_config.max_source_length
        for line, source in enumerate(ids, start=1):
            if limit is not None and len(source) > limit:
                raise DataError(
                    f"input {line} has {len(source)} tokens, more than model.max_source_length="
                    f"{limit}; shorten or split it"
                )
        src, src_lengths = pad_sequences(ids, pad_value=self.source_tokenizer.pad_id)
        decoded = self._decode(
            model, src.to(device), src_lengths.to(device), self.predict_config.beam_size
        )
        return [self.tokenizer.decode(tokens) for tokens in decoded]

    def report(self, model, device):
        count = self.predict_config.num_examples
        split = "test" if self.examples.get("test") else "valid"
        sources = self.sources[split][:count]
        if not sources:
            return []
        outputs = self.predict(model, sources, device)
        lines = [f"{len(sources)} {split} examples (beam size {self.predict_config.beam_size}):"]
        for source, output, reference in zip(sources, outputs, self.references[split]):
            mark = "ok" if output.strip() == reference.strip() else "  "
            lines.append(f"{mark} {source}  ->  {output}    (reference: {reference})")
        return lines
