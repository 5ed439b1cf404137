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
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from recurrent import device_name  # benchmarks/recurrent.py: the CPU's model name and threads

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

    def candidates(n: int, generator: torch.Generator) -> dict:
        """Each candidate draws n replies of `new` tokens to the prompt."""
        ids = torch.tensor([prompt])
        return {
            "seqlab stream_reply, n calls": lambda: [
                list(stream_reply(ours, prompt, NEVER, new, 1.0, generator=generator)) for _ in range(n)],
            "seqlab sample_replies, one batch": lambda: sample_replies(
                ours, prompt, NEVER, new, n, generator=generator),
            "transformers generate(num_return_sequences=n)": lambda: peer.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                num_return_sequences=n, max_new_tokens=new, min_new_tokens=new, pad_token_id=0),
        }

    rows = []
    for n in args.ns:
        runs = candidates(n, torch.Generator().manual_seed(0))
        times = {name: [] for name in runs}
        with torch.inference_mode():
            for run in runs.values():  # warm-up; every candidate draws n x new tokens
                out = run()
                lengths = [len(reply) for reply in out] if isinstance(out, list) else \
                    [out.size(1) - args.prompt_length] * out.size(0)
                assert lengths == [new] * n, lengths
            for _ in range(args.repeats):
                for name, run in runs.items():
                    began = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - began)
        peer_rate = n * new / statistics.median(times["transformers generate(num_return_sequences=n)"])
        for name, measured in times.items():
            rate = n * new / statistics.median(measured)
            rows.append(f"| {n} | {name} | {rate:,.0f} | {rate / peer_rate:.2f}x |")

    table = "\n".join([
        (f"- device: {device_name(torch.device('cpu'))}; torch {torch.__version__}, "
         f"transformers {transformers.__version__}"),
        (f"- GPT-2 {args.layers} layers, n_embd={args.width}, 4 heads, vocab {args.vocab}; prompt "
         f"{args.prompt_length} tokens, n replies of {new} tokens each, temperature 1; median of "
         f"{args.repeats}"),
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
