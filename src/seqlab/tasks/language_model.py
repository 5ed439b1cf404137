"""Language modelling on plain text with truncated backpropagation through time.

The token stream is laid out as in Zaremba et al. (2014) ("batchify"): T ids are cut into B
contiguous rows, (B, T // B); batch k is the columns [k·bptt, (k+1)·bptt) and its targets are the
same columns shifted by one. Row b of batch k+1 continues row b of batch k, so the recurrent state
is carried (detached) from one batch to the next and gradients flow through `data.bptt` steps.

With no `data.train`, the corpus is the Python documentation text that the standard library
ships in `pydoc_data.topics` (about 465k characters), so `seqlab train charlm-lstm` runs
anywhere with no download. Metrics: loss (nats per token), perplexity = exp(loss), and bits per
token = loss / ln 2.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from seqlab.schema import StrictModel
from seqlab.tasks import register_task
from seqlab.tasks.base import RecurrentModelConfig, StepOutput, Task

__all__ = ["LanguageModelTask", "batchify", "embedded_corpus"]


def embedded_corpus() -> str:
    """The Python docs topics text that ships with the standard library (`pydoc_data`)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name].strip() for name in sorted(topics)) + "\n"


def batchify(ids: torch.Tensor, rows: int) -> torch.Tensor:
    """(T,) -> (rows, T // rows): each row a contiguous piece of the stream (tail dropped)."""
    width = ids.numel() // rows
    return ids[: rows * width].view(rows, width)  # (B, T // B)


class LanguageModelData(StrictModel):
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    valid_fraction: float = Field(0.05, gt=0, lt=0.5)
    test_fraction: float = Field(0.05, ge=0, lt=0.5)
    tokenizer: Literal["char", "word", "bpe", "wordpiece"] = "char"
    lowercase: bool = False
    min_frequency: int = Field(1, ge=1)
    max_vocab: int | None = Field(None, ge=1)
    bpe_vocab_size: int = Field(8000, ge=6)
    bptt: int = Field(64, ge=1)
    max_chars: int | None = Field(None, ge=100)


class LanguageModelModel(RecurrentModelConfig):
    embedding_dim: int | None = Field(None, ge=1)
    tie_weights: bool = False


class LanguageModelPredict(StrictModel):
    prompt: str = "The "
    max_new_tokens: int = Field(200, ge=0)
    temperature: float = Field(0.8, ge=0)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    num_samples: int = Field(3, ge=0)
    seed: int = 0


@register_task
class LanguageModelTask(Task):
    name = "lm"
    summary = "next-token language model on plain text (truncated BPTT)"
    DataConfig = LanguageModelData
    ModelConfig = LanguageModelModel
    PredictConfig = LanguageModelPredict
    metric = "loss"
    mode = "min"
    unit = "tok"

    tokenizer = None

    def _texts(self) -> dict[str, str]:
        from seqlab.data.readers import read_text

        data = self.data
        train = read_text(data.train) if data.train else embedded_corpus()
        if data.max_chars:
            train = train[: data.max_chars]
        texts = {}
        # Held-out text is cut from the end of the stream so that it stays contiguous.
        n = len(train)
        cut_test = 0 if data.test else int(n * data.test_fraction)
        cut_valid = 0 if data.valid else int(n * data.valid_fraction)
        texts["train"] = train[: n - cut_valid - cut_test]
        texts["valid"] = read_text(data.valid) if data.valid else train[n - cut_valid - cut_test: n - cut_test]
        if data.test:
            texts["test"] = read_text(data.test)
        elif cut_test:
            texts["test"] = train[n - cut_test:]
        return texts

    def prepare(self, fit_vocab: bool = True) -> None:
        from seqlab.data.tokenizers import Tokenizer

        texts = self._texts()
        data = self.data
        if fit_vocab:
            # Lines keep the tokenizer's input small per item; char tokens include the newlines.
            lines = texts["train"].splitlines(keepends=True)
            self.tokenizer = self.fit_tokenizer(lambda: Tokenizer.train(
                lines, kind=data.tokenizer, lowercase=data.lowercase, min_frequency=data.min_frequency,
                max_size=data.max_vocab if data.tokenizer in ("char", "word") else None,
                vocab_size=data.bpe_vocab_size,
            ))
        self.streams = {split: self._encode(text) for split, text in texts.items()}
        counts = Counter(self.streams["train"].tolist())
        total = sum(counts.values())
        self.unigram_entropy = -sum(c / total * math.log(c / total) for c in counts.values())

    def _encode(self, text: str) -> torch.Tensor:
        if self.tokenizer.kind == "char":
            return torch.tensor(self.tokenizer.encode(text), dtype=torch.long)
        ids: list[int] = []
        for line in text.splitlines():
            ids.extend(self.tokenizer.encode(line, add_eos=True))
        return torch.tensor(ids, dtype=torch.long)

    def splits(self) -> list[str]:
        return [s for s in ("valid", "test") if s in self.streams and self.streams[s].numel() > 1]

    def save_artifacts(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir / "tokenizer.json")

    def load_artifacts(self, run_dir: Path) -> None:
        from seqlab.data.tokenizers import Tokenizer

        self.tokenizer = Tokenizer.load(run_dir / "tokenizer.json")

    def build_model(self) -> torch.nn.Module:
        from seqlab.models import LanguageModel

        m = self.model_config
        return LanguageModel(vocab_size=self.tokenizer.vocab_size, embedding_dim=m.embedding_dim,
                             tie_weights=m.tie_weights, **m.cell_options())

    def train_batches(self, epoch, batch_size, rank=0, world_size=1):
        bptt = self.data.bptt
        self._train_rows = batchify(self.streams["train"], batch_size * world_size)[
            rank * batch_size:(rank + 1) * batch_size
        ]  # (B, T // (B * world_size))
        width = self._train_rows.size(1)
        # A seeded offset per epoch moves the chunk boundaries, so each epoch cuts the text anew.
        offset = int(np.random.default_rng([self.seed, epoch]).integers(0, bptt)) if width > 2 * bptt else 0
        return list(range(offset, width - 1, bptt))

    def _chunk(self, rows: torch.Tensor, start: int) -> dict[str, torch.Tensor]:
        length = min(self.data.bptt, rows.size(1) - 1 - start)
        return {"inputs": rows[:, start:start + length], "targets": rows[:, start + 1:start + 1 + length]}

    def collate(self, key):
        return self._chunk(self._train_rows, key)

    def training_step(self, model, batch, carry):
        out = model(batch["inputs"], state=carry, targets=batch["targets"])
        return StepOutput(out.loss, int(batch["inputs"].numel()), out.state)

    @torch.no_grad()
    def evaluate(self, model, split, batch_size, device, max_batches=None):
        model.eval()
        stream = self.streams[split]
        rows = batchify(stream, max(1, min(batch_size, (stream.numel() - 1) // 2)))
        state, total, count = None, 0.0, 0
        starts = range(0, rows.size(1) - 1, self.data.bptt)
        if max_batches is not None and max_batches < len(starts):
            # The first chunks of every row: the rows already span the whole stream, and the
            # recurrent state stays carried from chunk to chunk.
            starts = starts[:max_batches]
        for start in starts:
            batch = self._chunk(rows, start)
            out = model(batch["inputs"].to(device), state=state, targets=batch["targets"].to(device))
            state = out.state
            n = batch["inputs"].numel()
            total += float(out.loss) * n
            count += n
        loss = total / count
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "bits_per_token": loss / math.log(2)}

    def _generate(self, model, prompt: str, device, generator) -> str:
        p = self.predict_config
        ids = self.tokenizer.encode(prompt) or self.tokenizer.encode("\n") or [self.tokenizer.unk_id]
        out = model.generate(torch.tensor([ids], device=device), max_new_tokens=p.max_new_tokens,
                             temperature=p.temperature, top_k=p.top_k, top_p=p.top_p, generator=generator)
        return prompt + self.tokenizer.decode(out[0, len(ids):].tolist())

    def predict(self, model, inputs, device):
        model.eval()
        generator = torch.Generator(device=device).manual_seed(self.predict_config.seed)
        return [self._generate(model, text, device, generator) for text in inputs]

    def report(self, model, device):
        p = self.predict_config
        entropy = f"unigram entropy of the training text: {self.unigram_entropy:.3f} nats/token"
        lines = [f"{entropy} (the loss of a model that ignores context)"]
        if p.num_samples:
            generator = torch.Generator(device=device).manual_seed(p.seed)
            lines.append(f"{p.num_samples} samples (temperature {p.temperature}, prompt {p.prompt!r}):")
            for index in range(p.num_samples):
                text = self._generate(model, p.prompt, device, generator)
                lines.append(f"--- sample {index + 1}")
                lines.extend(text.splitlines())
        return lines
