"""Sampling n replies to one prompt (best-of-n, a GRPO group): one at a time, as a batch, and transformers.

    python benchmarks/group_sampling.py            # CPU, n = 4 and 16, prints a table
    python benchmarks/group_sampling.py --write    # also append it to RESULTS.md

One tiny random GPT-2 (``GPT2LMHeadModel``, saved with safetensors) is loaded by transformers and
by seqlab (:func:`seqlab.models.from_pretrained_hf`), so all candidates sample from the same
weights. Each draws n replies of exactly ``--new-tokens`` tokens (temperature 1, no end token)
to the same prompt:

- seqlab ``stream_reply`` called n times: one row, one token per forward pass (how seqlab drew a
  group before ``sample_replies``);
- seqlab ``sample_replies``: the prompt read as n rows, n tokens per forward pass;
- transformers ``generate(do_sample=True, num_return_sequences=n)``, with its KV cache.

Candidates take turns inside every repeat, so machine noise hits them alike; the table gives the
median sampled tokens per second and the ratio to transformers.
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

from seqlab.align import sample_replies, stream_reply
from seqlab.models import from_pretrained_hf

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
NEVER = -1  # an end-of-turn id no token has: every reply runs to --new-tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--prompt-length", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=args.vocab, n_positions=96, n_embd=args.width,
                                     n_layer=args.layers, n_head=4, bos_token_id=0, eos_token_id=1)
    with tempfile.TemporaryDirectory() as directory:
        transformers.GPT2LMHeadModel(config).save_pretrained(directory, safe_serialization=True)
        peer = transformers.GPT2LMHeadModel.from_pretrained(directory).eval()
        ours = from_pretrained_hf(directory).eval()
    prompt = torch.randint(2, args.vocab, (args.prompt_length,)).tolist()
    new = args.new_tokens

    rows = []
    for n in args.ns:
        generator = torch.Generator().manual_seed(0)

        def one_at_a_time():
            return [list(stream_reply(ours, prompt, NEVER, new, 1.0, generator=generator))
                    for _ in range(n)]

        def batched():
            return sample_replies(ours, prompt, NEVER, new, n, generator=generator)

        def transformers_generate():
            ids = torch.tensor([prompt])
            return peer.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 top_k=0, num_return_sequences=n, max_new_tokens=new,
                                 min_new_tokens=new, pad_token_id=0)

        candidates = {"seqlab stream_reply, n calls": one_at_a_time,
                      "seqlab sample_replies, one batch": batched,
                      "transformers generate(num_return_sequences=n)": transformers_generate}
        times = {name: [] for name in candidates}
        with torch.inference_mode():
            for name, run in candidates.items():  # warm-up, and every reply has its length
                out = run()
                assert all(len(reply) == new for reply in out) if name.startswith("seqlab") \
                    else out.shape == (n, args.prompt_length + new)
            for _ in range(args.repeats):
                for name, run in candidates.items():
                    began = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - began)
        peer_rate = n * new / statistics.median(times["transformers generate(num_return_sequences=n)"])
        for name, measured in times.items():
            rate = n * new / statistics.median(measured)
            rows.append(f"| {n} | {name} | {rate:,.0f} | {rate / peer_rate:.2f}x |")

    table = "\n".join([
        f"- device: CPU {platform.processor() or platform.machine()}, {args.threads} thread(s); "
        f"torch {torch.__version__}, transformers {transformers.__version__}",
        f"- GPT-2 {args.layers} layers, n_embd={args.width}, 4 heads, vocab {args.vocab}; prompt "
        f"{args.prompt_length} tokens, n replies of {new} tokens each, temperature 1; median of "
        f"{args.repeats}",
        "",
        "| n | candidate | sampled tokens/s | vs transformers |",
        "|---:|---|---:|---:|",
        *rows,
    ])
    print(table)
    if args.write:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        section = (f"\n## Sampling n replies to one prompt: one at a time, one batch, transformers "
                   f"({stamp})\n\n`python benchmarks/group_sampling.py --write`\n\n{table}\n")
        existing = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
        RESULTS.write_text(existing.rstrip("\n") + "\n" + section, encoding="utf-8")


if __name__ == "__main__":
    main()
