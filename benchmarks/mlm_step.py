"""One masked-LM training step: seqlab beside Hugging Face's BertForMaskedLM of the same size.

    python benchmarks/mlm_step.py            # CPU, prints the table
    python benchmarks/mlm_step.py --write    # also append it to RESULTS.md

Both models are BERT-style encoders with the same sizes (``--layers``, ``--width``, 4 heads,
feed-forward 4 x width, ``--vocab`` tokens, 64 positions, no dropout) and train with AdamW on the
same batches: ``--batch`` rows of 64 tokens, 15 % chosen (BERT's scheme, seqlab's
``mask_tokens``). transformers scores every position and ignores the unchosen ones in the loss;
seqlab's pre-training task scores the chosen positions only (``positions=``). A third row is
seqlab scoring every position, the same work as transformers. The three alternate step by step,
so machine noise hits them alike; the table gives the median time per step and its ratio to
transformers'.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from seqlab.models import TransformerEncoderModel, TransformerMaskedLM
from seqlab.objectives import mask_tokens

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SPECIALS = 5  # <pad> <unk> <bos> <eos> <mask>


def hf_model(args):
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=args.vocab, hidden_size=args.width, num_hidden_layers=args.layers,
                        num_attention_heads=4, intermediate_size=4 * args.width,
                        max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    return BertForMaskedLM(config).train()


def seqlab_model(args):
    encoder = TransformerEncoderModel(args.vocab, d_model=args.width, nhead=4,
                                      num_layers=args.layers, dropout=0.0, max_length=64)
    return TransformerMaskedLM(encoder).train()


def batches(args):
    generator = torch.Generator().manual_seed(0)
    for _ in range(args.steps):
        ids = torch.randint(SPECIALS, args.vocab, (args.batch, 64), generator=generator)
        inputs, targets = mask_tokens(ids, torch.ones_like(ids, dtype=torch.bool), 4,
                                      (SPECIALS, args.vocab), generator=generator)
        yield inputs, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hf, ours, ours_full = hf_model(args), seqlab_model(args), seqlab_model(args)
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4)
                  for name, model in (("hf", hf), ("ours", ours), ("full", ours_full))}

    def hf_step(inputs, targets):
        return hf(input_ids=inputs, labels=targets).loss

    def our_step(inputs, targets):
        chosen = targets != -100
        logits = ours(inputs, positions=chosen).logits  # (K, V)
        return F.cross_entropy(logits, targets[chosen])

    def full_step(inputs, targets):
        return F.cross_entropy(ours_full(inputs).logits.flatten(0, 1), targets.flatten(),
                               ignore_index=-100)

    steps = {"hf": hf_step, "ours": our_step, "full": full_step}
    times = {name: [] for name in steps}
    for number, (inputs, targets) in enumerate(batches(args)):
        for name, step in steps.items():
            began = time.perf_counter()
            loss = step(inputs, targets)
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            if number >= 3:  # warm-up steps left out
                times[name].append(time.perf_counter() - began)
    median = {name: statistics.median(values) for name, values in times.items()}
    parameters = sum(p.numel() for p in ours.parameters())
    import transformers

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"\n## One masked-LM training step beside transformers' BertForMaskedLM ({stamp})\n\n"
        f"`python benchmarks/mlm_step.py --threads {args.threads}`\n\n"
        f"- device: CPU {platform.machine()}, {args.threads} thread(s); torch {torch.__version__}, "
        f"transformers {transformers.__version__}\n"
        f"- model: {args.layers} layers, width {args.width}, 4 heads, vocabulary {args.vocab} "
        f"({parameters / 1e6:.2f}M parameters in seqlab's), no dropout; batches of {args.batch} x 64 "
        f"tokens, 15 % chosen; AdamW; median of {len(times['hf'])} alternating steps\n\n"
        "| implementation | ms / step | vs transformers |\n|---|---:|---:|\n"
        f"| transformers BertForMaskedLM (every position scored) | {1000 * median['hf']:.0f} | 1.00 |\n"
        f"| seqlab, every position scored | {1000 * median['full']:.0f} | "
        f"{median['full'] / median['hf']:.2f} |\n"
        f"| seqlab, chosen positions only (the pre-training task) | {1000 * median['ours']:.0f} | "
        f"**{median['ours'] / median['hf']:.2f}** |\n"
    )
    print(text)
    if args.write:
        with RESULTS.open("a", encoding="utf-8") as results:
            results.write(text)


if __name__ == "__main__":
    main()
