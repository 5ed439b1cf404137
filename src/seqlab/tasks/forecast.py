"""Time-series forecasting: from a window of W steps, predict the next H steps.

The series (`data.corpus`) is a seeded synthetic sum of noisy sines (the default, runs out of the
box), a CSV column or several (`data.train=PATH`), or a real series bundled with `statsmodels`:
yearly sunspot numbers or the Mauna Loa CO₂ record (see :mod:`seqlab.data.series`). It is split
in time (train, then valid, then test), standardised with the training part's mean and standard
deviation only, and cut into windows. A forecast from origin t (the last step seen) reads
x = y[t-W+1 .. t] and predicts y[t+1 .. t+H] (`data.horizon`); with `data.level=last` the
window's last value is subtracted from inputs and targets (and added back to the forecast), so
the model forecasts changes rather than levels and a trend past the training range stays in
reach; with `data.level=window` each window is standardised by its own mean and standard
deviation (reversible instance normalisation, Kim et al. 2022), so a cycle of a size never seen
in training looks like the ones that were; with `data.level=season` the targets are the seasonal differences y_{t+h} − ŷ^naive_{t+h}
(seasonal differencing, as in SARIMA), so the model learns a correction to the seasonal-naive
forecast. Validation and test origins roll one step at a time over their split; their windows may
reach back into the earlier splits (values known at forecast time), their targets never leave it.

Two model families (`model.family`):
- `recurrent` (a :class:`~seqlab.models.SequenceTagger` regression, e.g. a GRU): at every step
  of the window it predicts the next H values from the steps seen so far, trained on all of
  them; the forecast is the one at the window's last step. With H = 1 this is one-step-ahead
  prediction at every step.
- `transformer` (:class:`~seqlab.models.forecaster.TransformerForecaster`): an encoder over the
  whole window with positions and a linear head from the last step to H × F values.

Metrics: `loss`, the training objective (mean squared error on the standardised scale); `mae`
and `smape` of the forecasts in the series' own units, averaged over origins, horizon steps and
columns,

    MAE = 1/n Σ |y − ŷ|,     sMAPE = 100/n Σ 2|y − ŷ| / (|y| + |ŷ|)  (0 when y = ŷ = 0),

and the same two for the seasonal-naive forecast ŷ_{t+h} = y_{t+h−m·⌈h/m⌉} (`naive_mae`,
`naive_smape`) from the same windows, with season m = `data.season` (default 11 for sunspots,
12 for monthly and 52 for weekly CO₂, 1 — "no change" — otherwise). The best checkpoint is the
one with the lowest validation `mae`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from seqlab.schema import StrictModel
from seqlab.tasks import register_task
from seqlab.tasks.base import RecurrentModelConfig, StepOutput, TensorTask

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
    # None: `csv` when data.train is given, else `sines`.
    corpus: Literal["sines", "sunspots", "co2", "csv"] | None = None
    train: str | None = None
    columns: list[str] | None = None
    frequency: Literal["monthly", "weekly"] = "monthly"  # CO₂ only
    window: int = Field(48, ge=2)
    horizon: int = Field(1, ge=1)
    season: int | None = Field(None, ge=1)
    level: Literal["none", "last", "window", "season"] = "none"
    stride: int = Field(1, ge=1)
    valid_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, ge=0, lt=0.5)
    synthetic_length: int = Field(3000, ge=10)
    synthetic_noise: float = Field(0.1, ge=0)


class ForecastModel(RecurrentModelConfig):
    """`model.family=recurrent` reads the recurrent keys (cell, hidden_size, ...);
    `transformer` reads d_model, nhead, dim_feedforward, activation, positional, norm_first;
    both read num_layers and dropout."""

    family: Literal["recurrent", "transformer"] = "recurrent"
    d_model: int = Field(64, ge=1)
    nhead: int = Field(4, ge=1)
    dim_feedforward: int | None = Field(None, ge=1)
    activation: Literal["relu", "gelu", "gelu_tanh"] = "gelu"
    positional: Literal["learned", "sinusoidal"] = "learned"
    norm_first: bool = True


@register_task
class ForecastTask(TensorTask):
    name = "forecast"
    summary = "multi-step forecasting of a series (noisy sines, sunspots, CO2 or a CSV) with a GRU or a Transformer"
    DataConfig = ForecastData
    ModelConfig = ForecastModel
    metric = "mae"
    mode = "min"

    scaler = None
    column_names: list[str] | None = None
    run_dir: Path | None = None

    @property
    def mean(self) -> torch.Tensor:
        """(F,) the training part's mean (the scaler's)."""
        return self.scaler.mean

    @property
    def std(self) -> torch.Tensor:
        """(F,) the training part's standard deviation (the scaler's)."""
        return self.scaler.std

    @property
    def corpus(self) -> str:
        d = self.data
        return d.corpus or ("csv" if d.train else "sines")

    @property
    def season(self) -> int:
        from seqlab.data.series import DEFAULT_SEASON

        if self.data.season is not None:
            return self.data.season
        key = f"co2-{self.data.frequency}" if self.corpus == "co2" else self.corpus
        return DEFAULT_SEASON.get(key, 1)

    def _series(self) -> torch.Tensor:
        from seqlab.data.readers import DataError, read_series
        from seqlab.data.series import load_builtin_series
        from seqlab.tasks.base import require_path

        d = self.data
        if self.corpus == "csv":
            path = require_path(d.train, "data.train", self.recipe, "a CSV series (one row per time step)")
            series, names = read_series(path, columns=d.columns)
        elif self.corpus == "sines":
            series, names = noisy_sines(d.synthetic_length, seed=self.seed, noise=d.synthetic_noise), ["value"]
        else:
            series, names = load_builtin_series(self.corpus, frequency=d.frequency)
        if self.column_names is not None and names != self.column_names:
            raise DataError(f"{d.train}: columns {names} differ from the trained model's {self.column_names}")
        self.column_names = names
        return series.float()

    def _windows(self, scaled: torch.Tensor, origins: list[int], train: bool):
        """(inputs (N, W, F), targets[, shift (N, F), base (N, H, F), scale (N, F)]) for the
        forecasts from `origins`, in the units the model sees: inputs (x − shift) / scale,
        targets (y − base) / scale.

        Targets: (N, W, H·F), the next H values after every step (recurrent family), or
        (N, H, F), the H values after the window (transformer family). By `data.level`: shift
        and base the window's last value (`last`), its mean with scale its standard deviation
        (`window`), base the seasonal-naive forecast (`season`); else shift = base = 0, scale 1."""
        d = self.data
        w, h, m = d.window, d.horizon, self.season
        index = torch.tensor(origins)[:, None] + torch.arange(-w, 0)  # (N, W)
        inputs = scaled[index]  # (N, W, F)
        if self.model_config.family == "recurrent":
            ahead = index[:, :, None] + torch.arange(1, h + 1)  # (N, W, H)
        else:
            ahead = index[:, -1:] + torch.arange(1, h + 1)  # (N, H)
        targets = scaled[ahead]  # (N, W, H, F) or (N, H, F)
        scale = torch.ones_like(inputs[:, -1])  # (N, F)
        if d.level == "last":
            shift = inputs[:, -1]
        elif d.level == "window":
            shift, scale = inputs.mean(1), inputs.std(1).clamp_min(1e-2)
        else:
            shift = torch.zeros_like(inputs[:, -1])

        def per_window(value):  # (N, F) -> broadcastable against the targets
            return value.view(value.size(0), *[1] * (targets.dim() - 2), -1)

        if d.level == "season":
            steps = torch.arange(1, h + 1)
            lag = m * torch.div(steps + m - 1, m, rounding_mode="floor")  # m·⌈h/m⌉, (H,)
            base = scaled[ahead - lag]  # y_{t+h−m⌈h/m⌉}, like targets
        else:
            base = per_window(shift).expand_as(targets)
        inputs = (inputs - shift[:, None]) / scale[:, None]
        targets = (targets - base) / per_window(scale)
        if self.model_config.family == "recurrent":
            targets, base = targets.flatten(2), base[:, -1]  # (N, W, H·F); (N, H, F) at the last step
        return (inputs, targets) if train else (inputs, targets, shift, base, scale)

    def prepare(self, fit_vocab: bool = True) -> None:
        from seqlab.data.readers import DataError
        from seqlab.data.series import Standardizer, forecast_origins
        from seqlab.schema import ConfigError

        d = self.data
        if d.window < self.season:
            raise ConfigError(
                f"data.window={d.window} is shorter than the season m={self.season} the seasonal-naive "
                f"baseline repeats; use data.window >= {self.season} (or set data.season)"
            )
        series = self._series()  # (T, F)
        n = series.size(0)
        n_test = int(n * d.test_fraction)
        n_valid = int(n * d.valid_fraction)
        bounds = {"train": (0, n - n_valid - n_test), "valid": (n - n_valid - n_test, n - n_test)}
        if n_test:
            bounds["test"] = (n - n_test, n)
        if fit_vocab:
            self.scaler = Standardizer.fit(series[: bounds["train"][1]])
        scaled = self.scaler.transform(series)  # (T, F), the training part's statistics
        self.series = series
        # Per-step seasonal differences reach m - 1 steps before the window's first step.
        recurrent_season = d.level == "season" and self.model_config.family == "recurrent"
        lookback = d.window + (self.season - 1 if recurrent_season else 0)
        self.tensors, self.origins = {}, {}
        for split, (start, end) in bounds.items():
            origins = forecast_origins(start, end, lookback, d.horizon, d.stride if split == "train" else 1)
            if not origins:
                raise DataError(
                    f"the {split} part of the series (steps {start}..{end - 1}, {end - start} steps) holds no "
                    f"window of data.window={d.window} with data.horizon={d.horizon} values after it; "
                    "use a smaller window or horizon, or a longer series"
                )
            self.origins[split] = origins
            self.tensors[split] = self._windows(scaled, origins, train=split == "train")

    def save_artifacts(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        stats = {"columns": self.column_names, "mean": self.scaler.mean.tolist(), "std": self.scaler.std.tolist()}
        (run_dir / "normalization.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")

    def load_artifacts(self, run_dir: Path) -> None:
        from seqlab.data.series import Standardizer
        from seqlab.train.run import RunDirError

        self.run_dir = Path(run_dir)
        path = run_dir / "normalization.json"
        try:
            stats = json.loads(path.read_text(encoding="utf-8"))
            self.column_names = stats["columns"]
            self.scaler = Standardizer(torch.tensor(stats["mean"]), torch.tensor(stats["std"]))
        except (OSError, ValueError, KeyError) as exc:
            raise RunDirError(f"{path} is missing or damaged ({exc})") from None

    def build_model(self) -> torch.nn.Module:
        from seqlab.models import SequenceTagger
        from seqlab.models.forecaster import TransformerForecaster

        m = self.model_config
        features = len(self.column_names)
        if m.family == "transformer":
            return TransformerForecaster(
                features, self.data.horizon, d_model=m.d_model, nhead=m.nhead, num_layers=m.num_layers,
                dim_feedforward=m.dim_feedforward, dropout=m.dropout, activation=m.activation,
                norm_first=m.norm_first, positional=m.positional, max_length=self.data.window,
            )
        outputs = features * self.data.horizon
        return SequenceTagger(num_tags=outputs, input_size=features, regression=True, output_size=outputs,
                              bidirectional=m.bidirectional, merge_mode=m.merge_mode, **m.cell_options())

    @staticmethod
    def _slice(tensors, index):
        batch = {"inputs": tensors[0][index], "targets": tensors[1][index]}
        if len(tensors) > 2:
            batch["shift"], batch["base"], batch["scale"] = (t[index] for t in tensors[2:])
        return batch

    def training_step(self, model, batch, carry):
        out = model(batch["inputs"], targets=batch["targets"])
        return StepOutput(out.loss, int(batch["inputs"].size(0)))

    def _forecast(self, logits: torch.Tensor) -> torch.Tensor:
        """The model's output → the (N, H, F) forecast after each window (standardised, relative)."""
        if self.model_config.family == "recurrent":
            return logits[:, -1].unflatten(-1, (self.data.horizon, -1))  # (N, H, F)
        return logits

    def forecasts(self, model, batch) -> dict[str, torch.Tensor]:
        """History (N, W, F), truth, model and seasonal-naive forecasts (N, H, F), original units."""
        from seqlab.data.series import seasonal_naive

        out = model(batch["inputs"], targets=batch["targets"])
        shift, scale = batch["shift"][:, None].cpu(), batch["scale"][:, None].cpu()  # (N, 1, F)
        base = batch["base"].cpu()  # (N, H, F)
        history = self.scaler.inverse(batch["inputs"].float().cpu() * scale + shift)  # (N, W, F)
        truth = self.scaler.inverse(self._forecast(batch["targets"]).cpu() * scale + base)  # (N, H, F)
        forecast = self.scaler.inverse(self._forecast(out.logits.float()).cpu() * scale + base)  # (N, H, F)
        naive = seasonal_naive(history, self.data.horizon, self.season)  # (N, H, F)
        return {"loss": out.loss, "history": history, "truth": truth, "forecast": forecast, "naive": naive}

    def batch_metrics(self, model, batch):
        from seqlab.data.series import smape_terms

        f = self.forecasts(model, batch)
        per_item = f["truth"][0].numel()  # H·F values per window
        truth = f["truth"]
        return {
            "loss": float(f["loss"]) * truth.size(0),
            "mae": float((f["forecast"] - truth).abs().sum()) / per_item,
            "smape": float(smape_terms(f["forecast"], truth).sum()) / per_item,
            "naive_mae": float((f["naive"] - truth).abs().sum()) / per_item,
            "naive_smape": float(smape_terms(f["naive"], truth).sum()) / per_item,
        }

    def predict(self, model, inputs, device):
        """Each input: the recent values, oldest first (`a,b;c,d` for several columns: steps
        separated by `;`). Prints the next H values in the original units, steps separated by
        `;` when there are several columns. The Transformer reads the last data.window values
        and needs that many; the recurrent model reads them all."""
        from seqlab.data.readers import DataError
        from seqlab.data.series import seasonal_naive

        features = len(self.column_names)
        w = self.data.window
        lines = []
        model.eval()
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
            if self.model_config.family == "transformer":
                if series.size(0) < w:
                    raise DataError(f"predict input {text!r}: the Transformer reads a window of "
                                    f"data.window={w} values; give at least {w}, got {series.size(0)}")
                series = series[-w:]
            x = self.scaler.transform(series)  # (T, F)
            shift = x[-1] if self.data.level == "last" else torch.zeros(features)  # (F,)
            scale = torch.ones(features)  # (F,)
            if self.data.level == "window":
                shift, scale = x.mean(0), (x.std(0) if x.size(0) > 1 else scale).clamp_min(1e-2)
            if self.data.level == "season":
                if x.size(0) < self.season:
                    raise DataError(f"predict input {text!r}: data.level=season needs at least "
                                    f"{self.season} values (one season), got {x.size(0)}")
                base = seasonal_naive(x, self.data.horizon, self.season)  # (H, F)
            else:
                base = shift.expand(self.data.horizon, features)  # (H, F)
            logits = model(((x - shift) / scale).unsqueeze(0).to(device)).logits.float().cpu()
            forecast = self.scaler.inverse(self._forecast(logits)[0] * scale + base)  # (H, F)
            lines.append("; ".join(" ".join(f"{v:.4f}" for v in step) for step in forecast.tolist())
                         if features > 1 else " ".join(f"{v:.4f}" for v in forecast[:, 0].tolist()))
        return lines

    @torch.no_grad()
    def report(self, model, device):
        """The forecast-vs-truth plot of the last split (`plots/forecast.png`) and its errors."""
        from seqlab.viz.forecast import plot_forecast

        split = "test" if "test" in self.tensors else "valid"
        model.eval()
        batch = {k: v.to(device) for k, v in self._slice(self.tensors[split], slice(None)).items()}
        f = self.forecasts(model, batch)
        model_mae, naive_mae = (float((f[k] - f["truth"]).abs().mean()) for k in ("forecast", "naive"))
        lines = [f"{split}: MAE {model_mae:.4g} (seasonal-naive, m={self.season}: {naive_mae:.4g})"]
        if self.run_dir is not None:
            path = plot_forecast(
                self.series[:, 0], f["forecast"][:, :, 0], f["naive"][:, :, 0],
                first_target=self.origins[split][0],
                path=self.run_dir / "plots" / "forecast.png",
                title=f"{self.corpus} ({self.column_names[0]}), {split}: {self.data.horizon}-step forecasts",
            )
            lines.append(f"forecast plot: {path}")
        return lines
