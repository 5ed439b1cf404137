"""Speed of seqlab.nn recurrent layers against torch.nn, measured interleaved in one process.

    python benchmarks/recurrent.py                   # CPU, both sizes, all layers and variants
    python benchmarks/recurrent.py --device cuda     # the same on a GPU (cuDNN for torch.nn)
    python benchmarks/recurrent.py --quick           # fewer repeats, for a smoke run

Each row times forward and forward+backward (sum of outputs) for one layer; the ratio column
divides seqlab's median time by the median of its peer: torch.nn's layer of the same kind for
plain configurations, torch.nn's plain LSTM of the same size (and directions) for the variants.
Candidates take turns inside every repeat so that machine noise hits all of them alike.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch import nn

import seqlab.nn as snn

SIZES = {
    "L=100 N=32 H_in=128 H=256": {"length": 100, "batch": 32, "input_size": 128,
                                   "hidden_size": 256},
    "L=1000 N=8 H_in=128 H=128": {"length": 1000, "batch": 8, "input_size": 128,
                                   "hidden_size": 128},
}

# (row name, seqlab constructor, peer constructor); peers are torch.nn layers.
def candidates(input_size: int, hidden_size: int):
    i, h = input_size, hidden_size
    return [
        ("LSTM", lambda: snn.LSTM(i, h), lambda: nn.LSTM(i, h)),
        ("GRU", lambda: snn.GRU(i, h), lambda: nn.GRU(i, h)),
        ("RNN tanh", lambda: snn.RNN(i, h), lambda: nn.RNN(i, h)),
        ("RNN relu identity-init (IRNN)",
         lambda: snn.RNN(i, h, nonlinearity="relu", init="identity"),
         lambda: nn.RNN(i, h, nonlinearity="relu")),
        ("BiLSTM concat", lambda: snn.LSTM(i, h, bidirectional=True),
         lambda: nn.LSTM(i, h, bidirectional=True)),
        ("LSTM peephole", lambda: snn.LSTM(i, h, peephole=True), lambda: nn.LSTM(i, h)),
        ("LSTM coupled", lambda: snn.LSTM(i, h, coupled=True), lambda: nn.LSTM(i, h)),
        ("LSTM peephole+coupled", lambda: snn.LSTM(i, h, peephole=True, coupled=True),
         lambda: nn.LSTM(i, h)),
        ("GRU reset_after=False", lambda: snn.GRU(i, h, reset_after=False),
         lambda: nn.LSTM(i, h)),
        ("LSTM visible loop (fused=False)", lambda: snn.LSTM(i, h, fused=False),
         lambda: nn.LSTM(i, h)),
        ("BiLSTM merge sum", lambda: snn.LSTM(i, h, bidirectional=True, merge_mode="sum"),
         lambda: nn.LSTM(i, h, bidirectional=True)),
        ("BiLSTM peephole merge sum",
         lambda: snn.LSTM(i, h, bidirectional=True, merge_mode="sum", peephole=True),
         lambda: nn.LSTM(i, h, bidirectional=True)),
    ]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def time_once(layer: nn.Module, x: torch.Tensor, backward: bool, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    if backward:
        output, _ = layer(x)
        output.sum().backward()
    else:
        with torch.no_grad():
            layer(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(size: dict, device: torch.device, repeats: int, warmup: int) -> list[dict]:
    torch.manual_seed(0)
    x = torch.randn(size["length"], size["batch"], size["input_size"], device=device)
    x_grad = x.clone().requires_grad_(True)
    rows = []
    for name, make_ours, make_peer in candidates(size["input_size"], size["hidden_size"]):
        ours, peer = make_ours().to(device), make_peer().to(device)
        times = {(who, backward): [] for who in ("ours", "peer") for backward in (False, True)}
        for step in range(warmup + repeats):
            for who, layer in (("ours", ours), ("peer", peer)):
                for backward in (False, True):
                    elapsed = time_once(layer, x_grad if backward else x, backward, device)
                    if step >= warmup:
                        times[(who, backward)].append(elapsed)
        median = {key: statistics.median(values) for key, values in times.items()}
        rows.append({
            "name": name,
            "peer": type(peer).__name__ + (" bidirectional" if peer.bidirectional else ""),
            "forward_ms": 1e3 * median[("ours", False)],
            "forward_ratio": median[("ours", False)] / median[("peer", False)],
            "train_ms": 1e3 * median[("ours", True)],
            "train_ratio": median[("ours", True)] / median[("peer", True)],
        })
        print(f"  {name:34s} fwd {rows[-1]['forward_ms']:8.2f} ms ({rows[-1]['forward_ratio']:.2f}x)"
              f"   fwd+bwd {rows[-1]['train_ms']:8.2f} ms ({rows[-1]['train_ratio']:.2f}x)",
              flush=True)
    return rows


def markdown(results: dict, device: str, repeats: int) -> str:
    intro = (f"Device: {device}; torch {torch.__version__}; median of {repeats} interleaved "
             "repeats; ratio = seqlab time / peer time (lower is better).")
    lines = [intro, ""]
    for size, rows in results.items():
        header = ("| layer | peer (torch.nn) | forward ms | forward ratio | fwd+bwd ms "
                  "| fwd+bwd ratio |")
        lines += [f"**{size}**", "", header, "|---|---|---:|---:|---:|---:|"]
        for row in rows:
            lines.append(f"| {row['name']} | {row['peer']} | {row['forward_ms']:.2f} | "
                         f"{row['forward_ratio']:.2f} | {row['train_ms']:.2f} | "
                         f"{row['train_ratio']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up")
    parser.add_argument("--size", choices=list(SIZES), action="append",
                        help="only these sizes (default: all)")
    parser.add_argument("--output", help="also write the markdown table to this file")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.warmup = 3, 1
    device = torch.device(args.device)
    name = device_name(device)
    print(f"seqlab.nn vs torch.nn on {name}")
    results = {}
    for size in args.size or list(SIZES):
        print(size)
        results[size] = measure(SIZES[size], device, args.repeats, args.warmup)
    table = markdown(results, name, args.repeats)
    print()
    print(table)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(table + "\n")


if __name__ == "__main__":
    main()
