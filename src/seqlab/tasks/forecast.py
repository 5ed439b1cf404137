"""Time-series forecasting (many-to-many, aligned): predict the next step at every step.

The series is a CSV column (or several) given by `data.train`; without one, a seeded synthetic
series of noisy sines runs out of the box. The series is split in time (train, then valid, then
test), standardised with the training part's mean and standard deviation, and cut into windows
of `data.window` steps; for a window x[t : t+W] the targets are x[t+1 : t+W+1], so the model
(a regression SequenceTagger) learns one-step-ahead prediction from the steps seen so far.

Metrics (on the standardised scale): loss = mse, mae, and `persistence_mse`, the MSE of
predicting "the next value equals the current one", the naive line to beat.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from pydantic import Field

from seqlab.schema import StrictModel
from seqlab.tasks import register_task
from seqlab.tasks.base import RecurrentModelConfig, TensorTask

__all__ = ["ForecastTask", "noisy_sines"]


def noisy_sines(length: int, seed: int = 0, noise: float = 0.1) -> torch.Tensor:
    """(T, 1) sum of three sines with seeded periods, phases and Gaussian noise."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float32)
    periods = torch.tensor([50.0, 23.0, 9.0]) * (1 + 0.2 * torch.rand(3, generator=generator))
    phases = 2 * math.pi * torch.rand(3, generator=generator)
    amplitudes = torch.tensor([1.0, 0.5, 0.25])
    clean = (amplitudes * torch.sin(2 * math.pi * t[:, None] / periods + phases)).sum(-1)  # (T,)
    return (clean + noise * torch.randn(length, generator=generator)).unsqueeze(-1)  # (T, 1)


class ForecastData(StrictModel):
    train: str | None = None
    columns: list[str] | None = None
    window: int = Field(48, ge=2)
    stride: int = Field(1, ge=1)
    valid_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, ge=0, lt=0.5)
    synthetic_length: int = Field(3000, ge=10)
    synthetic_noise: float = Field(0.1, ge=0)


@register_task
class ForecastTask(TensorTask):
    name = "forecast"
    summary = "one-step-ahead forecasting of a CSV series (default: noisy sines)"
    DataConfig = ForecastData
    ModelConfig = RecurrentModelConfig
    metric = "loss"
    mode = "min"

    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    column_names: list[str] | None = None

    def _series(self) -> torch.Tensor:
        from seqlab.data.readers import read_series

        d = self.data
        if d.train:
            series, names = read_series(d.train, columns=d.columns)
        else:
            series, names = noisy_sines(d.synthetic_length, seed=self.seed, noise=d.synthetic_noise), ["value"]
        if self.column_names is not None and names != self.column_names:
            from seqlab.data.readers import DataError

            raise DataError(f"{d.train}: columns {names} differ from the trained model's {self.column_names}")
        self.column_names = names
        return series.float()

    def _windows(self, part: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
        from seqlab.data.readers import DataError

        w = self.data.window
        starts = range(0, part.size(0) - w, stride)
        if len(starts) == 0:
            raise DataError(
                f"a split of the series has {part.size(0)} steps, fewer than data.window + 1 = {w + 1}; "
                "use a smaller data.window or a longer series"
            )
        x = torch.stack([part[s:s + w] for s in starts])  # (N, W, F)
        y = torch.stack([part[s + 1:s + w + 1] for s in starts])  # (N, W, F)
        return x, y

    def prepare(self, fit_vocab: bool = True) -> None:
        d = self.data
        series = self._series()  # (T, F)
        n = series.size(0)
        n_test = int(n * d.test_fraction)
        n_valid = int(n * d.valid_fraction)
        parts = {"train": series[: n - n_valid - n_test], "valid": series[n - n_valid - n_test: n - n_test]}
        if n_test:
            parts["test"] = series[n - n_test:]
        if fit_vocab:
            self.mean = parts["train"].mean(0)
            self.std = parts["train"].std(0).clamp_min(1e-8)
        self.tensors = {}
        for split, part in parts.items():
            scaled = (part - self.mean) / self.std  # (T_split, F)
            stride = d.stride if split == "train" else d.window
            self.tensors[split] = self._windows(scaled, stride)

    def save_artifacts(self, run_dir: Path) -> None:
        stats = {"columns": self.column_names, "mean": self.mean.tolist(), "std": self.std.tolist()}
        (run_dir / "normalization.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")

    def load_artifacts(self, run_dir: Path) -> None:
        from seqlab.train.run import RunDirError

        path = run_dir / "normalization.json"
        try:
            stats = json.loads(path.read_text(encoding="utf-8"))
            self.column_names = stats["columns"]
            self.mean, self.std = torch.tensor(stats["mean"]), torch.tensor(stats["std"])
        except (OSError, ValueError, KeyError) as exc:
            raise RunDirError(f"{path} is missing or damaged ({exc})") from None

    def build_model(self) -> torch.nn.Module:
        from seqlab.models import SequenceTagger

        m = self.model_config
        features = len(self.column_names)
        return SequenceTagger(num_tags=features, input_size=features, regression=True, output_size=features,
                              bidirectional=m.bidirectional, merge_mode=m.merge_mode, **m.cell_options())

    def batch_metrics(self, model, batch):
        out = model(batch["inputs"], targets=batch["targets"])
        error = out.logits.float() - batch["targets"]  # (N, W, F)
        per_item = error[0].numel()
        persistence = batch["inputs"] - batch["targets"]  # (N, W, F): predict "no change"
        return {"loss": float(out.loss) * error.size(0), "mse": float((error ** 2).sum()) / per_item,
                "mae": float(error.abs().sum()) / per_item,
                "persistence_mse": float((persistence ** 2).sum()) / per_item}

    def predict(self, model, inputs, device):
        """Each input: the recent values, oldest first; `a,b;c,d` for several columns. Prints the
        predicted next value(s) in the original units."""
        from seqlab.data.readers import DataError

        features = len(self.column_names)
        lines = []
        for text in inputs:
            try:
                rows = [[float(v) for v in row.replace(",", " ").split()] for row in text.split(";")]
                if features == 1 and len(rows) == 1:
                    rows = [[v] for v in rows[0]]
                series = torch.tensor(rows, dtype=torch.float32)  # (T, F)
            except ValueError:
                series = torch.empty(0)
            if series.dim() != 2 or series.size(0) == 0 or series.size(1) != features:
                raise DataError(f"predict input {text!r}: give recent values oldest first "
                                f"({features} per step, steps separated by ';' when more than one)")
            x = ((series - self.mean) / self.std).unsqueeze(0)  # (1, T, F)
            next_step = model(x.to(device)).logits[0, -1].float().cpu() * self.std + self.mean  # (F,)
            lines.append(" ".join(f"{v:.4f}" for v in next_step.tolist()))
        return lines
