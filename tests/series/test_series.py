"""Forecasting: metrics and the seasonal-naive baseline against hand-computed cases, train-only
scaling, windows, the bundled series, bad CSV columns, and the Transformer forecaster."""

import pytest
import torch
import torch.nn.functional as F

from seqlab.data.readers import DataError
from seqlab.data.series import (
    Standardizer,
    forecast_origins,
    load_builtin_series,
    mae,
    seasonal_naive,
    smape,
)
from seqlab.models.forecaster import TransformerForecaster
from seqlab.models.outputs import TaggerOutput
from seqlab.train.config import load_config
from seqlab.train.run import build_task


def test_mae_and_smape_by_hand():
    truth = torch.tensor([1.0, 2.0, 0.0, 4.0])
    forecast = torch.tensor([2.0, 2.0, 0.0, 2.0])
    assert mae(forecast, truth) == pytest.approx((1 + 0 + 0 + 2) / 4)
    # 2|y−ŷ|/(|y|+|ŷ|): 2/3, 0, 0 (y = ŷ = 0 counts 0), 4/6; mean × 100.
    assert smape(forecast, truth) == pytest.approx(100 * (2 / 3 + 0 + 0 + 4 / 6) / 4)
    assert smape(torch.tensor([1.0]), torch.tensor([0.0])) == pytest.approx(200.0)
    assert smape(torch.tensor([-1.0]), torch.tensor([1.0])) == pytest.approx(200.0)


def test_seasonal_naive_repeats_the_last_season():
    history = torch.arange(1.0, 25.0)[:, None]  # y_t = 24 at the origin, y_{t-1} = 23, ...
    # m = 3: ŷ_{t+h} = y_{t+h−3⌈h/3⌉}: h=1 → y_{t−2} = 22, h=2 → 23, h=3 → 24, h=4 → 22, ...
    assert seasonal_naive(history, 7, 3)[:, 0].tolist() == [22, 23, 24, 22, 23, 24, 22]
    assert seasonal_naive(history, 3, 1)[:, 0].tolist() == [24, 24, 24]  # naive: no change
    assert seasonal_naive(history, 2, 24)[:, 0].tolist() == [1, 2]
    batch = torch.stack([history, 10 * history])  # (2, W, 1): leading dimensions pass through
    assert seasonal_naive(batch, 2, 12)[1, :, 0].tolist() == [130, 140]
    with pytest.raises(ValueError, match="season=25 needs at least 25 past values"):
        seasonal_naive(history, 2, 25)


def test_forecast_origins_keep_targets_inside_the_split():
    # Window 3, horizon 2 in [5, 10): first targets at s = 5..8, i.e. y[s : s+2] within [5, 10).
    assert forecast_origins(5, 10, 3, 2) == [5, 6, 7, 8]
    assert forecast_origins(0, 10, 4, 2, stride=2) == [4, 6, 8]
    assert forecast_origins(0, 4, 4, 1) == []


def test_standardizer_uses_the_training_part_only():
    train = torch.tensor([[1.0], [2.0], [3.0], [6.0]])
    scaler = Standardizer.fit(train)
    assert scaler.mean.item() == pytest.approx(3.0)
    assert scaler.std.item() == pytest.approx(((4 + 1 + 0 + 9) / 3) ** 0.5)  # unbiased, as torch.std
    assert torch.allclose(scaler.inverse(scaler.transform(torch.tensor([[10.0]]))), torch.tensor([[10.0]]))
    assert Standardizer.fit(torch.ones(5, 1)).std.item() == 1.0  # a constant column is left unscaled


def write_series(path, values, extra=""):
    lines = [f"date,load{',' + extra if extra else ''}"]
    for i, value in enumerate(values):
        lines.append(f"2020-01-{i % 28 + 1:02d},{value}{',x' + str(i) if extra else ''}")
    path.write_text("\n".join(lines) + "\n")
    return path


def forecast_task(overrides):
    return build_task(load_config("forecast-gru", ["model.hidden_size=4"] + overrides))


def test_test_values_do_not_change_the_scaler(tmp_path):
    values = [float((i * 7) % 11) for i in range(100)]
    changed = values[:85] + [1000.0 + v for v in values[85:]]  # only the test tail differs
    tasks = []
    for name, series in (("a.csv", values), ("b.csv", changed)):
        task = forecast_task([f"data.train={write_series(tmp_path / name, series)}", "data.window=5",
                              "data.valid_fraction=0.15", "data.test_fraction=0.15"])
        task.prepare()
        tasks.append(task)
    train_part = torch.tensor(values[:70])
    for task in tasks:
        assert task.scaler.mean.item() == pytest.approx(float(train_part.mean()))
        assert task.scaler.std.item() == pytest.approx(float(train_part.std()))
    assert torch.equal(tasks[0].tensors["train"][0], tasks[1].tensors["train"][0])
    assert not torch.equal(tasks[0].tensors["test"][1], tasks[1].tensors["test"][1])


def test_a_text_column_is_a_clear_error(tmp_path):
    path = write_series(tmp_path / "s.csv", [1.0, 2.0, 3.0], extra="note")
    task = forecast_task([f"data.train={path}", "data.columns=[note]"])
    with pytest.raises(DataError, match=r"column 'note': 'x0' is not a number"):
        task.prepare()


def test_windows_targets_and_level(tmp_path):
    values = [float(i * i) for i in range(60)]
    path = write_series(tmp_path / "s.csv", values)
    base = [f"data.train={path}", "data.window=4", "data.horizon=3", "data.stride=1"]
    task = forecast_task(base)
    task.prepare()
    x, y = task.tensors["train"]
    series = task.scaler.transform(torch.tensor(values)[:, None])  # (T, 1)
    # The first window starts at 0; every step j predicts the next three values.
    assert torch.allclose(x[0, :, 0], series[0:4, 0])
    assert torch.allclose(y[0, 1], series[2:5, 0]) and torch.allclose(y[0, -1], series[4:7, 0])
    task = build_task(load_config("forecast-transformer", base + [
        "data.corpus=csv", "data.level=last", "model.d_model=8", "model.nhead=2", "model.num_layers=1"]))
    task.prepare()
    x, y, shift, base, _ = task.tensors["valid"]
    first = task.origins["valid"][0]
    assert torch.allclose(shift[0], series[first - 1]) and torch.allclose(base[0], series[first - 1].expand(3, 1))
    assert torch.allclose(x[0, :, 0] + shift[0], series[first - 4:first, 0])
    assert torch.allclose(y[0, :, 0] + shift[0], series[first:first + 3, 0])  # (H, F) after the window


def test_seasonal_level_targets_are_seasonal_differences(tmp_path):
    values = [float(i * i % 17) for i in range(80)]
    path = write_series(tmp_path / "s.csv", values)
    # Season 2, horizon 3: y_{t+1} − y_{t−1}, y_{t+2} − y_t, y_{t+3} − y_{t+1}.
    common = [f"data.train={path}", "data.window=4", "data.horizon=3", "data.season=2", "data.level=season"]
    task = forecast_task(common + ["data.stride=1"])
    task.prepare()
    series = task.scaler.transform(torch.tensor(values)[:, None])[:, 0]  # (T,)
    x, y = task.tensors["train"]
    s = task.origins["train"][0]
    assert s == 4 + 1  # the first step's differences reach one step (m − 1) before the window
    assert torch.allclose(x[0, :, 0], series[s - 4:s])
    first_step = s - 4  # its next three values, less the values m·⌈h/m⌉ = 2, 2, 4 steps before them
    expected = torch.stack([series[first_step + h] - series[first_step + h - lag] for h, lag in ((1, 2), (2, 2), (3, 4))])
    assert torch.allclose(y[0, 0], expected)
    _, y, shift, base, _ = task.tensors["test"]
    s = task.origins["test"][0]
    assert torch.equal(shift, torch.zeros_like(shift))
    assert torch.allclose(base[0, :, 0], series[[s - 2, s - 1, s - 2]])  # the seasonal-naive forecast


class LastValue(torch.nn.Module):
    """Predicts zero change: with data.level=last that is the naive forecast ŷ_{t+h} = y_t."""

    def __init__(self, horizon):
        super().__init__()
        self.horizon = horizon

    def forward(self, inputs, targets=None):
        forecast = torch.zeros(inputs.size(0), self.horizon, inputs.size(2))
        loss = F.mse_loss(forecast, targets) if targets is not None else None
        return TaggerOutput(logits=forecast, loss=loss)


def test_metrics_are_in_original_units(tmp_path):
    values = [float(i % 5) + 0.1 * i for i in range(80)]
    path = write_series(tmp_path / "s.csv", values)
    task = build_task(load_config("forecast-transformer", [
        f"data.train={path}", "data.corpus=csv", "data.window=6", "data.horizon=2", "data.season=1",
        "data.level=last", "model.d_model=8", "model.nhead=2", "model.num_layers=1"]))
    task.prepare()
    metrics = task.evaluate(LastValue(2), "test", batch_size=3, device=torch.device("cpu"))
    # By hand: every test origin s forecasts y[s-1] for y[s] and y[s+1].
    y = torch.tensor(values)
    errors = torch.tensor([[abs(y[s + h] - y[s - 1]) for h in (0, 1)] for s in task.origins["test"]])
    assert metrics["mae"] == pytest.approx(float(errors.mean()), rel=1e-5)
    assert metrics["naive_mae"] == pytest.approx(metrics["mae"], rel=1e-5)
    assert metrics["smape"] == pytest.approx(metrics["naive_smape"], rel=1e-5)


def test_window_shorter_than_the_season_is_refused():
    from seqlab.schema import ConfigError

    task = forecast_task(["data.window=8", "data.season=12"])
    with pytest.raises(ConfigError, match="data.window=8 is shorter than the season m=12"):
        task.prepare()


def test_transformer_forecaster_loss_is_the_mse_of_the_forecast():
    torch.manual_seed(0)
    model = TransformerForecaster(2, horizon=3, d_model=8, nhead=2, num_layers=1, max_length=5).eval()
    inputs, targets = torch.randn(4, 5, 2), torch.randn(4, 3, 2)
    with torch.no_grad():
        out = model(inputs, targets=targets)
    assert out.logits.shape == (4, 3, 2)
    assert out.loss.item() == pytest.approx(float(((out.logits - targets) ** 2).mean()), rel=1e-6)
    # The forecast reads the last step's vector: it is the head applied to hidden[:, -1].
    expected = model.head(out.hidden[:, -1]).view(4, 3, 2)
    assert torch.allclose(out.logits, expected)
    with pytest.raises(ValueError, match="exceeds max_length=5"):
        model(torch.randn(1, 6, 2))


def test_bundled_series():
    pytest.importorskip("statsmodels", reason="the bundled series need statsmodels (seqlab[series])")
    sunspots, names = load_builtin_series("sunspots")
    assert sunspots.shape == (309, 1) and names == ["SUNACTIVITY"]
    assert sunspots[:3, 0].tolist() == [5.0, 11.0, 16.0]  # 1700, 1701, 1702
    monthly, _ = load_builtin_series("co2")
    weekly, _ = load_builtin_series("co2", frequency="weekly")
    assert monthly.shape == (526, 1) and weekly.shape == (2284, 1)
    assert not monthly.isnan().any() and not weekly.isnan().any()
    # 1958-04 has weekly readings 317.3, 317.6, 317.5, 316.4 (the 5th of April to the 26th).
    assert monthly[1, 0].item() == pytest.approx((317.3 + 317.6 + 317.5 + 316.4) / 4, abs=1e-4)


def test_window_level_standardises_each_window(tmp_path):
    values = [float(i % 7) * (1 + i / 20) for i in range(90)]
    path = write_series(tmp_path / "s.csv", values)
    task = build_task(load_config("forecast-transformer", [
        f"data.train={path}", "data.corpus=csv", "data.window=8", "data.horizon=2", "data.season=1",
        "data.level=window", "model.d_model=8", "model.nhead=2", "model.num_layers=1"]))
    task.prepare()
    x, y, shift, base, scale = task.tensors["test"]
    assert torch.allclose(x.mean(1), torch.zeros_like(shift), atol=1e-5)
    assert torch.allclose(x.std(1), torch.ones_like(scale), atol=1e-5)
    series = task.scaler.transform(torch.tensor(values)[:, None])  # (T, 1)
    s = task.origins["test"][0]
    window = series[s - 8:s]
    assert torch.allclose(shift[0], window.mean(0)) and torch.allclose(scale[0], window.std(0))
    assert torch.allclose(y[0] * scale[0] + base[0], series[s:s + 2], atol=1e-5)


@pytest.mark.parametrize("level", ["none", "last", "window", "season"])
def test_predict_matches_the_evaluated_forecast(tmp_path, level):
    values = [float(i % 6) * (1 + i / 30) for i in range(90)]
    path = write_series(tmp_path / "s.csv", values)
    task = build_task(load_config("forecast-transformer", [
        f"data.train={path}", "data.corpus=csv", "data.window=8", "data.horizon=3", "data.season=4",
        f"data.level={level}", "model.d_model=8", "model.nhead=2", "model.num_layers=1"]))
    task.prepare()
    torch.manual_seed(0)
    model = task.build_model().eval()
    s = task.origins["test"][0]
    with torch.no_grad():
        batch = task._slice(task.tensors["test"], slice(0, 1))
        expected = task.forecasts(model, batch)["forecast"][0, :, 0]  # (H,)
        [line] = task.predict(model, [" ".join(str(v) for v in values[s - 8:s])], torch.device("cpu"))
    assert [float(v) for v in line.split()] == pytest.approx(expected.tolist(), abs=1e-3)
