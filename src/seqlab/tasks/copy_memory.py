"""The copy memory task (many-to-many, aligned): recall C symbols after T blank steps.

Data from :func:`seqlab.data.tasks.copy_memory` (Arjovsky et al. 2016). Model: a per-step
tagger over the alphabet (blank, K symbols, delimiter); loss = cross-entropy averaged over all
T + 2C steps, so a memoryless model scores `copy_memory_baseline` = C·log(K)/(T + 2C).
Metrics: loss, and `copy_accuracy` on the C recall steps (1/K by chance).
"""

from __future__ import annotations

import torch
from pydantic import Field

from seqlab.schema import StrictModel
from seqlab.tasks import register_task
from seqlab.tasks.base import RecurrentModelConfig, TensorTask

__all__ = ["CopyMemoryTask"]


class CopyMemoryData(StrictModel):
    length: int = Field(20, ge=1)
    num_symbols: int = Field(8, ge=1)
    copy_length: int = Field(10, ge=1)
    train_size: int = Field(10000, ge=1)
    valid_size: int = Field(1000, ge=1)
    test_size: int = Field(1000, ge=1)


class CopyMemoryModel(RecurrentModelConfig):
    embedding_dim: int = Field(16, ge=1)


@register_task
class CopyMemoryTask(TensorTask):
    name = "copy"
    summary = "copy memory: reproduce symbols seen T steps earlier"
    DataConfig = CopyMemoryData
    ModelConfig = CopyMemoryModel
    metric = "loss"
    mode = "min"

    def prepare(self, fit_vocab: bool = True) -> None:
        from seqlab.data.tasks import copy_memory

        d = self.data
        sizes = {"train": d.train_size, "valid": d.valid_size, "test": d.test_size}
        self.tensors = {
            split: copy_memory(size, d.length, seed=self.seed * 3 + i, num_symbols=d.num_symbols,
                               copy_length=d.copy_length)
            for i, (split, size) in enumerate(sizes.items())
        }

    def build_model(self) -> torch.nn.Module:
        from seqlab.models import SequenceTagger

        m = self.model_config
        alphabet = self.data.num_symbols + 2  # blank, symbols, delimiter
        # No padding index: every sequence has the same length, and 0 (blank) is real input.
        return SequenceTagger(num_tags=alphabet, vocab_size=alphabet, embedding_dim=m.embedding_dim,
                              padding_idx=None, bidirectional=m.bidirectional,
                              merge_mode=m.merge_mode, **m.cell_options())

    def batch_metrics(self, model, batch):
        out = model(batch["inputs"], targets=batch["targets"])
        recall = slice(-self.data.copy_length, None)
        predicted = out.logits[:, recall].argmax(-1)  # (N, C)
        correct = (predicted == batch["targets"][:, recall]).float().mean(dim=1)  # (N,)
        n = batch["inputs"].size(0)
        return {"loss": float(out.loss) * n, "copy_accuracy": float(correct.sum())}

    def predict(self, model, inputs, device):
        """Each input: the symbols to remember, e.g. `3 1 4 1 5 ...` (copy_length of them, 1..K)."""
        from seqlab.data.readers import DataError

        d = self.data
        lines = []
        for text in inputs:
            try:
                symbols = [int(v) for v in text.replace(",", " ").split()]
            except ValueError:
                symbols = []
            if len(symbols) != d.copy_length or any(not 1 <= s <= d.num_symbols for s in symbols):
                raise DataError(f"predict input {text!r}: give {d.copy_length} symbols in 1..{d.num_symbols}")
            x = torch.zeros(1, d.length + 2 * d.copy_length, dtype=torch.long)  # (1, T + 2C)
            x[0, : d.copy_length] = torch.tensor(symbols)
            x[0, d.copy_length + d.length - 1] = d.num_symbols + 1
            recalled = model(x.to(device)).logits[0, -d.copy_length:].argmax(-1)
            lines.append(" ".join(str(int(s)) for s in recalled))
        return lines

    def report(self, model, device):
        from seqlab.data.tasks import copy_memory_baseline

        d = self.data
        baseline = copy_memory_baseline(d.length, d.num_symbols, d.copy_length)
        return [f"memoryless baseline loss: {baseline:.4f} (copy_accuracy by chance: {1 / d.num_symbols:.3f})"]
