"""Exact match of trained reversal models by sequence length: the encoder-vector bottleneck, plotted.

    seqlab compare reverse-gru data.max_length=30 model.attention=bahdanau,none --out rev
    python benchmarks/reversal_by_length.py rev/runs/attention=bahdanau rev/runs/attention=none \\
        --output rev/by_length.png

Each run directory decodes (with its own `predict` settings) fresh reversal sequences of every
length from 1 to --max-length, drawn with a seed the training data did not use; the script prints
a markdown table and plots exact match against length, one line per run.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from seqlab.train.run import predict_run


def sequences_of_length(length: int, count: int, num_symbols: int, rng: random.Random) -> list[str]:
    """Symbols are the letters a, b, ... as in `seqlab.data.tasks.reversal`."""
    symbols = [chr(ord("a") + k) for k in range(num_symbols)]
    return [" ".join(rng.choice(symbols) for _ in range(length)) for _ in range(count)]


def exact_match_by_length(run_dir: str, max_length: int, per_length: int, num_symbols: int,
                          seed: int) -> list[float]:
    rng = random.Random(seed)
    scores = []
    for length in range(1, max_length + 1):
        sources = sequences_of_length(length, per_length, num_symbols, rng)
        outputs = predict_run(run_dir, sources)
        hits = sum(out.strip() == " ".join(reversed(src.split()))
                   for src, out in zip(sources, outputs))
        scores.append(hits / per_length)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--max-length", type=int, default=30)
    parser.add_argument("--per-length", type=int, default=40)
    parser.add_argument("--num-symbols", type=int, default=10)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--output", default="reversal_by_length.png")
    args = parser.parse_args()

    results = {Path(run).name: exact_match_by_length(run, args.max_length, args.per_length,
                                                     args.num_symbols, args.seed)
               for run in args.run_dirs}
    lengths = list(range(1, args.max_length + 1))
    print("| length | " + " | ".join(results) + " |")
    print("|---:|" + "---:|" * len(results))
    for index, length in enumerate(lengths):
        print(f"| {length} | " + " | ".join(f"{scores[index]:.2f}" for scores in results.values())
              + " |")
    figure, axes = plt.subplots(figsize=(6.5, 3.8))
    for name, scores in results.items():
        axes.plot(lengths, scores, marker="o", markersize=3, label=name)
    axes.set_xlabel("sequence length")
    axes.set_ylabel(f"exact match ({args.per_length} sequences per length)")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title("Reversal: exact match by length")
    figure.tight_layout()
    figure.savefig(args.output, dpi=100)
    print(f"plot: {args.output}")


if __name__ == "__main__":
    main()
