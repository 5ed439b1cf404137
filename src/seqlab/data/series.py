"""Time series for forecasting: bundled real series, train-only scaling, windows and metrics.

Series a user has without a download come from `statsmodels`' bundled datasets (the `series`
extra): yearly sunspot numbers 1700–2008 and the Mauna Loa CO₂ record, weekly 1958–2001.
Any CSV column is read by :func:`seqlab.data.readers.read_series`.

Forecasting from an origin t (the last step seen) over a horizon of H steps, with the last W
values as input:

    x = (y_{t-W+1}, ..., y_t)        (W, F)   the window
    ŷ = (ŷ_{t+1}, ..., ŷ_{t+H})      (H, F)   the forecast, compared with y_{t+1..t+H}

The seasonal-naive forecast with season m repeats the last observed season,
ŷ_{t+h} = y_{t+h−m·⌈h/m⌉} for h = 1..H (m = 1 is the naive "no change" forecast).
Errors are reported in the series' own units:

    MAE   = 1/n Σ |y − ŷ|
    sMAPE = 100/n Σ 2 |y − ŷ| / (|y| + |ŷ|)   (a term with y = ŷ = 0 counts 0), in percent, 0..200

Shapes: N windows, W window length, H horizon, F series (columns), T series length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "BUILTIN_SERIES",
    "DEFAULT_SEASON",
    "Standardizer",
    "forecast_origins",
    "load_builtin_series",
    "mae",
    "seasonal_naive",
    "smape",
    "smape_terms",
]

BUILTIN_SERIES = ("sunspots", "co2")

# The season m of the seasonal-naive baseline: the ~11-year solar cycle for the yearly sunspot
# numbers, one year for CO₂ (12 months, or 52 weeks).
DEFAULT_SEASON = {"sunspots": 11, "co2-monthly": 12, "co2-weekly": 52}


def _statsmodels_datasets():
    from seqlab.data.readers import DataError

    try:
        from statsmodels import datasets
    except ImportError:
        raise DataError(
            "the bundled series (data.corpus=sunspots / co2) come from statsmodels, which is not "
            "installed; `pip install statsmodels` (or seqlab[series]), or give data.corpus=csv "
            "with data.train=PATH"
        ) from None
    return datasets


def load_builtin_series(name: str, frequency: str = "monthly") -> tuple[torch.Tensor, list[str]]:
    """A bundled real series as ``((T, 1) float32, [column name])``.

    ``sunspots``: yearly mean sunspot numbers 1700–2008 (T = 309; Wolfer / SIDC, statsmodels'
    ``sunspots``). ``co2``: atmospheric CO₂ at Mauna Loa in ppm, 1958-03 to 2001-12
    (statsmodels' ``co2``), weekly with 59 missing weeks; ``frequency="monthly"`` averages the
    weeks of each calendar month (T = 526, 5 months with no reading), ``"weekly"`` keeps the
    weeks (T = 2284). Missing values are filled by linear interpolation in time either way.
    """
    from seqlab.data.readers import DataError

    if name not in BUILTIN_SERIES:
        raise DataError(f"no bundled series {name!r}; choose one of {', '.join(BUILTIN_SERIES)}")
    datasets = _statsmodels_datasets()
    if name == "sunspots":
        frame = datasets.sunspots.load_pandas().data
        return torch.tensor(frame["SUNACTIVITY"].to_numpy(), dtype=torch.float32)[:, None], ["SUNACTIVITY"]
    if frequency not in ("monthly", "weekly"):
        raise DataError(f"data.frequency={frequency!r} is not one of: monthly, weekly")
    frame = datasets.co2.load_pandas().data
    if frequency == "monthly":
        frame = frame.resample("MS").mean()
    frame = frame.interpolate(method="time", limit_direction="both")
    return torch.tensor(frame["co2"].to_numpy(), dtype=torch.float32)[:, None], ["co2"]


@dataclass
class Standardizer:
    """z = (y − mean) / std per column, with mean and std taken from the training part only,
    so that nothing about the validation or test values reaches the model's inputs."""

    mean: torch.Tensor  # (F,)
    std: torch.Tensor  # (F,)

    @classmethod
    def fit(cls, train: torch.Tensor) -> Standardizer:
        """From the training part (T_train, F); a constant column gets std 1e-8 → 1 (no scaling)."""
        std = train.std(0)
        return cls(train.mean(0), torch.where(std > 1e-8, std, torch.ones_like(std)))

    def transform(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.mean) / self.std

    def inverse(self, scaled: torch.Tensor) -> torch.Tensor:
        return scaled * self.std + self.mean


def forecast_origins(start: int, end: int, window: int, horizon: int, stride: int = 1) -> list[int]:
    """Array indices s = t + 1 of the first forecast step, for every origin whose window
    y[s-W : s] lies in the series (s ≥ W) and whose targets y[s : s+H] lie in [start, end),
    every `stride` steps."""
    return list(range(max(start, window), end - horizon + 1, stride))


def seasonal_naive(history: torch.Tensor, horizon: int, season: int) -> torch.Tensor:
    """ŷ_{t+h} = y_{t+h−m·⌈h/m⌉}, h = 1..H, from the last `season` = m values of `history`.

    history (..., W, F) with W ≥ m, oldest first → forecast (..., H, F).
    """
    if season < 1 or history.size(-2) < season:
        raise ValueError(
            f"the seasonal-naive forecast with season={season} needs at least {season} past values, "
            f"got {history.size(-2)}; use a window of at least the season"
        )
    width = history.size(-2)
    steps = torch.arange(1, horizon + 1)  # h = 1..H
    # Index of y_{t+h-m*ceil(h/m)} in the window, whose last value y_{t-1} sits at width - 1.
    index = width - 1 + steps - season * torch.div(steps + season - 1, season, rounding_mode="floor")
    return history[..., index, :]  # (..., H, F)


def mae(prediction: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean absolute error over every element."""
    return float((prediction - truth).abs().mean())


def smape_terms(prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """200 |y − ŷ| / (|y| + |ŷ|) per element, 0 where y = ŷ = 0 (a perfect forecast of zero)."""
    denominator = truth.abs() + prediction.abs()
    terms = 200 * (prediction - truth).abs() / denominator.clamp_min(1e-12)
    return torch.where(denominator > 0, terms, torch.zeros_like(terms))


def smape(prediction: torch.Tensor, truth: torch.Tensor) -> float:
    """Symmetric mean absolute percentage error in percent (0..200), see the module docstring."""
    return float(smape_terms(prediction, truth).mean())
