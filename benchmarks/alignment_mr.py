"""The life-cycle on one measurable goal: "write positive movie-review sentences".

From WikiText-2 and MR (`sentence<TAB>label` TSV, train / valid / test), every step a seqlab
command:

1. `pretrain-clm` — a small GPT-style causal LM on WikiText-2 (byte-level BPE).
2. `sft` — fine-tuned on MR's training sentences, both polarities: the user turn is a
   sentence's opening words, the assistant writes the rest.
3. `reward-model` — Bradley–Terry on preference pairs built from MR's labels, on one half of
   MR's training split: for an opening, the positive continuation is chosen, the negative one
   rejected (in half of the pairs the chosen one is the opening's own continuation, in the
   other half the rejected one, so that fitting the opening carries no signal, only sentiment).
4. the judge — `classify-bilstm` on the *other* half of the training split: another family and
   other sentences than the reward model, so reward hacking shows.
5. `dpo` on the reward model's pairs; `ppo` and `grpo` against the reward model, on openings
   from the training split.

Then each policy (SFT, DPO, PPO, GRPO, and the SFT model's best of --best-of replies by the
reward: best-of-n, which changes no weight) writes one sampled continuation (temperature 1) for
each of 500 fixed openings from MR's test split, and the table reports the judge's positive share of
the whole sentences, the mean reward (the first reward model's, and with --reward-models K the
ensemble's combined reward too), the KL to the SFT model (sum over the reply of
log pi - log pi_sft, averaged), distinct-2 over all replies, and the training wall time.

    python benchmarks/alignment_mr.py --data ../shared/data --out runs/alignment-mr

A stage whose run directory already finished with the same command is not trained again, so an
interrupted study continues where it stopped; data or a run made with other settings is an
error naming the difference (give another --out). Writes `results.json`, `table.md`, `samples.md` and
`curves.png` (reward and KL over PPO / GRPO training) to --out.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import yaml

OPENING_WORDS = (2, 5)  # an opening is the first 2..5 words of a sentence
STAGES = ("pretrain", "sft", "ranker", "sample-pairs", "reward-model", "judge", "dpo", "ppo", "grpo",
          "evaluate")
POLICIES = ("sft", "dpo", "ppo", "grpo", "bon")  # bon: the SFT model's best of --best-of replies


def run_seqlab(recipe: str, overrides: list[str], run_dir: Path) -> dict:
    """`seqlab train RECIPE ...` in a child process, unless run_dir already finished with the same
    command; its summary with the wall time and the command added. The output goes to
    run_dir.log."""
    done = run_dir / "summary.json"
    command = [recipe, *overrides, "trainer.progress=false"]
    if done.is_file():
        summary = json.loads(done.read_text())
        if summary.get("study_command", command) != command:
            changed = sorted(set(command) ^ set(summary["study_command"]))
            sys.exit(f"{run_dir} was trained with other settings ({', '.join(changed)} differ); "
                     f"give another --out, or remove {run_dir} to train it again")
        return summary
    argv = [sys.executable, "-m", "seqlab", "train", *command, "--run-dir", str(run_dir)]
    print("$ seqlab train", " ".join(argv[4:]), flush=True)
    began = time.time()
    result = subprocess.run(argv, check=False, capture_output=True, text=True)
    run_dir.with_suffix(".log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}\n{result.stderr[-3000:]}")
    summary = json.loads(done.read_text())
    summary.update(wall_seconds=round(time.time() - began, 1), study_command=command)
    done.write_text(json.dumps(summary, indent=2))
    return summary


def machine(threads: int) -> str:
    """The CPU's model name and the threads each run was given."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return f"{model}, {threads} thread(s) per run"


def require(data: Path, needed: tuple[str, ...], what: str) -> None:
    """Exit with a message naming the first missing data file."""
    for name in needed:
        if not (data / name).is_file():
            sys.exit(f"{data / name} is missing: give --data the folder holding {what}")


def pretrain_overrides(corpus: Path, vocab_size: int, minutes: float) -> list[str]:
    """The studies' small GPT-style base: byte-level BPE, 4 layers, d_model 128, 96 positions."""
    return [f"data.train={corpus}", f"data.bpe_vocab_size={vocab_size}", "data.bptt=96",
            "model.transformer.d_model=128", "model.transformer.num_layers=4",
            "model.transformer.max_length=96", "trainer.epochs=1000",
            f"trainer.max_time_minutes={minutes}"]


def read_tsv(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [tuple(line.split("\t")[:2]) for line in lines if "\t" in line]


def split_opening(sentence: str, rng: random.Random) -> tuple[str, str] | None:
    words = sentence.split()
    k = rng.randint(*OPENING_WORDS)
    if len(words) < k + 3:
        return None
    return " ".join(words[:k]), " ".join(words[k:])


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def made_with(marker: Path, settings: dict) -> bool:
    """Whether the files beside ``marker`` were made with ``settings`` (False: not made yet);
    exits naming the difference when they were made with others, since the runs trained on
    them would not match new ones."""
    if not marker.is_file():
        return False
    before = json.loads(marker.read_text())
    if before != settings:
        changed = ", ".join(f"{k} {before.get(k)} -> {v}" for k, v in settings.items() if before.get(k) != v)
        sys.exit(f"{marker.parent} was made with other settings ({changed}); give another --out")
    return True


def prepare_data(args, data_dir: Path) -> dict[str, Path]:
    """The corpus, SFT examples, preference pairs, judge data and prompts, written once; a later
    call with other settings is an error (the runs trained on the first files would not match)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    files = {name: data_dir / name for name in (
        "corpus.txt", "sft.jsonl", "pairs.jsonl", "ranker.tsv", "judge.tsv", "prompts.jsonl",
        "test_prompts.jsonl")}
    settings = {"data": str(args.data), "seed": args.seed, "max_words": args.max_words,
                "samples": args.samples, "pairs_per_sentence": args.pairs_per_sentence}
    made = data_dir / "settings.json"
    if made_with(made, settings) and all(path.is_file() for path in files.values()):
        return files
    wiki = args.data / "wikitext-2"
    files["corpus.txt"].write_text("".join((wiki / name).read_text(encoding="utf-8")
                                           for name in ("valid.txt", "test.txt")), encoding="utf-8")
    mr = args.data / "sentences" / "mr"
    rng = random.Random(args.seed)
    train = [(s, y) for s, y in read_tsv(mr / "train.tsv") if len(s.split()) <= args.max_words]
    rng.shuffle(train)
    half = len(train) // 2
    reward_half, judge_half = train[:half], train[half:]

    sft = []
    for sentence, _ in train:
        parts = split_opening(sentence, rng)
        if parts:
            sft.append({"prompt": parts[0], "completion": parts[1]})
    write_jsonl(files["sft.jsonl"], sft)

    split = [(split_opening(s, rng), y) for s, y in reward_half]
    split = [(parts, y) for parts, y in split if parts]
    positives = [rest for (_, rest), y in split if y == "positive"]
    negatives = [rest for (_, rest), y in split if y == "negative"]
    pairs = []
    extra = random.Random(args.seed + 1)  # the extra pairs leave the other files' draws as they are
    for (opening, rest), label in split:
        for number in range(args.pairs_per_sentence):
            draw = rng if number == 0 else extra
            if label == "positive":
                pairs.append({"prompt": opening, "chosen": rest, "rejected": draw.choice(negatives)})
            else:
                pairs.append({"prompt": opening, "chosen": draw.choice(positives), "rejected": rest})
    write_jsonl(files["pairs.jsonl"], pairs)

    files["ranker.tsv"].write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in reward_half),
                                   encoding="utf-8")
    files["judge.tsv"].write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in judge_half),
                                  encoding="utf-8")
    prompts = [{"prompt": parts[0]} for parts in (split_opening(s, rng) for s, _ in train) if parts]
    write_jsonl(files["prompts.jsonl"], prompts)
    test = [split_opening(s, rng) for s, _ in read_tsv(mr / "test.tsv")]
    write_jsonl(files["test_prompts.jsonl"], [{"prompt": p[0]} for p in test if p][: args.samples])
    made.write_text(json.dumps(settings), encoding="utf-8")
    return files


def distinct_2(texts: list[str]) -> float:
    """Distinct word bigrams over all texts / all word bigrams."""
    pairs = [pair for text in texts for pair in itertools.pairwise(text.split())]
    return len(set(pairs)) / max(len(pairs), 1)


def sample_policy(run: Path, openings: list[str], max_new_tokens: int, seed: int, best_of: int = 1,
                  score=None):
    """One reply (temperature 1) per opening: (prompt ids, reply ids, reply texts, model, task).
    With best_of > 1, each the one `score(prompt, replies)` rates highest of that many (best-of-n)."""
    import torch

    from seqlab.align import best_of_n, stream_reply
    from seqlab.train.run import open_run

    _, task, model, device = open_run(run)
    policy = getattr(model, "language_model", model)
    generator = torch.Generator(device=device).manual_seed(seed)
    prompts, replies = [], []
    for opening in openings:
        prompt = task.template.encode([{"role": "user", "content": opening}], add_generation_prompt=True)[0]
        if best_of == 1:
            reply = list(stream_reply(policy, prompt, task.tokenizer.eos_id, max_new_tokens, temperature=1.0,
                                      generator=generator, include_end=True))
        else:
            reply, _ = best_of_n(policy, prompt, task.tokenizer.eos_id, max_new_tokens, best_of, score,
                                 temperature=1.0, generator=generator)
        prompts.append(prompt)
        replies.append(reply or [task.tokenizer.eos_id])
    texts = [task.template.decode_reply(reply) for reply in replies]
    return prompts, replies, texts, policy, task


def sample_pairs(args, runs: Path, files: dict[str, Path], path: Path) -> Path:
    """Preference pairs from the SFT model's own samples: two replies to each training opening,
    the one the ranker (a sentiment classifier on the reward half) finds more positive chosen;
    pairs whose two scores are within --min-gap are left out."""
    import torch

    from seqlab.train.run import open_run

    settings = {"seed": args.seed, "sample_pairs": args.sample_pairs, "min_gap": args.min_gap,
                "max_new_tokens": args.max_new_tokens}
    marker = path.with_suffix(".settings.json")
    if made_with(marker, settings) and path.is_file():
        return path
    openings = [json.loads(line)["prompt"] for line in files["prompts.jsonl"].read_text().splitlines()]
    openings = openings[: args.sample_pairs]
    replies = [sample_policy(runs / "sft", openings, args.max_new_tokens, args.seed + k)[2] for k in (1, 2)]
    _, task, ranker, device = open_run(runs / "ranker")

    def positive(texts: list[str]) -> list[float]:
        with torch.no_grad():
            lines = task.predict(ranker, [f"{o} {t}".strip() for o, t in zip(openings, texts)], device)
        return [float(p) if label == "positive" else 1 - float(p)
                for label, p in (line.split("\t") for line in lines)]

    scores = [positive(texts) for texts in replies]
    pairs = []
    for opening, a, b, score_a, score_b in zip(openings, *replies, *scores):
        if a and b and abs(score_a - score_b) >= args.min_gap:
            chosen, rejected = (a, b) if score_a > score_b else (b, a)
            pairs.append({"prompt": opening, "chosen": chosen, "rejected": rejected})
    write_jsonl(path, pairs)
    marker.write_text(json.dumps(settings), encoding="utf-8")
    return path


def reply_logps(model, prompts: list[list[int]], replies: list[list[int]], pad_id: int):
    """(N,) log pi(reply | prompt), summed over the reply tokens."""
    import torch

    from seqlab.align import sequence_logps
    from seqlab.tasks.rl import reply_batch

    device = next(model.parameters()).device
    totals = []
    for start in range(0, len(prompts), 64):
        rows = slice(start, start + 64)
        batch = reply_batch([p + r for p, r in zip(prompts[rows], replies[rows])], replies[rows], pad_id, device)
        with torch.no_grad():
            logits = model(batch["inputs"]).logits
        totals.append(sequence_logps(logits, batch["labels"], batch["mask"]))
    return torch.cat(totals)


def reward_auc(args, reward_model, task) -> float:
    """How well the reward model ranks MR's test sentences (each its opening as the prompt, its
    rest as the reply): the chance that a positive one outscores a negative one (ROC AUC), the
    pairwise accuracy on sentences it never saw."""
    import torch
    from sklearn.metrics import roc_auc_score

    from seqlab.data.batching import pad_sequences

    rng = random.Random(args.seed)
    rows, labels = [], []
    for sentence, label in read_tsv(args.data / "sentences" / "mr" / "test.tsv"):
        parts = split_opening(sentence, rng)
        if parts:
            prompt, reply = task.template.prompt_and_completion([{"role": "user", "content": parts[0]}], parts[1])
            rows.append(torch.tensor((prompt + reply)[: task.data.max_length + 1]))
            labels.append(label == "positive")
    scores = []
    with torch.no_grad():
        for start in range(0, len(rows), 64):
            ids, lengths = pad_sequences(rows[start:start + 64], pad_value=task.tokenizer.pad_id)
            scores += reward_model(ids, lengths=lengths).rewards.tolist()
    return float(roc_auc_score(labels, scores))


def judge_on_test(args, judge_task, judge, device) -> dict[str, float]:
    """The judge's positive share on MR's real test sentences of each label: what human-written
    reviews of that polarity score, the reference for the policies' share."""
    import torch

    sentences = read_tsv(args.data / "sentences" / "mr" / "test.tsv")
    shares = {}
    for label in ("positive", "negative"):
        texts = [s for s, y in sentences if y == label]
        with torch.no_grad():
            verdicts = [line.split("\t")[0] for line in judge_task.predict(judge, texts, device)]
        shares[label] = sum(v == "positive" for v in verdicts) / len(verdicts)
    return shares


def report(args, runs: Path, files: dict[str, Path]) -> None:
    """Sample every policy on the test openings; score with the reward model, the judge and the
    SFT model; write the table, samples and curves."""
    import torch

    from seqlab.data.batching import pad_sequences
    from seqlab.models import load
    from seqlab.train.run import open_run

    openings = [json.loads(line)["prompt"] for line in files["test_prompts.jsonl"].read_text().splitlines()]
    reward_model = load(runs / "reward-model").eval()
    # The ensemble the policies were trained against, when there is one: its combined reward too.
    ensemble = [reward_model] + [load(runs / f"reward-model-{k}").eval() for k in range(1, args.reward_models)]
    combine = {"mean": lambda r: r.mean(0), "min": lambda r: r.min(0).values}[args.reward_combine]
    _, judge_task, judge, judge_device = open_run(runs / "judge")
    _, sft_task, sft_model, _ = open_run(runs / "sft")
    pad = sft_task.tokenizer.pad_id
    def rewards_of(sequences: list[list[int]]) -> torch.Tensor:
        """(models, N): every reward model's score of each prompt + reply."""
        ids, lengths = pad_sequences([torch.tensor(sequence) for sequence in sequences], pad_value=pad)
        with torch.no_grad():
            return torch.stack([model(ids, lengths=lengths).rewards for model in ensemble])

    def trained_reward(prompt: list[int], replies: list[list[int]]) -> torch.Tensor:
        """The reward the RL policies maximise: the one model's, or the ensemble's combined."""
        return combine(rewards_of([prompt + reply for reply in replies]))

    rows, samples = {}, {}
    for name in args.policies:
        run = runs / ("sft" if name == "bon" else name)
        if not (run / "summary.json").is_file():
            continue
        began = time.time()
        best_of = args.best_of if name == "bon" else 1
        prompts, replies, texts, policy, _ = sample_policy(run, openings, args.max_new_tokens, args.seed,
                                                           best_of, trained_reward)
        sentences = [f"{o} {t}".strip() for o, t in zip(openings, texts)]
        with torch.no_grad():
            verdicts = [line.split("\t")[0] for line in judge_task.predict(judge, sentences, judge_device)]
        rewards = rewards_of([p + r for p, r in zip(prompts, replies)])
        if name == "bon":  # no policy to score: the bound on the KL of best-of-n to its sampler
            kl, wall = math.log(args.best_of) - (args.best_of - 1) / args.best_of, None
        else:
            kl = float((reply_logps(policy, prompts, replies, pad) - reply_logps(sft_model, prompts, replies, pad)).mean())
            wall = json.loads((run / "summary.json").read_text()).get("wall_seconds")
        rows[name] = {
            "judge_positive": sum(v == "positive" for v in verdicts) / len(verdicts),
            "reward": float(rewards[0].mean()), "kl": kl, "distinct_2": distinct_2(texts),
            "length_words": sum(len(t.split()) for t in texts) / len(texts),
            "train_seconds": wall, "sample_seconds": round(time.time() - began, 1),
        }
        if len(ensemble) > 1:
            rows[name]["ensemble_reward"] = float(combine(rewards).mean())
        samples[name] = sentences[:8]
        print(name, rows[name], flush=True)
    judge_summary = json.loads((runs / "judge" / "summary.json").read_text())
    judge_summary["judged_positive_on_test"] = judge_on_test(args, judge_task, judge, judge_device)
    rm_summary = json.loads((runs / "reward-model" / "summary.json").read_text())
    rm_summary["test_auc"] = reward_auc(args, reward_model, sft_task)
    out = args.out
    (out / "results.json").write_text(json.dumps({
        "machine": machine(args.threads),
        "policies": rows, "judge": judge_summary, "reward_model": rm_summary,
        "samples": samples}, indent=2), encoding="utf-8")
    human = judge_summary["judged_positive_on_test"]
    ceiling = (f"\nThe judge calls {human['positive'] * 100:.1f} % of MR's positive test sentences positive "
               f"(and {human['negative'] * 100:.1f} % of the negative ones).\n")
    (out / "table.md").write_text(table(rows, args) + ceiling, encoding="utf-8")
    (out / "samples.md").write_text("".join(
        f"**{name}**\n\n" + "".join(f"- {s}\n" for s in lines) + "\n" for name, lines in samples.items()),
        encoding="utf-8")
    curves(runs, out / "curves.png", [name for name in args.policies if (runs / name / "rl.jsonl").is_file()])
    print(table(rows, args) + ceiling)


def table(rows: dict, args) -> str:
    sft = rows.get("sft", {})
    ensemble = args.reward_models > 1
    extra = f" {args.reward_combine} of {args.reward_models} reward models |" if ensemble else ""
    lines = ["| policy | judged positive | mean reward |" + extra + " KL to SFT (nats) | distinct-2 (x SFT) | words | train wall |",
             "|---|---|---|" + "---|" * ensemble + "---|---|---|---|"]
    for name, r in rows.items():
        ratio = r["distinct_2"] / sft["distinct_2"] if sft else float("nan")
        wall = f"{r['train_seconds'] / 60:.1f} min" if r.get("train_seconds") else "-"
        combined = f" {r['ensemble_reward']:+.2f} |" if ensemble else ""
        policy, kl = name.upper(), f"{r['kl']:.2f}"
        if name == "bon":
            policy, kl = f"SFT, best of {args.best_of}", f"<= {r['kl']:.2f}"
        lines.append(f"| {policy} | {r['judge_positive'] * 100:.1f} % | {r['reward']:+.2f} |{combined} "
                     f"{kl} | {r['distinct_2']:.3f} ({ratio:.3f}x) | {r['length_words']:.1f} | {wall} |")
    return "\n".join(lines) + "\n"


def curves(runs: Path, path: Path, names: list[str]) -> None:
    """Validation reward and KL over PPO and GRPO training, against the replies sampled (PPO
    trains 4 epochs on each rollout of 16, GRPO once on each rollout of 8 prompts x 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for name in names:
        log = runs / name / "metrics.jsonl"
        if not log.is_file():
            continue
        records = [json.loads(line) for line in log.read_text().splitlines()]
        records = [r for r in records if r.get("split") == "valid"]
        config = yaml.safe_load((runs / name / "config.yaml").read_text())
        o = config["objective"]
        replies_per_step = (config["trainer"]["batch_size"] * o.get("group_size", 1)
                            / (o.get("epochs", 1) * o.get("num_minibatches", 1)))
        replies = [r["step"] * replies_per_step for r in records]
        for axis, key in zip(axes, ("reward", "kl")):
            axis.plot(replies, [r["metrics"][key] for r in records], marker=".", label=name.upper())
    for axis, label in zip(axes, ("mean reward (validation openings)", "KL to the SFT model (nats)")):
        axis.set_xlabel("replies sampled in training")
        axis.set_ylabel(label)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("runs/alignment-mr"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--max-words", type=int, default=40, help="longer MR sentences are left out")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pretrain-minutes", type=float, default=12)
    parser.add_argument("--stages", nargs="*", default=None, choices=STAGES,
                        help="only these stages (default: all, in order)")
    parser.add_argument("--pairs-per-sentence", type=int, default=1,
                        help="preference pairs per reward-half sentence, each against another sentence")
    parser.add_argument("--pairs", choices=("labels", "samples"), default="labels",
                        help="the reward model's and DPO's pairs: from MR's labels, or the SFT model's "
                             "own samples ranked by a sentiment classifier (a GRU) on the reward half")
    parser.add_argument("--sample-pairs", type=int, default=3000, help="openings sampled for --pairs samples")
    parser.add_argument("--min-gap", type=float, default=0.2,
                        help="--pairs samples: the least gap in the ranker's P(positive) that makes a pair")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--rl-lr", type=float, default=1e-4, help="PPO and GRPO learning rate")
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--ppo-rollouts", type=int, default=100, help="rollouts of 16 prompts, 4 epochs each")
    parser.add_argument("--grpo-rollouts", type=int, default=150, help="rollouts of 8 prompts x 4 replies")
    parser.add_argument("--rl-minutes", type=float, default=None,
                        help="PPO's and GRPO's time budget (trainer.max_time_minutes; the recipes' own when unset)")
    parser.add_argument("--grpo-beta", type=float, default=0.04, help="GRPO's KL weight (objective.beta)")
    parser.add_argument("--diversity", type=float, default=0.0,
                        help="PPO's and GRPO's objective.diversity_coef: a reward bonus of this "
                             "times the share of a reply's bigrams no other reply of the rollout has")
    parser.add_argument("--reward-models", type=int, default=1,
                        help="reward models PPO and GRPO read (an ensemble, each its own seed)")
    parser.add_argument("--reward-combine", choices=("mean", "min"), default="mean",
                        help="how an ensemble's rewards combine (reward.combine)")
    parser.add_argument("--best-of", type=int, default=16,
                        help="the bon policy: the SFT model's best of N replies by the (combined) reward")
    parser.add_argument("--dpo-lr", type=float, default=1e-4)
    parser.add_argument("--policies", nargs="*", default=list(POLICIES),
                        help="policies to evaluate: run directories under OUT/runs, and bon (default: all five)")
    parser.add_argument("--quick", action="store_true",
                        help="a pass through every stage in minutes (10 steps each, 20 samples): checks the pipeline")
    args = parser.parse_args()
    if args.best_of < 1 or args.reward_models < 1:
        parser.error("--best-of and --reward-models need a whole number >= 1 "
                     f"(got --best-of {args.best_of}, --reward-models {args.reward_models})")
    if args.diversity < 0:
        parser.error(f"--diversity is a bonus, a number >= 0 (got {args.diversity})")
    if args.quick:
        args.samples, args.pretrain_minutes = 20, 0.5
    require(args.data, ("wikitext-2/valid.txt", "sentences/mr/train.tsv"), "WikiText-2 and MR")
    args.out.mkdir(parents=True, exist_ok=True)
    files = prepare_data(args, args.out / "data")
    common = [f"trainer.num_threads={args.threads}", f"trainer.seed={args.seed}"]
    runs = args.out / "runs"
    runs.mkdir(exist_ok=True)
    stages = set(args.stages or STAGES)
    mr = args.data / "sentences" / "mr"
    sft, rm = runs / "sft", runs / "reward-model"
    # An ensemble: reward-model-1, ... differ from reward-model in seed (their own 10 % held out).
    ensemble = [rm] + [runs / f"reward-model-{k}" for k in range(1, args.reward_models)]
    reward = ([f"reward.from={rm}"] if args.reward_models == 1 else
              [f"reward.from=[{','.join(map(str, ensemble))}]", f"reward.combine={args.reward_combine}"])
    budget = [] if args.rl_minutes is None else [f"trainer.max_time_minutes={args.rl_minutes:g}"]
    diversity = [f"objective.diversity_coef={args.diversity:g}"] if args.diversity else []
    pairs = files["pairs.jsonl"] if args.pairs == "labels" else args.out / "data" / "sample_pairs.jsonl"
    recipes = {
        "pretrain": ("pretrain-clm", pretrain_overrides(files["corpus.txt"], 4000, args.pretrain_minutes)),
        "sft": ("sft", [
            f"data.train={files['sft.jsonl']}", f"model.init_from={runs / 'pretrain'}",
            "data.max_length=80", "trainer.epochs=3", "trainer.batch_size=32", "trainer.lr=0.0005",
            "trainer.warmup_steps=50", "trainer.eval_every=100"]),
        "reward-model": ("reward-model", [
            f"data.train={pairs}", f"model.init_from={sft}", "data.max_length=80",
            "data.valid_fraction=0.1", "trainer.epochs=2", "trainer.batch_size=16",
            "trainer.lr=0.0002", "trainer.eval_every=100"]),
        "ranker": ("classify-bilstm", [
            f"data.train={files['ranker.tsv']}", f"data.valid={mr / 'valid.tsv'}",
            f"data.test={mr / 'test.tsv'}", "data.text_column=sentence", "model.cell=gru"]),
        "judge": ("classify-bilstm", [
            f"data.train={files['judge.tsv']}", f"data.valid={mr / 'valid.tsv'}",
            f"data.test={mr / 'test.tsv'}", "data.text_column=sentence"]),
        "dpo": ("dpo", [
            f"data.train={pairs}", f"model.init_from={sft}", "data.max_length=80",
            "trainer.epochs=2", "trainer.batch_size=16", f"trainer.lr={args.dpo_lr}",
            "trainer.eval_every=100"]),
        "ppo": ("ppo", [
            f"data.train={files['prompts.jsonl']}", f"model.init_from={sft}", *reward,
            "data.max_length=64", "data.valid_fraction=0.01", f"objective.max_new_tokens={args.max_new_tokens}",
            f"objective.kl_coef={args.kl_coef}", *diversity, "trainer.batch_size=16", f"trainer.lr={args.rl_lr}",
            f"trainer.max_steps={args.ppo_rollouts * 4}", "trainer.eval_every=40",
            "trainer.eval_max_batches=4", *budget]),
        "grpo": ("grpo", [
            f"data.train={files['prompts.jsonl']}", f"model.init_from={sft}", *reward,
            "data.max_length=64", "data.valid_fraction=0.01", f"objective.max_new_tokens={args.max_new_tokens}",
            f"objective.beta={args.grpo_beta}", *diversity, "trainer.batch_size=8", f"trainer.lr={args.rl_lr}",
            f"trainer.max_steps={args.grpo_rollouts}", "trainer.eval_every=10",
            "trainer.eval_max_batches=8", *budget]),
    }
    for stage in STAGES:
        if args.pairs == "labels" and stage in ("ranker", "sample-pairs"):
            continue
        if stage == "sample-pairs" and stage in stages:
            sample_pairs(args, runs, files, pairs)
        if stage in stages and stage in recipes:
            recipe, overrides = recipes[stage]
            quick = ["trainer.max_steps=10", "trainer.eval_every=5", "trainer.max_time_minutes=1"] if args.quick else []
            run_seqlab(recipe, [*overrides, *common, *quick], runs / stage)
            if stage == "reward-model":
                for k, run in enumerate(ensemble[1:], start=1):
                    seeded = [o for o in common if not o.startswith("trainer.seed=")]
                    run_seqlab(recipe, [*overrides, *seeded, f"trainer.seed={args.seed + k}", *quick], run)
    if "evaluate" in stages:
        report(args, runs, files)

if __name__ == "__main__":
    main()
