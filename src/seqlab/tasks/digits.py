"""Digits as sequences (many-to-one classification of feature sequences).

scikit-learn's 8×8 handwritten digits read row by row (T = 8 steps of 8 pixels) or pixel by
pixel (T = 64 steps of 1 pixel, optionally permuted), via :func:`seqlab.data.tasks.digits`
(the small cousin of sequential / permuted MNIST, Le et al. 2015). Metrics: loss, accuracy.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from seqlab.schema import StrictModel
from seqlab.tasks import register_task
from seqlab.tasks.base import RecurrentModelConfig, TensorTask, split_off

__all__ = ["DigitsTask"]


class DigitsData(StrictModel):
    sequence: Literal["rows", "pixels"] = "rows"
    permuted: bool = False
    test_fraction: float = Field(0.2, gt=0, lt=1)
    valid_fraction: float = Field(0.1, gt=0, lt=1)


class DigitsModel(RecurrentModelConfig):
    pooling: Literal["last", "mean", "max"] = "last"


@register_task
class DigitsTask(TensorTask):
    name = "digits"
    summary = "8x8 digit images read as sequences of rows or pixels"
    DataConfig = DigitsData
    ModelConfig = DigitsModel
    metric = "accuracy"
    mode = "max"

    def prepare(self, fit_vocab: bool = True) -> None:
        from seqlab.data.tasks import digits

        d = self.data
        splits = digits(sequence=d.sequence, permuted=d.permuted, seed=self.seed, test_fraction=d.test_fraction)
        x, y = splits["train"]
        kept, held = split_off(list(range(len(y))), d.valid_fraction, self.seed)
        self.tensors = {"train": (x[kept], y[kept]), "valid": (x[held], y[held]), "test": splits["test"]}

    @property
    def feature_size(self) -> int:
        return 8 if self.data.sequence == "rows" else 1

    def build_model(self) -> torch.nn.Module:
        from seqlab.models import SequenceClassifier

        m = self.model_config
        return SequenceClassifier(num_classes=10, input_size=self.feature_size, pooling=m.pooling,
                                  bidirectional=m.bidirectional, merge_mode=m.merge_mode,
                                  **m.cell_options())

    def batch_metrics(self, model, batch):
        out = model(batch["inputs"], targets=batch["targets"])
        n = batch["targets"].numel()
        return {"loss": float(out.loss) * n,
                "accuracy": float((out.logits.argmax(-1) == batch["targets"]).sum())}

    def predict(self, model, inputs, device):
        """Each input: 64 pixel values in [0, 1] (or 0..16), row by row, space or comma separated."""
        from seqlab.data.readers import DataError

        lines = []
        for text in inputs:
            try:
                pixels = torch.tensor([float(v) for v in text.replace(",", " ").split()])
            except ValueError:
                pixels = torch.empty(0)
            if pixels.numel() != 64:
                raise DataError(f"predict input {text[:40]!r}...: give 64 pixel values, row by row")
            if pixels.max() > 1:
                pixels = pixels / 16.0  # the 0..16 scale of the original data
            if self.data.permuted:
                import numpy as np

                pixels = pixels[torch.from_numpy(np.random.default_rng([self.seed, 1]).permutation(64))]
            x = pixels.view(1, -1, self.feature_size)  # (1, T, F)
            probs = model(x.to(device)).logits.float().softmax(-1)[0]
            best = int(probs.argmax())
            lines.append(f"{best}\t{float(probs[best]):.3f}")
        return lines
