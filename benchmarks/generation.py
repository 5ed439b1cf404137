"""Greedy generation speed: seqlab's TransformerLM with and without its KV cache, and transformers.

    python benchmarks/generation.py                  # CPU, 512 new tokens, prints a table
    python benchmarks/generation.py --device cuda    # the same on a GPU
    python benchmarks/generation.py --write          # also append the table to RESULTS.md

One tiny random GPT-2 (``GPT2LMHeadModel``, saved with safetensors) is loaded twice: by
transformers, and by seqlab through :func:`seqlab.models.from_pretrained_hf`, so both generate
from the same weights. Each candidate decodes greedily from the same prompt; all of them must
give the same tokens. Candidates take turns inside every repeat so machine noise hits all alike;
the table reports the median tokens/s and its ratio to transformers' ``generate``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from seqlab.models import from_pretrained_hf

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    args = parser.parse_args()

    import transformers

    device = torch.device(args.device)
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=1000, n_positions=1024, n_embd=args.width, n_layer=args.layers, n_head=4,
        bos_token_id=0, eos_token_id=1, initializer_range=0.2,
    )
    with tempfile.TemporaryDirectory() as directory:
        transformers.GPT2LMHeadModel(config).save_pretrained(directory, safe_serialization=True)
        peer = transformers.GPT2LMHeadModel.from_pretrained(directory).to(device).eval()
        ours = from_pretrained_hf(directory).to(device).eval()

    prompt = torch.randint(2, 1000, (1, args.prompt_length), device=device)
    new = args.new_tokens

    def transformers_generate():
        return peer.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
            min_new_tokens=new, do_sample=False, pad_token_id=0,
        )

    candidates = {
        "seqlab TransformerLM.generate, KV cache": lambda: ours.generate(prompt, new, 0.0),
        "seqlab TransformerLM.generate, no cache": lambda: ours.generate(
            prompt, new, 0.0, use_cache=False
        ),
        "transformers GPT2LMHeadModel.generate (cache)": transformers_generate,
    }
    times: dict[str, list[float]] = {name: [] for name in candidates}
    outputs = {}
    with torch.inference_mode():
        for name, run in candidates.items():  # warm-up
            outputs[name] = run()
        for _ in range(args.repeats):
            for name, run in candidates.items():
                _sync(device)
                start = time.perf_counter()
                run()
                _sync(device)
                times[name].append(time.perf_counter() - start)
    reference = outputs["transformers GPT2LMHeadModel.generate (cache)"]
    same = all(torch.equal(tokens, reference) for tokens in outputs.values())

    peer_rate = new / statistics.median(times["transformers GPT2LMHeadModel.generate (cache)"])
    lines = [
        (f"- device: {device_name(device)}; torch {torch.__version__}, transformers "
        f"{transformers.__version__}"),
        (f"- GPT-2 {args.layers} layers, n_embd={args.width}, 4 heads, vocab 1000; batch 1, prompt "
        f"{args.prompt_length}, {new} new tokens, greedy; median of {args.repeats}"),
        f"- all candidates produce the same tokens: {same}",
        "",
        "| candidate | tokens/s | vs transformers |",
        "|---|---:|---:|",
    ]
    for name, measured in times.items():
        rate = new / statistics.median(measured)
        lines.append(f"| {name} | {rate:,.0f} | {rate / peer_rate:.2f}x |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        command = "python benchmarks/generation.py --write"
        if args.device != "cpu":
            command += f" --device {args.device}"
        section = f"\n## Transformer generation: KV cache vs none vs transformers ({stamp})\n\n"
        section += f"`{command}`\n\n{table}\n"
        existing = "# Benchmark results\n"
        if RESULTS.exists():  # shared file: re-read just before appending
            existing = RESULTS.read_text(encoding="utf-8")
        RESULTS.write_text(existing.rstrip("\n") + "\n" + section, encoding="utf-8")


if __name__ == "__main__":
    main()
