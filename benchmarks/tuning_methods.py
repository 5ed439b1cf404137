"""What each tuning method costs and gives: one table per pre-trained model.

For a pre-trained run (masked LM, Transformer or BiLSTM), fine-tune a classifier on one labelled
set (MR by default) with the same step budget by every method: full fine-tuning, LoRA at two
ranks, bottleneck adapters in both placements, prefix tuning, prompt tuning, and the head alone
(``trainer.freeze=body``). Each row: trainable parameters (count and % of the model), test
accuracy of the final weights, seconds per training step (evaluation excluded), peak resident
memory of the training process, and the size of what the run saves (``adapter.safetensors``;
``model.safetensors`` for full / head only).

    python benchmarks/tuning_methods.py --transformer RUN_DIR --recurrent RUN_DIR \\
        --data ../shared/data/sentences/mr --steps 150

Each training is its own process (``seqlab train``) on one thread (``trainer.num_threads=1``),
one after the other. Writes ``results.json`` and ``table.md`` to --out and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

RECIPES = {"transformer": "bert-classify", "recurrent": "classify-bilstm"}
# (row name, overrides, learning rate); None: the recipe's own rate. Methods that train few
# numbers from a frozen model take larger steps (PEFT's examples: LoRA 1e-3 .. 2e-3, prompt
# and prefix tuning 1e-2 and more).
METHODS = [
    ("full", [], None),
    ("LoRA r=4", ["tune.method=lora", "tune.r=4", "tune.alpha=8"], 2e-3),
    ("LoRA r=16", ["tune.method=lora", "tune.r=16", "tune.alpha=32"], 2e-3),
    ("adapter houlsby", ["tune.method=adapter", "tune.placement=houlsby"], 2e-3),
    ("adapter pfeiffer", ["tune.method=adapter", "tune.placement=pfeiffer"], 2e-3),
    ("prefix", ["tune.method=prefix", "tune.num_virtual_tokens=10"], 1e-2),
    ("prompt", ["tune.method=prompt", "tune.num_virtual_tokens=10"], 1e-2),
    ("head only", ["trainer.freeze=body"], 2e-3),
]
# Peak resident memory of the process, printed by the wrapper below (kB on Linux).
RUNNER = (
    "import resource, sys\n"
    "from seqlab.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('peak-rss-kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def seconds_per_step(run_dir: Path) -> float:
    """Training seconds per step: the last training log line before the (only) evaluation."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [line for line in lines if line["split"] == "train"]
    return train[-1]["elapsed"] / train[-1]["step"]


def train(args, family: str, name: str, overrides: list[str], lr: float | None) -> dict:
    run_dir = args.out / "runs" / f"{family}-{name.replace(' ', '-').replace('=', '')}"
    data = args.data
    command = [
        sys.executable, "-c", RUNNER, "train", RECIPES[family],
        f"model.init_from={args.transformer if family == 'transformer' else args.recurrent}",
        f"data.train={data / 'train.tsv'}", f"data.valid={data / 'valid.tsv'}",
        f"data.test={data / 'test.tsv'}", f"data.text_column={args.text_column}",
        f"trainer.max_steps={args.steps}", f"trainer.batch_size={args.batch_size}",
        f"trainer.eval_every={args.steps}", f"trainer.log_every={args.steps}",
        "trainer.epochs=1000", "trainer.early_stopping_patience=null", "trainer.warmup_steps=0",
        "trainer.num_threads=1", "trainer.progress=false", f"trainer.seed={args.seed}",
        *overrides, *([f"trainer.lr={lr}"] if lr else []), "--run-dir", str(run_dir),
    ]
    began = time.time()
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[3:])}\n{result.stderr[-2000:]}")
    peak = max(int(line.split()[1]) for line in result.stderr.splitlines()
               if line.startswith("peak-rss-kb"))
    summary = json.loads((run_dir / "summary.json").read_text())
    saved = run_dir / ("adapter.safetensors" if (run_dir / "adapter.json").is_file()
                       else "model.safetensors")
    return {
        "family": family, "method": name,
        "trainable": summary["run"]["trainable_parameters"],
        "total": summary["run"]["num_parameters"],
        "test_accuracy": summary["test"]["accuracy"],
        "valid_accuracy": summary["valid"]["accuracy"],
        "seconds_per_step": round(seconds_per_step(run_dir), 4),
        "peak_rss_mb": round(peak / 1024, 1),
        "saved_file": saved.name, "saved_bytes": saved.stat().st_size,
        "lr": lr, "steps": summary["run"]["steps"],
        "wall_seconds": round(time.time() - began, 1),
        "command": "seqlab " + " ".join(command[3:]),
    }


def _size(count: int) -> str:
    return f"{count / 1e6:.2f} MB" if count >= 1e6 else f"{count / 1e3:.1f} kB"


def table(results: list[dict], family: str) -> str:
    rows = [r for r in results if r["family"] == family]
    full = next((r for r in rows if r["method"] == "full"), None)
    lines = [
        "| method | trainable | % | test acc. | s / step | vs full | peak RSS | saved |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['seconds_per_step'] / full['seconds_per_step']:.2f}x" if full else ""
        lines.append(
            f"| {r['method']} | {r['trainable']:,} | {100 * r['trainable'] / r['total']:.2f} | "
            f"{100 * r['test_accuracy']:.1f} | {r['seconds_per_step']:.3f} | {ratio} | "
            f"{r['peak_rss_mb']:.0f} MB | {_size(r['saved_bytes'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transformer", type=Path, help="pre-trained Transformer run")
    parser.add_argument("--recurrent", type=Path, help="pre-trained recurrent run")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sentences/mr"),
                        help="a folder with train.tsv, valid.tsv, test.tsv")
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--methods", nargs="+", help="row names to run (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/tuning-benchmark"))
    args = parser.parse_args()
    families = [f for f in ("transformer", "recurrent") if getattr(args, f) is not None]
    if not families:
        parser.error("give --transformer RUN_DIR and / or --recurrent RUN_DIR")
    if not (args.data / "train.tsv").is_file():
        sys.exit(f"{args.data} has no train.tsv: point --data at a labelled set "
                 f"(../shared/data/sentences/mr)")
    if args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"{args.out} exists and is not empty; pick another --out")
    methods = [m for m in METHODS if not args.methods or m[0] in args.methods]
    results, began = [], time.time()
    for family in families:
        for name, overrides, lr in methods:
            result = train(args, family, name, overrides, lr)
            results.append(result)
            print(json.dumps(result), flush=True)
    machine = f"{platform.machine()} CPU, one thread per training, {time.time() - began:.0f} s in all"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"machine": machine, "steps": args.steps, "batch_size": args.batch_size,
         "data": str(args.data), "results": results}, indent=1))
    tables = "".join(f"\n{family} ({getattr(args, family)}):\n\n{table(results, family)}"
                     for family in families)
    (args.out / "table.md").write_text(tables)
    print(tables)
    print(machine)


if __name__ == "__main__":
    main()
