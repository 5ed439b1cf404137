"""The adding problem (many-to-one regression): remember two marked numbers over T steps.

Data from :func:`seqlab.data.tasks.adding_problem` (Le et al. 2015 / Arjovsky et al. 2016 form) or,
with `data.variant=hs97`, :func:`seqlab.data.tasks.adding_problem_hs97` (Hochreiter & Schmidhuber
1997). Model: a recurrent regressor on (N, T, 2) inputs, MSE loss. Predicting the mean scores
MSE ≈ 0.167 (modern form): a model has learned the task when it goes well below that line.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from seqlab.schema import StrictModel
from seqlab.tasks import register_task
from seqlab.tasks.base import RecurrentModelConfig, TensorTask

__all__ = ["AddingTask"]


class AddingData(StrictModel):
    variant: Literal["modern", "hs97"] = "modern"
    length: int = Field(50, ge=2)  # hs97 needs >= 22
    train_size: int = Field(10000, ge=1)
    valid_size: int = Field(1000, ge=1)
    test_size: int = Field(1000, ge=1)


class AddingModel(RecurrentModelConfig):
    pooling: Literal["last", "mean", "max"] = "last"


@register_task
class AddingTask(TensorTask):
    name = "adding"
    summary = "adding problem: regress the sum of two marked values"
    DataConfig = AddingData
    ModelConfig = AddingModel
    metric = "mse"
    mode = "min"

    def prepare(self, fit_vocab: bool = True) -> None:
        from seqlab.data.tasks import adding_problem, adding_problem_hs97

        make = adding_problem if self.data.variant == "modern" else adding_problem_hs97
        sizes = {"train": self.data.train_size, "valid": self.data.valid_size, "test": self.data.test_size}
        # Disjoint seeds per split: the three sets are independent draws.
        self.tensors = {split: make(size, self.data.length, seed=self.seed * 3 + i)
                        for i, (split, size) in enumerate(sizes.items())}

    def build_model(self) -> torch.nn.Module:
        from seqlab.models import SequenceClassifier

        m = self.model_config
        return SequenceClassifier(num_classes=1, input_size=2, regression=True, pooling=m.pooling,
                                  bidirectional=m.bidirectional, merge_mode=m.merge_mode,
                                  **m.cell_options())

    def batch_metrics(self, model, batch):
        out = model(batch["inputs"], lengths=batch.get("lengths"), targets=batch["targets"])
        error = out.logits.float().reshape(-1) - batch["targets"]  # (N,)
        metrics = {"loss": float(out.loss) * error.numel(), "mse": float((error ** 2).sum()),
                   "mae": float(error.abs().sum())}
        if self.data.variant == "hs97":
            from seqlab.data.tasks import ADDING_HS97_TOLERANCE

            metrics["accuracy"] = float((error.abs() < ADDING_HS97_TOLERANCE).sum())
        return metrics

    def predict(self, model, inputs, device):
        """Each input: `v1 v2 ... vT | i j` (values, then the two marked positions, 0-based)."""
        from seqlab.data.readers import DataError

        lines = []
        for text in inputs:
            values_text, sep, marks_text = text.partition("|")
            try:
                values = [float(v) for v in values_text.replace(",", " ").split()]
                marks = [int(v) for v in marks_text.replace(",", " ").split()]
            except ValueError:
                raise DataError(f"predict input {text!r}: expected numbers like '0.3 0.9 0.1 | 0 2'") from None
            if not sep or not values or any(not 0 <= m < len(values) for m in marks):
                raise DataError(f"predict input {text!r}: give values then '|' then marked positions, "
                                "e.g. '0.3 0.9 0.1 | 0 2'")
            x = torch.zeros(1, len(values), 2)  # (1, T, 2)
            x[0, :, 0] = torch.tensor(values)
            x[0, marks, 1] = 1.0
            if self.data.variant == "hs97":
                x[0, [i for i in (0, len(values) - 1) if i not in marks], 1] = -1.0
            lines.append(f"{float(model(x.to(device)).logits.reshape(-1)[0]):.4f}")
        return lines

    def report(self, model, device):
        baseline = "0.167 (modern form)" if self.data.variant == "modern" else "≈0.039 (hs97: Var(y))"
        return [f"MSE of always predicting the mean: {baseline}"]
