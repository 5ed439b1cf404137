"""Training-step time and memory of MinGRU / MinLSTM (parallel scan) against torch.nn and their own loop.

    python benchmarks/minimal.py                      # CPU, L = 256, 1024, 4096
    python benchmarks/minimal.py --device cuda        # the same on a GPU (cuDNN for torch.nn)
    python benchmarks/minimal.py --repeats 2          # fewer repeats, for a smoke run

One training step is forward + backward of the sum of a layer's outputs (batch N, width
H_in = H). Candidates take turns inside every repeat so that machine noise hits all of them
alike; the table shows medians and ratios against the peer measured in the same process:
MinGRU against torch.nn.GRU, MinLSTM against torch.nn.LSTM, and each parallel scan against the
same layer with ``parallel=False`` (the step-by-step loop generation uses).

Memory is what the step keeps for its backward pass: the bytes of every distinct tensor autograd
saves (parameters excluded), counted with ``torch.autograd.graph.saved_tensors_hooks``. It is the
part of memory that grows with L, and it is the same on any device; on a GPU the peak allocated
memory of the step is shown as well.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from recurrent import device_name  # benchmarks/recurrent.py, beside this script
from torch import nn

import seqlab.nn as snn


def candidates(size: int) -> list[tuple[str, Callable[[], nn.Module]]]:
    return [
        ("MinGRU parallel", lambda: snn.MinGRU(size, size)),
        ("MinGRU sequential", lambda: snn.MinGRU(size, size, parallel=False)),
        ("torch.nn.GRU", lambda: nn.GRU(size, size)),
        ("MinLSTM parallel", lambda: snn.MinLSTM(size, size)),
        ("MinLSTM sequential", lambda: snn.MinLSTM(size, size, parallel=False)),
        ("torch.nn.LSTM", lambda: nn.LSTM(size, size)),
    ]


# (row, peer): every ratio in the table.
RATIOS = [
    ("MinGRU parallel", "torch.nn.GRU"),
    ("MinGRU parallel", "MinGRU sequential"),
    ("MinLSTM parallel", "torch.nn.LSTM"),
    ("MinLSTM parallel", "MinLSTM sequential"),
    ("MinGRU sequential", "torch.nn.GRU"),
    ("MinLSTM sequential", "torch.nn.LSTM"),
]


def training_step(layer: nn.Module, x: torch.Tensor) -> None:
    output, _ = layer(x)
    output.sum().backward()


def time_step(layer: nn.Module, x: torch.Tensor, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    training_step(layer, x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def saved_bytes(layer: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward pass (parameters excluded)."""
    parameters = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output, _ = layer(x)
    output.sum().backward()
    return sum(storages.values())


def peak_cuda_bytes(layer: nn.Module, x: torch.Tensor, device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    training_step(layer, x)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated(device) - before


def measure(length: int, batch: int, size: int, device: torch.device, repeats: int,
            warmup: int) -> dict[str, dict]:
    torch.manual_seed(0)
    x = torch.randn(length, batch, size, device=device, requires_grad=True)
    layers = {name: make().to(device) for name, make in candidates(size)}
    times: dict[str, list[float]] = {name: [] for name in layers}
    for step in range(warmup + repeats):
        for name, layer in layers.items():
            elapsed = time_step(layer, x, device)
            if step >= warmup:
                times[name].append(elapsed)
    results = {}
    for name, layer in layers.items():
        results[name] = {
            "ms": 1e3 * statistics.median(times[name]),
            "saved_mib": saved_bytes(layer, x) / 2**20,
            "peak_mib": (None if device.type != "cuda"
                         else peak_cuda_bytes(layer, x, device) / 2**20),
        }
        print(f"  L={length:5d} {name:20s} {results[name]['ms']:10.2f} ms  "
              f"saved {results[name]['saved_mib']:8.2f} MiB", flush=True)
    return results


def markdown(results: dict[int, dict], device: str, batch: int, size: int, repeats: int) -> str:
    has_peak = any(row["peak_mib"] is not None for rows in results.values() for row in rows.values())
    lines = [
        f"Device: {device}; torch {torch.__version__}; batch N = {batch}, width H_in = H = {size}, "
        f"float32; median of {repeats} interleaved training steps (forward + backward of the "
        "outputs' sum). Memory: bytes autograd saves for the backward pass (parameters excluded)"
        + ("; peak: the step's peak allocated GPU memory." if has_peak else "."),
        "",
        "| L | layer | step (ms) | saved for backward (MiB) |" + (" peak (MiB) |" if has_peak else ""),
        "|---:|---|---:|---:|" + ("---:|" if has_peak else ""),
    ]
    for length, rows in results.items():
        for name, row in rows.items():
            peak = f" {row['peak_mib']:.1f} |" if row["peak_mib"] is not None else ""
            lines.append(f"| {length} | {name} | {row['ms']:.1f} | {row['saved_mib']:.1f} |{peak}")
    lines += ["", "| L | ratio | time | memory |", "|---:|---|---:|---:|"]
    for length, rows in results.items():
        for name, peer in RATIOS:
            time_ratio = rows[name]["ms"] / rows[peer]["ms"]
            memory_ratio = rows[name]["saved_mib"] / rows[peer]["saved_mib"]
            lines.append(f"| {length} | {name} / {peer} | {time_ratio:.2f}× | {memory_ratio:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lengths", default="256,1024,4096")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = device_name(device)
    print(f"device: {name}", flush=True)
    results = {}
    for length in (int(v) for v in args.lengths.split(",")):
        results[length] = measure(length, args.batch, args.size, device, args.repeats,
                                  args.warmup)
    print()
    print(markdown(results, name, args.batch, args.size, args.repeats))


if __name__ == "__main__":
    main()
