"""Decoding throughput of a trained seq2seq run: greedy beside beam search, in sentences per second.

    seqlab train reverse-gru --run-dir rev
    python benchmarks/decoding.py rev --beams 1 3 5 10

Every beam size decodes the same sentences (fresh reversal inputs of 1..30 symbols, or the lines
of --inputs FILE) through the run's own `predict` path, in batches of --batch-size; beam sizes
take turns inside every repeat and the median time is reported, with the device named.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time

import torch

from seqlab.train.run import open_run


def reversal_inputs(count: int, max_length: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    symbols = [chr(ord("a") + k) for k in range(10)]
    return [" ".join(rng.choice(symbols) for _ in range(rng.randint(1, max_length)))
            for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--inputs", help="a file with one source sentence per line")
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    if args.inputs:
        with open(args.inputs, encoding="utf-8") as handle:
            sources = [line.strip() for line in handle if line.strip()][: args.count]
    else:
        sources = reversal_inputs(args.count, 30, seed=7)
    runs = {beam: open_run(args.run_dir, [f"predict.beam_size={beam}"]) for beam in args.beams}
    device = next(iter(runs.values()))[3]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.machine()} CPU, {torch.get_num_threads()} threads")
    times = {beam: [] for beam in args.beams}
    with torch.no_grad():
        for _ in range(args.repeats):
            for beam, (_, task, model, device) in runs.items():
                start = time.perf_counter()
                for first in range(0, len(sources), args.batch_size):
                    task.predict(model, sources[first: first + args.batch_size], device)
                times[beam].append(time.perf_counter() - start)
    greedy = statistics.median(times[args.beams[0]])
    print(f"{len(sources)} sentences, batches of {args.batch_size}, {name}, "
          f"median of {args.repeats}")
    print("| beam size | sentences / s | time vs beam " + str(args.beams[0]) + " |")
    print("|---:|---:|---:|")
    for beam in args.beams:
        median = statistics.median(times[beam])
        label = "1 (greedy)" if beam == 1 else str(beam)
        print(f"| {label} | {len(sources) / median:.0f} | {median / greedy:.2f}x |")


if __name__ == "__main__":
    main()
