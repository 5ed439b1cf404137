"""seqlab's gpt-charlm beside nanoGPT's CPU recipe on tinyshakespeare, same machine, same run.

    python benchmarks/nanogpt_side_by_side.py --nanogpt PATH/TO/nanoGPT            # prints a table
    python benchmarks/nanogpt_side_by_side.py --nanogpt PATH/TO/nanoGPT --write    # and appends it to RESULTS.md

nanoGPT is not part of seqlab: clone https://github.com/karpathy/nanoGPT anywhere and pass its
directory. The corpus is tinyshakespeare's `input.txt` (`--data`; by default
`../shared/data/tinyshakespeare/input.txt` beside the repository; the script stops with a message
when it is missing). Everything is written to a temporary directory.

Both sides train nanoGPT's CPU recipe (its README): context 64, batch 12, 4 layers, 4 heads,
width 128, no dropout, no biases, AdamW lr 1e-3 with β2 = 0.99 and weight decay 0.1, 100 warm-up
steps then cosine to 1e-4 at step 2000, gradient clipping at 1.0, an evaluation every 250 steps.
nanoGPT's evaluation estimates the loss from 20 random batches of each split; seqlab's reads 20
batches of the validation split (``trainer.eval_max_batches=20``), and its summary then scores
the kept weights on the whole validation split.

Each side is timed from the raw text to the trained model: nanoGPT's `prepare.py` and `train.py`,
seqlab's one `seqlab train` command (imports, data preparation, training, evaluations,
checkpoints, the final whole-split score and plots; its text samples are switched off, as
nanoGPT samples in a separate script). The rounds alternate the order.
Afterwards both final models are scored the same way, outside the timed part: the whole
validation text (the last 10 %) cut into consecutive 64-character windows, each predicted from
its own characters only (the context both models were trained with), mean loss in nats per
character.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "RESULTS.md"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"

BLOCK, BATCH = 64, 12


def nanogpt_args(iterations: int) -> list[str]:
    return [
        "config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
        "--log_interval=1", f"--block_size={BLOCK}", f"--batch_size={BATCH}", "--n_layer=4",
        "--n_head=4", "--n_embd=128", f"--max_iters={iterations}", f"--lr_decay_iters={iterations}",
        "--dropout=0.0", f"--eval_interval={min(250, iterations)}",
    ]


def seqlab_overrides(iterations: int) -> list[str]:
    return [
        "data.valid_fraction=0.1", "data.test_fraction=0", f"data.bptt={BLOCK}",
        "model.d_model=128", "model.nhead=4", "model.num_layers=4", "model.dropout=0",
        f"model.max_length={BLOCK}", "model.bias=false", "model.activation=gelu",
        f"trainer.max_steps={iterations}", "trainer.epochs=100", f"trainer.batch_size={BATCH}",
        f"trainer.eval_batch_size={BATCH}", "trainer.eval_max_batches=20", "trainer.lr=0.001",
        "trainer.optimizer=adamw", "trainer.weight_decay=0.1", "trainer.betas=[0.9,0.99]",
        "trainer.scheduler=cosine", "trainer.warmup_steps=100", "trainer.min_lr=0.0001",
        "trainer.clip_grad_norm=1.0", f"trainer.eval_every={min(250, iterations)}", "trainer.save_every=250",
        "trainer.max_time_minutes=null", "trainer.progress=false", "predict.num_samples=0",
    ]


def device_name() -> str:
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def windows_loss(logits_of, ids: torch.Tensor, batch: int = 64) -> float:
    """Mean next-character loss over consecutive BLOCK-long windows of `ids` (nats / char)."""
    count = (ids.numel() - 1) // BLOCK
    inputs = ids[: count * BLOCK].view(count, BLOCK)
    targets = ids[1: count * BLOCK + 1].view(count, BLOCK)
    total = 0.0
    with torch.inference_mode():
        for start in range(0, count, batch):
            logits = logits_of(inputs[start:start + batch])  # (B, BLOCK, V)
            total += float(F.cross_entropy(logits.flatten(0, 1), targets[start:start + batch].flatten(),
                                           reduction="sum"))
    return total / targets.numel()


def timed(command: list[str], cwd: Path, log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(command, check=False, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        # The log lives in a temporary directory that is removed on exit: show its end here.
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        sys.exit(f"{' '.join(command[:3])} ... failed (exit {done.returncode}); its last lines:\n{tail}")
    return seconds


def run_nanogpt(checkout: Path, text_path: Path, work: Path, round_: int, iterations: int) -> dict:
    directory = work / f"nanogpt-{round_}"
    shutil.copytree(checkout, directory, ignore=shutil.ignore_patterns(".git", "out*"))
    data = directory / "data" / "shakespeare_char"
    shutil.copy(text_path, data / "input.txt")
    # Timed from the raw text, as seqlab is: nanoGPT's prepare.py, then its train.py.
    seconds = timed([sys.executable, "prepare.py"], data, work / f"nanogpt-prepare-{round_}.log")
    log = work / f"nanogpt-{round_}.log"
    seconds += timed([sys.executable, "train.py", *nanogpt_args(iterations)], directory, log)
    reported = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", log.read_text())
    step, _, val = reported[-1]
    return {"seconds": seconds, "reported": float(val), "directory": directory, "step": int(step)}


def run_seqlab(text_path: Path, work: Path, round_: int, iterations: int) -> dict:
    run_dir = work / f"seqlab-{round_}"
    command = [sys.executable, "-m", "seqlab", "train", "gpt-charlm", f"data.train={text_path}",
               *seqlab_overrides(iterations), "--run-dir", str(run_dir)]
    seconds = timed(command, work, work / f"seqlab-{round_}.log")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"seconds": seconds, "reported": summary["valid"]["loss"], "directory": run_dir,
            "step": summary["run"]["steps"]}


def score_nanogpt(directory: Path, text: str) -> float:
    sys.path.insert(0, str(directory))
    try:
        from model import GPT, GPTConfig  # nanoGPT's own model file, from the checkout
    finally:
        sys.path.pop(0)
    # nanoGPT keeps the weights of its best evaluation; weights_only refuses anything but tensors
    # and plain containers.
    checkpoint = torch.load(directory / "out-shakespeare-char" / "ckpt.pt", map_location="cpu",
                            weights_only=True)
    model = GPT(GPTConfig(**checkpoint["model_args"]))
    state = {k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items()}
    model.load_state_dict(state)
    model.eval()
    chars = sorted(set(text))  # nanoGPT's prepare.py: ids are the sorted characters
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text[int(len(text) * 0.9):]])

    def logits_of(x):
        targets = torch.zeros_like(x)  # with targets nanoGPT returns logits at every position
        return model(x, targets)[0]

    return windows_loss(logits_of, ids)


def score_seqlab(run_dir: Path, text: str) -> float:
    from seqlab.train.run import open_run

    _, task, model, _ = open_run(run_dir)
    ids = torch.tensor(task.tokenizer.encode(text[int(len(text) * 0.9):]))
    return windows_loss(lambda x: model(x).logits, ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", type=Path, required=True, help="a checkout of nanoGPT")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="tinyshakespeare input.txt")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each; the order alternates")
    parser.add_argument("--iterations", type=int, default=2000, help="training steps (the recipe: 2000)")
    parser.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    args = parser.parse_args()
    if not (args.nanogpt / "train.py").is_file() or not (args.nanogpt / "model.py").is_file():
        sys.exit(f"{args.nanogpt} is not a nanoGPT checkout (no train.py / model.py); clone "
                 "https://github.com/karpathy/nanoGPT and pass its directory as --nanogpt")
    if not args.data.is_file():
        sys.exit(f"tinyshakespeare not found at {args.data}; pass --data PATH/input.txt")
    text = args.data.read_text(encoding="utf-8")

    results: dict[str, list[dict]] = {"nanoGPT": [], "seqlab": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for round_ in range(args.rounds):
            order = ["nanoGPT", "seqlab"] if round_ % 2 == 0 else ["seqlab", "nanoGPT"]
            for name in order:
                if name == "nanoGPT":
                    outcome = run_nanogpt(args.nanogpt, args.data, work, round_, args.iterations)
                    outcome["whole"] = score_nanogpt(outcome["directory"], text)
                else:
                    outcome = run_seqlab(args.data, work, round_, args.iterations)
                    outcome["whole"] = score_seqlab(outcome["directory"], text)
                print(f"round {round_ + 1}, {name}: {outcome['seconds']:.1f} s, own estimate "
                      f"{outcome['reported']:.4f}, whole validation {outcome['whole']:.4f}", flush=True)
                results[name].append(outcome)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    ratio = median("seqlab", "seconds") / median("nanoGPT", "seconds")
    lines = [
        (f"- device: {device_name()}; torch {torch.__version__}; {args.rounds} round(s), order alternating; "
        f"medians"),
        (f"- recipe: context {BLOCK}, batch {BATCH}, 4 layers, 4 heads, width 128, no dropout, no biases, "
        f"{args.iterations} steps (nanoGPT's README CPU command)"),
        ("- whole validation: the last 10 % of the text in consecutive 64-character windows, both models "
        "scored by the same code after training (nats / char)"),
        "",
        "| | wall time (s) | validation loss, own report | validation loss, whole split |",
        "|---|---:|---:|---:|",
    ]
    for name, note in (("nanoGPT", "20 random batches"), ("seqlab", "whole split")):
        lines.append(f"| {name} | {median(name, 'seconds'):.1f} | {median(name, 'reported'):.4f} ({note}) "
                     f"| {median(name, 'whole'):.4f} |")
    lines += ["", (f"seqlab / nanoGPT wall time: **{ratio:.2f}**; whole-split loss difference "
              f"(seqlab − nanoGPT): {median('seqlab', 'whole') - median('nanoGPT', 'whole'):+.4f}")]
    table = "\n".join(lines)
    print(table)
    if args.write:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        command = "python benchmarks/nanogpt_side_by_side.py --nanogpt PATH/TO/nanoGPT"
        if args.iterations != 2000:
            command += f" --iterations {args.iterations}"
        if args.rounds != 1:
            command += f" --rounds {args.rounds}"
        section = f"\n## Character GPT beside nanoGPT's CPU recipe, tinyshakespeare ({stamp})\n\n"
        section += f"`{command} --write`\n\n{table}\n"
        existing = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
        RESULTS.write_text(existing.rstrip("\n") + "\n" + section, encoding="utf-8")
    if not math.isfinite(ratio):
        sys.exit(1)


if __name__ == "__main__":
    main()
