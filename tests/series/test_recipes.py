"""The forecasting recipes end to end on tiny data: train, evaluate, predict, plot."""

import json

import pytest

from seqlab.train.config import load_config
from seqlab.train.run import evaluate_run, predict_run, train

TRAINER = ["trainer.max_steps=3", "trainer.progress=false", "trainer.batch_size=8", "trainer.num_threads=1"]
SINES = ["data.corpus=sines", "data.synthetic_length=240", "data.window=12", "data.horizon=4"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe,model", [
    ("forecast-transformer", ["model.d_model=8", "model.nhead=2", "model.num_layers=1"]),
    ("forecast-gru", ["model.hidden_size=4", "data.level=last"]),
])
def test_forecast_recipe_end_to_end(tmp_path, recipe, model):
    run_dir = tmp_path / "run"
    result = train(load_config(recipe, SINES + model + TRAINER), run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["test"]) == {"loss", "mae", "smape", "naive_mae", "naive_smape"}
    assert evaluate_run(run_dir)["test"] == pytest.approx(summary["test"], rel=1e-6)
    assert (run_dir / "plots" / "forecast.png").stat().st_size > 1000
    assert any("seasonal-naive" in line for line in result.report)
    history = " ".join(f"{0.1 * i:.1f}" for i in range(12))
    [line] = predict_run(run_dir, [history])
    assert len(line.split()) == 4  # H = 4 values


@pytest.mark.slow
def test_transformer_predict_needs_a_full_window(tmp_path):
    from seqlab.data.readers import DataError

    run_dir = tmp_path / "run"
    train(load_config("forecast-transformer", SINES + ["model.d_model=8", "model.nhead=2", "model.num_layers=1"]
                      + TRAINER), run_dir)
    with pytest.raises(DataError, match="give at least 12, got 3"):
        predict_run(run_dir, ["1 2 3"])
