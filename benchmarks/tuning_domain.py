"""Adapting a causal language model to a new domain by each tuning method.

A language model pre-trained on one text (``seqlab train pretrain-clm``, e.g. on WikiText-2) is
tuned on another (tinyshakespeare by default) with the same step budget by every method: full
fine-tuning, LoRA at two ranks, bottleneck adapters in both placements, prefix tuning and prompt
tuning. The first row is the pre-trained model as it is, evaluated on the new text. Each row:
trainable parameters (count and % of the model), loss in nats per token on the held-out end of
the new text (validation and test; the pre-trained tokenizer throughout, so the rows compare),
time per training step (CPU and wall), peak resident memory, and the size of what the run saves.

    python benchmarks/tuning_domain.py --base RUN_DIR \\
        --text ../shared/data/tinyshakespeare/input.txt --steps 300

The text is cut by lines into train / valid / test (90 / 5 / 5 %, the held-out parts at the
end). Each training is its own process on one thread, one after the other. "Head only" has no
row: the language model's output layer is tied to its token embedding, so it has no weights of
its own. Writes ``results.json`` and ``table.md`` to --out and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

from tuning_methods import TIMED_RUNNER, _reported, _size

RUNNER = TIMED_RUNNER.format(module="seqlab.tasks.causal_lm", name="CausalLMTask")
# (row name, overrides, learning rate): the rates of the classifier tables, full fine-tuning at
# half the pre-training rate. LoRA's default targets are the attention's q and v; the third LoRA
# row takes every matrix of every block (attention in and out, both feed-forward layers).
METHODS = [
    ("full", [], 5e-4),
    ("LoRA r=4", ["tune.method=lora", "tune.r=4", "tune.alpha=8"], 2e-3),
    ("LoRA r=16", ["tune.method=lora", "tune.r=16", "tune.alpha=32"], 2e-3),
    ("LoRA r=16, every matrix", ["tune.method=lora", "tune.r=16", "tune.alpha=32",
                                 "tune.targets=[in_proj_weight,out_proj,linear1,linear2]"], 2e-3),
    ("adapter houlsby", ["tune.method=adapter", "tune.placement=houlsby"], 1e-2),
    ("adapter pfeiffer", ["tune.method=adapter", "tune.placement=pfeiffer"], 1e-2),
    ("prefix", ["tune.method=prefix", "tune.num_virtual_tokens=10"], 1e-2),
    ("prompt", ["tune.method=prompt", "tune.num_virtual_tokens=10"], 1e-2),
]


def split_text(source: Path, folder: Path) -> dict[str, Path]:
    """train / valid / test files: 90 / 5 / 5 % of the lines, held-out parts at the end."""
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    cut_valid, cut_test = int(len(lines) * 0.90), int(len(lines) * 0.95)
    parts = {"train": lines[:cut_valid], "valid": lines[cut_valid:cut_test],
             "test": lines[cut_test:]}
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, part in parts.items():
        files[name] = folder / f"{name}.txt"
        files[name].write_text("".join(part), encoding="utf-8")
    return files


def untuned(args, files) -> dict:
    """The pre-trained model as it is, scored on the new text's held-out parts."""
    row = {"method": "pre-trained, untuned", "trainable": 0, "lr": None,
           "cpu_seconds_per_step": None, "wall_seconds_per_step": None, "peak_rss_mb": None,
           "saved_bytes": 0}
    for split in ("valid", "test"):
        command = [sys.executable, "-m", "seqlab", "eval", str(args.base),
                   f"data.test={files[split]}", "trainer.num_threads=1"]
        result = subprocess.run(command, check=False, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}\n{result.stderr[-2000:]}")
        summary = json.loads(result.stdout[result.stdout.index("{"):])
        row[f"{split}_loss"] = summary["test"]["loss"]
    row["total"] = json.loads((args.base / "summary.json").read_text())["run"]["num_parameters"]
    return row


def train(args, files, name: str, overrides: list[str], lr: float) -> dict:
    run_dir = args.out / "runs" / f"{name.replace(' ', '-').replace('=', '')}-lr{lr:g}"
    command = [
        sys.executable, "-c", RUNNER, "train", "pretrain-clm", f"model.init_from={args.base}",
        f"data.train={files['train']}", f"data.valid={files['valid']}",
        f"data.test={files['test']}", f"trainer.max_steps={args.steps}",
        f"trainer.batch_size={args.batch_size}", f"trainer.eval_every={args.steps}",
        f"trainer.log_every={args.steps}", "trainer.max_time_minutes=null",
        "trainer.scheduler=cosine", "trainer.warmup_steps=30", "trainer.epochs=1000",
        "trainer.num_threads=1", "trainer.progress=false", f"trainer.seed={args.seed}",
        f"trainer.lr={lr}", *overrides, "--run-dir", str(run_dir),
    ]
    began = time.time()
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[3:])}\n{result.stderr[-2000:]}")
    cpu_step, wall_step = _reported(result.stderr, "step-seconds")
    summary = json.loads((run_dir / "summary.json").read_text())
    saved = run_dir / ("adapter.safetensors" if (run_dir / "adapter.json").is_file()
                       else "model.safetensors")
    return {
        "method": name, "lr": lr,
        "trainable": summary["run"]["trainable_parameters"],
        "total": summary["run"]["num_parameters"],
        "valid_loss": summary["valid"]["loss"], "test_loss": summary["test"]["loss"],
        "cpu_seconds_per_step": round(cpu_step, 4), "wall_seconds_per_step": round(wall_step, 4),
        "peak_rss_mb": round(_reported(result.stderr, "peak-rss-kb")[0] / 1024, 1),
        "saved_bytes": saved.stat().st_size, "steps": summary["run"]["steps"],
        "wall_seconds": round(time.time() - began, 1),
        "command": "seqlab " + " ".join(command[3:]),
    }


def table(results: list[dict]) -> str:
    full = next((r for r in results if r["method"] == "full"), None)
    lines = [
        ("| method | lr | trainable | % | valid loss | test loss | test perplexity | "
         "CPU ms / step | vs full | wall ms / step | peak RSS | saved |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        cpu = r["cpu_seconds_per_step"]
        if cpu is None:
            timing = " |  | "
        else:
            ratio = f"{cpu / full['cpu_seconds_per_step']:.2f}x" if full else ""
            timing = f"{1000 * cpu:.0f} | {ratio} | {1000 * r['wall_seconds_per_step']:.0f}"
        memory = "" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f} MB"
        saved = _size(r["saved_bytes"]) if r["saved_bytes"] else "nothing"
        lines.append(
            f"| {r['method']} | {r['lr'] or ''} | {r['trainable']:,} | "
            f"{100 * r['trainable'] / r['total']:.2f} | {r['valid_loss']:.3f} | "
            f"{r['test_loss']:.3f} | {math.exp(r['test_loss']):.0f} | {timing} | {memory} | "
            f"{saved} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="pre-trained causal-LM run")
    parser.add_argument("--text", type=Path,
                        default=Path("../shared/data/tinyshakespeare/input.txt"),
                        help="plain text of the new domain")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--methods", nargs="+", help="row names to run (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/tuning-domain"))
    args = parser.parse_args()
    if not (args.base / "model.safetensors").is_file():
        sys.exit(f"{args.base} is not a finished run (no model.safetensors): give --base the "
                 f"directory of a `seqlab train pretrain-clm` run")
    if not args.text.is_file():
        sys.exit(f"{args.text} does not exist: point --text at a plain-text file "
                 f"(../shared/data/tinyshakespeare/input.txt)")
    if args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"{args.out} exists and is not empty; pick another --out")
    files = split_text(args.text, args.out / "data")
    began = time.time()
    results = [untuned(args, files)]
    print(json.dumps(results[0]), flush=True)
    for name, overrides, lr in METHODS:
        if args.methods and name not in args.methods:
            continue
        results.append(train(args, files, name, overrides, lr))
        print(json.dumps(results[-1]), flush=True)
    machine = f"{platform.machine()} CPU, one thread per training, {time.time() - began:.0f} s in all"
    (args.out / "results.json").write_text(json.dumps(
        {"machine": machine, "base": str(args.base), "text": str(args.text), "steps": args.steps,
         "batch_size": args.batch_size, "results": results}, indent=1))
    (args.out / "table.md").write_text(table(results))
    print(table(results))
    print(machine)


if __name__ == "__main__":
    main()
