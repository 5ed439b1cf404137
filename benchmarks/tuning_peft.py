"""LoRA training beside Hugging Face PEFT on the same tiny GPT-2, and what LoRA on recurrent
weights costs.

    python benchmarks/tuning_peft.py            # CPU, prints the tables
    python benchmarks/tuning_peft.py --write    # also append them to RESULTS.md

One random GPT-2 (``GPT2LMHeadModel``, no dropout) is saved once and loaded twice: by
transformers with PEFT's LoRA (``get_peft_model``), and by seqlab through
:func:`seqlab.models.from_pretrained_hf` with :func:`seqlab.tune.apply_tuning`. Both get the same
LoRA settings and the same start (seqlab's A matrices are copied from PEFT's; B is zero in both),
then train ``--steps`` AdamW steps on the same random token batches. The steps alternate between
the two, so machine noise hits both alike; the table gives the median time per step, its ratio
(seqlab / PEFT) and the loss of both at a few steps (they should agree to float rounding).

The second table times one training step (forward + backward) of a seqlab recurrent layer with
and without LoRA on ``weight_ih_l*`` / ``weight_hh_l*``, on torch's fused kernel (plain LSTM)
and on the compiled time loop (peephole LSTM, GRU with reset_after=False).
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from seqlab.models import from_pretrained_hf
from seqlab.nn import GRU, LSTM
from seqlab.tune import apply_tuning

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

# PEFT module names -> seqlab weight patterns, for the same LoRA targets on both sides.
TARGETS = {
    "c_attn": ["in_proj_weight"],
    "c_attn,c_proj,c_fc": ["in_proj_weight", "out_proj", "linear1", "linear2"],
}


def device_name() -> str:
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _copy_peft_start(peft_model, model) -> None:
    """seqlab's A := PEFT's A for every target (both B are zero), so both start alike."""
    peft_state = {k: v for k, v in peft_model.state_dict().items() if "lora_A" in k}
    ours = {
        "attn.c_attn": "self_attn.parametrizations.in_proj_weight.0.lora_A",
        "attn.c_proj": "self_attn.out_proj.lora_A",
        "mlp.c_fc": "linear1.lora_A",
        "mlp.c_proj": "linear2.lora_A",
    }
    state = model.state_dict()
    with torch.no_grad():
        for name, tensor in peft_state.items():
            layer = name.split(".h.")[1].split(".")[0]
            module = name.split(f".h.{layer}.")[1].rsplit(".lora_A", 1)[0]
            state[f"blocks.layers.{layer}.{ours[module]}"].copy_(tensor)


def _peft_step(model, optimizer):
    def step(ids: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss  # transformers shifts the labels itself
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def _seqlab_step(model, optimizer):
    def step(ids: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        targets = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -100)], dim=1)
        loss = model(ids, targets=targets).loss
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def compare_with_peft(args) -> list[dict]:
    import peft
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=args.vocab, n_positions=args.length, n_embd=args.width, n_layer=args.layers,
        n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
        eos_token_id=1,
    )
    hf_base = transformers.GPT2LMHeadModel(config)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        hf_base.save_pretrained(tmp, safe_serialization=True)
        for peft_targets, seqlab_targets in TARGETS.items():
            torch.manual_seed(1)
            lora = peft.LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
                                   target_modules=peft_targets.split(","), fan_in_fan_out=True)
            theirs = peft.get_peft_model(copy.deepcopy(hf_base), lora).train()
            ours = from_pretrained_hf(tmp).train()
            report = apply_tuning(ours, "lora", r=args.rank, alpha=2 * args.rank,
                                  targets=seqlab_targets)
            _copy_peft_start(theirs, ours)
            trainable_theirs = [p for p in theirs.parameters() if p.requires_grad]
            trainable_ours = [p for p in ours.parameters() if p.requires_grad]
            assert sum(p.numel() for p in trainable_theirs) == report.trainable
            opt_theirs = torch.optim.AdamW(trainable_theirs, lr=args.lr)
            opt_ours = torch.optim.AdamW(trainable_ours, lr=args.lr)
            data = torch.Generator().manual_seed(2)
            losses_theirs, losses_ours, times_theirs, times_ours = [], [], [], []

            step_theirs = _peft_step(theirs, opt_theirs)
            step_ours = _seqlab_step(ours, opt_ours)

            for step in range(args.steps):
                ids = torch.randint(args.vocab, (args.batch, args.length), generator=data)
                pairs = [(step_theirs, losses_theirs, times_theirs),
                         (step_ours, losses_ours, times_ours)]
                for run, losses, times in (pairs if step % 2 else pairs[::-1]):
                    start = time.perf_counter()
                    losses.append(run(ids))
                    times.append(time.perf_counter() - start)
            skip = min(5, args.steps // 5)  # warm-up steps are not timed
            ms_theirs = 1000 * statistics.median(times_theirs[skip:])
            ms_ours = 1000 * statistics.median(times_ours[skip:])
            fastest = min(times_ours[skip:]) / min(times_theirs[skip:])
            rows.append({
                "targets": peft_targets, "trainable": report.trainable, "fastest": fastest,
                "percent": report.trainable_percent, "ms_peft": ms_theirs, "ms_seqlab": ms_ours,
                "losses_peft": losses_theirs, "losses_seqlab": losses_ours,
                "max_loss_gap": max(abs(a - b) for a, b in zip(losses_theirs, losses_ours)),
            })
            print(f"{peft_targets}: PEFT {ms_theirs:.1f} ms, seqlab {ms_ours:.1f} ms per step, "
                  f"max loss gap {rows[-1]['max_loss_gap']:.2e}")
    return rows


def recurrent_cost(args) -> list[dict]:
    """Fastest ms of forward + backward for one layer, without and with LoRA."""
    cases = [
        ("LSTM (fused kernel)", LSTM, {}),
        ("LSTM peephole (compiled loop)", LSTM, {"peephole": True}),
        ("GRU reset_after=False (compiled loop)", GRU, {"reset_after": False}),
    ]
    rows = []
    x = torch.randn(args.rnn_batch, args.rnn_length, args.rnn_hidden)
    for label, layer_class, options in cases:
        torch.manual_seed(0)
        plain = layer_class(args.rnn_hidden, args.rnn_hidden, num_layers=2, batch_first=True,
                            **options)
        holder = torch.nn.Module()
        holder.rnn = copy.deepcopy(plain)
        apply_tuning(holder, "lora", r=args.rank)
        timings = {"plain": [], "lora": []}
        pairs = [("plain", plain), ("lora", holder.rnn)]
        for repeat in range(args.rnn_repeats):
            for name, layer in (pairs if repeat % 2 else pairs[::-1]):
                start = time.perf_counter()
                output, _ = layer(x)
                output.sum().backward()
                timings[name].append(time.perf_counter() - start)
        # The fastest run: on a shared machine the other runs measure the neighbours.
        plain_ms = 1000 * min(timings["plain"][2:])
        lora_ms = 1000 * min(timings["lora"][2:])
        rows.append({"layer": label, "plain": plain_ms, "lora": lora_ms})
        print(f"{label}: plain {plain_ms:.1f} ms, LoRA {lora_ms:.1f} ms")
    return rows


def table(args, rows, recurrent) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## LoRA training beside PEFT on a tiny GPT-2 ({stamp})",
        "",
        "`python benchmarks/tuning_peft.py --write`",
        "",
        f"- device: {device_name()}; torch {torch.__version__}",
        (f"- model: random GPT-2, {args.layers} layers, width {args.width}, 4 heads, "
         f"vocabulary {args.vocab}, no dropout; LoRA r={args.rank}, alpha={2 * args.rank}, no "
         f"dropout; AdamW lr {args.lr}; {args.steps} steps of {args.batch}×{args.length} random "
         f"tokens (seed 2), the same batches for both; seqlab's A copied from PEFT's"),
        "- time: median over the steps after the first 5, the two alternating",
        "",
        ("| targets (PEFT) | trainable | PEFT ms/step | seqlab ms/step | seqlab / PEFT "
         "| fastest steps' ratio "
         f"| loss step 1 | loss step {min(25, args.steps)} (PEFT / seqlab) "
         f"| loss step {args.steps} (PEFT / seqlab) | max gap |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        theirs, ours = row["losses_peft"], row["losses_seqlab"]
        middle = min(24, len(theirs) - 1)
        lines.append(
            f"| {row['targets']} | {row['trainable']:,} ({row['percent']:.2f}%) "
            f"| {row['ms_peft']:.1f} | {row['ms_seqlab']:.1f} "
            f"| **{row['ms_seqlab'] / row['ms_peft']:.2f}** | {row['fastest']:.2f} "
            f"| {theirs[0]:.4f} "
            f"| {theirs[middle]:.4f} / {ours[middle]:.4f} | {theirs[-1]:.4f} / {ours[-1]:.4f} "
            f"| {row['max_loss_gap']:.1e} |"
        )
    lines += [
        "",
        (f"LoRA on recurrent weights (r={args.rank}, `weight_ih_l*` and `weight_hh_l*`), one "
         f"training step of a 2-layer layer, batch {args.rnn_batch}, length {args.rnn_length}, "
         f"width {args.rnn_hidden}, fastest of {args.rnn_repeats - 2} alternating runs "
         f"(base weights trainable in the plain layer, frozen under LoRA):"),
        "",
        "| layer | plain ms | with LoRA ms | cost |",
        "|---|---:|---:|---:|",
    ]
    for row in recurrent:
        lines.append(f"| {row['layer']} | {row['plain']:.1f} | {row['lora']:.1f} "
                     f"| {row['lora'] / row['plain']:.2f}× |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rnn-batch", type=int, default=16)
    parser.add_argument("--rnn-length", type=int, default=32)
    parser.add_argument("--rnn-hidden", type=int, default=128)
    parser.add_argument("--rnn-repeats", type=int, default=41)
    parser.add_argument("--write", action="store_true", help="append the tables to RESULTS.md")
    args = parser.parse_args()
    rows = compare_with_peft(args)
    recurrent = recurrent_cost(args)
    text = table(args, rows, recurrent)
    print(text)
    if args.write:
        with RESULTS.open("a", encoding="utf-8") as results:
            results.write("\n" + text)


if __name__ == "__main__":
    main()
