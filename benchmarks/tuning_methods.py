"""What each tuning method costs and gives: one table per pre-trained model.

For a pre-trained run (masked LM, Transformer or BiLSTM), fine-tune a classifier on one labelled
set (MR by default) with the same step budget by every method: full fine-tuning, LoRA at two
ranks, bottleneck adapters in both placements, prefix tuning, prompt tuning, the head alone
(``trainer.freeze=body``), and LoRA that also updates the token embedding table. Each row:
trainable parameters (count and % of the model), test accuracy of the final weights, time per
training step (evaluation excluded; CPU time of the process, which other jobs on a shared
machine do not inflate, and wall time), peak resident memory of the training process, and the size of what the run saves (``adapter.safetensors``;
``model.safetensors`` for full / head only).

    python benchmarks/tuning_methods.py --transformer RUN_DIR --recurrent RUN_DIR \\
        --data ../shared/data/sentences/mr --steps 300

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

import yaml

RECIPES = {"transformer": "bert-classify", "recurrent": "classify-bilstm"}
EMBEDDING = "<the family's LoRA targets and its embedding table>"  # see EMBEDDING_TARGETS
# (row name, overrides, learning rate); None: the recipe's own rate. Methods that train few
# numbers from a frozen model take larger steps. The rates are the better one on the
# validation split of two tried on the recurrent model (300 steps): 2e-3 / 1e-2 for LoRA,
# adapters and the head, 1e-2 / 5e-2 for prefix and prompt tuning.
METHODS = [
    ("full", [], None),
    ("LoRA r=4", ["tune.method=lora", "tune.r=4", "tune.alpha=8"], 2e-3),
    ("LoRA r=16", ["tune.method=lora", "tune.r=16", "tune.alpha=32"], 2e-3),
    ("adapter houlsby", ["tune.method=adapter", "tune.placement=houlsby"], 1e-2),
    ("adapter pfeiffer", ["tune.method=adapter", "tune.placement=pfeiffer"], 1e-2),
    ("prefix", ["tune.method=prefix", "tune.num_virtual_tokens=10"], 1e-2),
    ("prompt", ["tune.method=prompt", "tune.num_virtual_tokens=10"], 1e-2),
    ("head only", ["trainer.freeze=body"], 1e-2),
    ("LoRA r=2 + embedding", ["tune.method=lora", "tune.r=2", "tune.alpha=4", EMBEDDING], 2e-3),
    ("LoRA r=4 + embedding", ["tune.method=lora", "tune.r=4", "tune.alpha=8", EMBEDDING], 2e-3),
]
# The last rows give the token embedding table a low-rank update too, on top of each family's
# default LoRA targets: the table is most of these small models' weights, and otherwise only
# full fine-tuning trains it.
EMBEDDING_TARGETS = {
    "transformer": "tune.targets=[in_proj_weight:q,in_proj_weight:v,embedding.token]",
    "recurrent": "tune.targets=[weight_ih_l*,weight_hh_l*,embedding]",
}
# The training process: `seqlab train`, timing each step from one call of the task's
# training_step to the next (forward, backward, optimizer step, next batch), in CPU seconds of
# the process (what the shared machine's other jobs do not change) and in wall seconds, and its
# peak resident memory (kB on Linux). TASK_CLASS is the task whose steps are timed.
TIMED_RUNNER = (
    "import resource, sys, time\n"
    "from {module} import {name} as TaskClass\n"
    "marks, step = [], TaskClass.training_step\n"
    "def timed(self, *args, **kwargs):\n"
    "    marks.append((time.process_time(), time.perf_counter()))\n"
    "    return step(self, *args, **kwargs)\n"
    "TaskClass.training_step = timed\n"
    "from seqlab.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "steps = max(len(marks) - 1, 1)\n"
    "print('step-seconds', (marks[-1][0] - marks[0][0]) / steps,\n"
    "      (marks[-1][1] - marks[0][1]) / steps, file=sys.stderr)\n"
    "print('peak-rss-kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)
RUNNER = TIMED_RUNNER.format(module="seqlab.tasks.classify", name="ClassifyTask")


def _reported(stderr: str, key: str) -> list[float]:
    line = next(line for line in stderr.splitlines() if line.startswith(key))
    return [float(value) for value in line.split()[1:]]


def train(args, family: str, name: str, overrides: list[str], lr: float | None) -> dict:
    run_dir = args.out / "runs" / f"{family}-{name.replace(' ', '-').replace('=', '')}-lr{lr}"
    overrides = [EMBEDDING_TARGETS[family] if item == EMBEDDING else item for item in overrides]
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
    peak = _reported(result.stderr, "peak-rss-kb")[0]
    cpu_step, wall_step = _reported(result.stderr, "step-seconds")
    summary = json.loads((run_dir / "summary.json").read_text())
    saved = run_dir / ("adapter.safetensors" if (run_dir / "adapter.json").is_file()
                       else "model.safetensors")
    return {
        "family": family, "method": name,
        "trainable": summary["run"]["trainable_parameters"],
        "total": summary["run"]["num_parameters"],
        "test_accuracy": summary["test"]["accuracy"],
        "valid_accuracy": summary["valid"]["accuracy"],
        "cpu_seconds_per_step": round(cpu_step, 4),
        "wall_seconds_per_step": round(wall_step, 4),
        "peak_rss_mb": round(peak / 1024, 1),
        "saved_file": saved.name, "saved_bytes": saved.stat().st_size,
        "lr": lr, "recipe_lr": yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["lr"],
        "steps": summary["run"]["steps"],
        "wall_seconds": round(time.time() - began, 1),
        "command": "seqlab " + " ".join(command[3:]),
    }


def _size(count: int) -> str:
    return f"{count / 1e6:.2f} MB" if count >= 1e6 else f"{count / 1e3:.1f} kB"


def table(results: list[dict], family: str) -> str:
    rows = [r for r in results if r["family"] == family]
    full = next((r for r in rows if r["method"] == "full"), None)
    lines = [
        ("| method | lr | trainable | % | valid acc. | test acc. | CPU ms / step | vs full | "
         "wall ms / step | peak RSS | saved |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cpu = r["cpu_seconds_per_step"]
        ratio = f"{cpu / full['cpu_seconds_per_step']:.2f}x" if full else ""
        lines.append(
            f"| {r['method']} | {r['lr'] or r['recipe_lr']:g} | {r['trainable']:,} | "
            f"{100 * r['trainable'] / r['total']:.2f} | {100 * r['valid_accuracy']:.1f} | "
            f"{100 * r['test_accuracy']:.1f} | {1000 * cpu:.0f} | {ratio} | "
            f"{1000 * r['wall_seconds_per_step']:.0f} | {r['peak_rss_mb']:.0f} MB | "
            f"{_size(r['saved_bytes'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transformer", type=Path, help="pre-trained Transformer run")
    parser.add_argument("--recurrent", type=Path, help="pre-trained recurrent run")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sentences/mr"),
                        help="a folder with train.tsv, valid.tsv, test.tsv")
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--methods", nargs="+", help="row names to run (default: all)")
    parser.add_argument("--lr", nargs="+", default=[], metavar="'ROW=LR'",
                        help="another learning rate for a row, e.g. 'LoRA r=16=0.01'")
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
    rates = {text.rpartition("=")[0]: float(text.rpartition("=")[2]) for text in args.lr}
    methods = [(name, overrides, rates.get(name, lr)) for name, overrides, lr in METHODS
               if not args.methods or name in args.methods]
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
