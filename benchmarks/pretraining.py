"""Does pre-training pay when labels are few? Fine-tune from scratch and from a pre-trained run.

For each labelled set (MR, TREC, ... as `sentence<TAB>label` TSV with train / valid / test) and
each share of its training labels (a seeded subset), two classifiers of the same architecture
train with the same budget (steps, and a small grid of learning rates of which the best on the
validation split counts): one from scratch (its own word vocabulary, as a new user would),
one from the pre-trained run (`model.init_from`, its WordPiece vocabulary). Both keep the
weights that score best on the whole validation split and are scored on the test split.

    python benchmarks/pretraining.py --transformer RUN_DIR --recurrent RUN_DIR \
        --data ../shared/data/sentences --sets mr trec --fractions 0.1 0.3 1.0 --steps 400

Writes `results.json`, `table.md` and `accuracy-vs-labels.png` to --out. Runs two trainings at
once, one thread each (--workers).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

RECIPES = {"transformer": "bert-classify", "recurrent": "classify-bilstm"}
SIZE_KEYS = {
    "transformer": ("d_model", "nhead", "num_layers", "dim_feedforward", "activation",
                    "positional", "max_length", "norm_first"),
    "recurrent": ("cell", "hidden_size", "embedding_dim", "num_layers", "bidirectional",
                  "merge_mode"),
}


def subset(source: Path, fraction: float, seed: int, out: Path) -> Path:
    lines = source.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    keep = sorted(random.Random(seed).sample(range(len(rows)), max(1, round(len(rows) * fraction))))
    out.write_text("\n".join([header] + [rows[i] for i in keep]) + "\n", encoding="utf-8")
    return out


def architecture(run: Path, family: str) -> list[str]:
    """The pre-trained run's sizes as overrides, so the scratch model is the same network."""
    model = yaml.safe_load((run / "config.yaml").read_text())["model"]
    sizes = model.get(family, model)
    return [f"model.{k}={sizes[k]}" for k in SIZE_KEYS[family]
            if k in sizes and sizes[k] is not None]


def train(args, family, start, data_set, fraction, train_file, out, lr) -> dict:
    run_dir = out / "runs" / f"{data_set}-{fraction}-{family}-{start}-lr{lr:g}"
    folder = args.data / data_set
    overrides = [
        f"data.train={train_file}", f"data.valid={folder / 'valid.tsv'}",
        f"data.test={folder / 'test.tsv'}", "data.text_column=sentence",
        f"data.max_length={args.max_length}", f"trainer.max_steps={args.steps}",
        f"trainer.eval_every={args.eval_every}", "trainer.epochs=1000",
        "trainer.early_stopping_patience=null", "trainer.num_threads=1",
        "trainer.progress=false", f"trainer.seed={args.seed}", f"trainer.warmup_steps={args.warmup}",
        f"trainer.lr={lr}",
    ]
    pretrained = args.transformer if family == "transformer" else args.recurrent
    if start == "pretrained":
        overrides.append(f"model.init_from={pretrained}")
        overrides += args.pretrained_set
    else:
        overrides += architecture(pretrained, family)
    command = [sys.executable, "-m", "seqlab", "train", RECIPES[family], *overrides,
               "--run-dir", str(run_dir)]
    began = time.time()
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}\n{result.stderr[-2000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "set": data_set, "fraction": fraction, "family": family, "start": start, "lr": lr,
        "train_examples": sum(1 for _ in open(train_file)) - 1,
        "valid_accuracy": summary["valid"]["accuracy"], "test_accuracy": summary["test"]["accuracy"],
        "steps": summary["run"]["steps"], "best_step": summary["run"]["best_step"],
        "seconds": round(time.time() - began, 1), "command": " ".join(command[2:]),
    }


def best_by_validation(results: list[dict]) -> list[dict]:
    """Of the runs that differ only in learning rate, the one with the best validation accuracy."""
    best: dict[tuple, dict] = {}
    for r in results:
        key = (r["set"], r["fraction"], r["family"], r["start"])
        if key not in best or r["valid_accuracy"] > best[key]["valid_accuracy"]:
            best[key] = r
    return list(best.values())


def table(results: list[dict]) -> str:
    lines = ["| set | labels | family | scratch | pre-trained | gain | lr (scratch / pre-trained) |",
             "|---|---:|---|---:|---:|---:|---|"]
    key = {(r["set"], r["fraction"], r["family"], r["start"]): r for r in results}
    for data_set, fraction, family in sorted({(r["set"], r["fraction"], r["family"]) for r in results}):
        scratch = key.get((data_set, fraction, family, "scratch"))
        warm = key.get((data_set, fraction, family, "pretrained"))
        if not scratch or not warm:
            continue
        gain = 100 * (warm["test_accuracy"] - scratch["test_accuracy"])
        lines.append(
            f"| {data_set} | {int(100 * fraction)} % ({scratch['train_examples']}) | {family} | "
            f"{100 * scratch['test_accuracy']:.1f} | {100 * warm['test_accuracy']:.1f} | "
            f"{gain:+.1f} | {scratch['lr']:g} / {warm['lr']:g} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted({r["set"] for r in results})
    figure, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 3.6), squeeze=False)
    for axis, data_set in zip(axes[0], sets):
        for family in ("transformer", "recurrent"):
            for start, style in (("scratch", "--"), ("pretrained", "-")):
                points = sorted((r["fraction"], r["test_accuracy"]) for r in results
                                if r["set"] == data_set and r["family"] == family
                                and r["start"] == start)
                if points:
                    axis.plot([100 * f for f, _ in points], [100 * a for _, a in points], style,
                              marker="o", label=f"{family}, {start}")
        axis.set_xscale("log")
        axis.set_xticks([10, 30, 100], ["10 %", "30 %", "100 %"])
        axis.set_xlabel("share of the training labels")
        axis.set_ylabel("test accuracy (%)")
        axis.set_title(data_set.upper())
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transformer", type=Path, required=True, help="pre-trained Transformer run")
    parser.add_argument("--recurrent", type=Path, required=True, help="pre-trained recurrent run")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sentences"))
    parser.add_argument("--sets", nargs="+", default=["mr", "trec"])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.1, 0.3, 1.0])
    parser.add_argument("--families", nargs="+", default=["transformer", "recurrent"])
    parser.add_argument("--starts", nargs="+", default=["scratch", "pretrained"],
                        choices=["scratch", "pretrained"])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lrs", nargs="+", type=float, default=[5e-4, 2e-3],
                        help="learning rates tried for every run; the best on validation counts")
    parser.add_argument("--warmup", type=int, default=0,
                        help="warm-up steps of every fine-tuning (a linear rise to the rate)")
    parser.add_argument("--pretrained-set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="more settings of the pre-trained runs' fine-tuning, e.g. tune.method=lora "
                             "or trainer.layer_lr_decay=0.7")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/pretraining-benchmark"))
    args = parser.parse_args()
    for data_set in args.sets:
        if not (args.data / data_set / "train.tsv").is_file():
            sys.exit(f"{args.data / data_set} has no train.tsv: point --data at the sentence sets "
                     f"(../shared/data/sentences)")
    (args.out / "data").mkdir(parents=True, exist_ok=True)
    jobs = []
    for data_set in args.sets:
        for fraction in args.fractions:
            train_file = subset(args.data / data_set / "train.tsv", fraction, args.seed,
                                args.out / "data" / f"{data_set}-{fraction}.tsv")
            for family in args.families:
                for start in args.starts:
                    for lr in args.lrs:
                        jobs.append((family, start, data_set, fraction, train_file, args.out, lr))
    results = []
    with ThreadPoolExecutor(args.workers) as pool:
        for result in pool.map(lambda job: train(args, *job), jobs):
            results.append(result)
            print(json.dumps(result), flush=True)
    machine = f"{platform.processor() or platform.machine()}, {args.workers} trainings at once"
    (args.out / "results.json").write_text(json.dumps({"machine": machine, "results": results},
                                                      indent=1))
    chosen = best_by_validation(results)
    (args.out / "table.md").write_text(table(chosen))
    plot(chosen, args.out / "accuracy-vs-labels.png")
    print(table(chosen))


if __name__ == "__main__":
    main()
