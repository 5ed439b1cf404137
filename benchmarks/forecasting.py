"""Forecasting real series: a Transformer and a GRU against the seasonal-naive baseline.

For each bundled series (statsmodels' yearly sunspots and monthly Mauna Loa CO₂) it trains the
`forecast-transformer` and `forecast-gru` recipes with the same window, horizon and splits, and
reports MAE / sMAPE on the test tail in the series' units beside the seasonal-naive forecast
from the same windows, with parameters and training time.

    python benchmarks/forecasting.py [--series co2 sunspots] [--families transformer gru]

Writes `forecasting.json` and `forecasting.md` to --out (default runs/forecasting).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from recurrent import device_name

from seqlab.train import load_config, train

# Window W, horizon H per series: four years of months ahead by one year; four solar cycles
# ahead by one cycle. The sunspot series is short (217 training years): smaller batches, more
# epochs; its test cycles are larger than any in the training years, so each window is
# standardised by its own mean and deviation (data.level=window).
SERIES = {
    "co2": ["data.corpus=co2", "data.frequency=monthly", "data.window=48", "data.horizon=12"],
    "sunspots": ["data.corpus=sunspots", "data.window=44", "data.horizon=11", "data.level=window",
                 "trainer.batch_size=16", "trainer.epochs=40", "trainer.early_stopping_patience=10"],
}
FAMILIES = {
    "transformer": ("forecast-transformer", []),
    "gru": ("forecast-gru", ["data.level=last", "data.stride=1", "trainer.epochs=20",
                             "trainer.early_stopping_patience=5"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", nargs="+", default=list(SERIES), choices=list(SERIES))
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=4.5, help="training time limit per model")
    parser.add_argument("--out", type=Path, default=Path("runs/forecasting"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for series in args.series:
        for family in args.families:
            recipe, extra = FAMILIES[family]
            overrides = extra + SERIES[series] + [f"trainer.seed={args.seed}", "trainer.progress=false",
                                                  f"trainer.num_threads={args.threads}",
                                                  f"trainer.max_time_minutes={args.minutes}"]
            config = load_config(recipe, overrides)
            run_dir = args.out / f"{series}-{family}"
            shutil.rmtree(run_dir, ignore_errors=True)
            result = train(config, run_dir)
            test, run = result.summary["test"], result.summary["run"]
            row = {"series": series, "model": family, "recipe": recipe, "overrides": overrides,
                   "parameters": run["num_parameters"], "seconds": run["elapsed_seconds"],
                   "epochs": run["epochs"], **{k: test[k] for k in ("mae", "smape", "naive_mae", "naive_smape")}}
            results.append(row)
            print(json.dumps(row), flush=True)
    (args.out / "forecasting.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [f"device: {device_name(torch.device('cpu'))}", "",
             "| series | model | params | train time | test MAE | test sMAPE % | seasonal-naive MAE | seasonal-naive sMAPE % |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['series']} | {r['model']} | {r['parameters']:,} | {r['seconds']:.0f} s | "
                     f"{r['mae']:.3f} | {r['smape']:.2f} | {r['naive_mae']:.3f} | {r['naive_smape']:.2f} |")
    (args.out / "forecasting.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
