"""A small instruction-following chatbot, from pre-training to `seqlab chat`, on the shared data.

1. `pretrain-clm` — a small GPT-style causal LM on unlabelled text: WikiText-2's validation
   split and both sides of Multi30k's training split (English and German, so the byte-level BPE
   and the model have seen both languages).
2. `sft` — one run on a mixture of instructions, each an ordinary user / assistant turn:

   | task | the user says | the assistant answers | scored on held-out items by |
   |---|---|---|---|
   | translate | "Translate into English: " + a German Multi30k sentence | its English side | BLEU (sacrebleu) on test_2016 |
   | sentiment | "Is this review positive or negative? " + an MR sentence | "positive" / "negative" | accuracy on MR test |
   | question | "What kind of question is this? " + a TREC question | "description", "entity", "abbreviation", "person", "location", "number" | accuracy on TREC test |
   | subjectivity | "Is this sentence subjective or objective? " + a Subj sentence | "subjective" / "objective" | accuracy on Subj test |
   | continue | "Continue this text: " + the start of a WikiText-2 test line | the next words | per-token perplexity of the true continuation |

   Questions over 60 tokens are left out, to fit the 96-token context. The held-out items are never trained on (WikiText-2's test split is not in the pre-training
   text either). Answers are greedy (temperature 0); a label answer counts when its first word is
   the label.
3. a transcript of `seqlab chat RUN --temperature 0` reading a conversation from stdin.

    python benchmarks/alignment_chatbot.py --data ../shared/data --out runs/alignment-chatbot

A stage whose run directory finished with the same command is not trained again. Writes `results.json`,
`table.md` and `transcript.txt` to --out.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import subprocess
import sys
from pathlib import Path

from alignment_mr import machine, pretrain_overrides, read_tsv, require, run_seqlab, write_jsonl

MAX_TOKENS = 60  # longer questions are left out (train and held out), to fit the 96-token context
TREC_NAMES = {"DESC": "description", "ENTY": "entity", "ABBR": "abbreviation", "HUM": "person",
              "LOC": "location", "NUM": "number"}
INSTRUCTIONS = {
    "translate": "Translate into English: ",
    "sentiment": "Is this review positive or negative? ",
    "question": "What kind of question is this? ",
    "subjectivity": "Is this sentence subjective or objective? ",
    "continue": "Continue this text: ",
}
TRANSCRIPT = [
    "Translate into English: Ein Mann fährt mit dem Fahrrad die Straße entlang.",
    "Is this review positive or negative? a gorgeous , witty and deeply moving film .",
    "Is this review positive or negative? the plot is a mess and the jokes fall flat .",
    "What kind of question is this? Where is the Eiffel Tower ?",
    "What kind of question is this? How many players are on a soccer team ?",
    "Is this sentence subjective or objective? the film follows a young boy who moves to paris with his mother .",
    "Continue this text: The history of the city begins",
]


def gz_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [line.strip() for line in handle]


def wiki_continuations(path: Path, rng: random.Random) -> list[tuple[str, str]]:
    """(start, next words) from the ordinary text lines of a WikiText file."""
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if len(words) < 30 or line.lstrip().startswith("="):
            continue
        start = rng.randint(0, len(words) - 28)
        items.append((" ".join(words[start:start + 12]), " ".join(words[start + 12:start + 28])))
    return items


def prepare_corpus(args, data_dir: Path) -> Path:
    """The pre-training text: WikiText-2's validation split and both sides of Multi30k's train."""
    data_dir.mkdir(parents=True, exist_ok=True)
    corpus = data_dir / "corpus.txt"
    if not corpus.is_file():
        m30k = args.data / "multi30k"
        de, en = gz_lines(m30k / "train.de.gz"), gz_lines(m30k / "train.en.gz")
        wiki = (args.data / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")
        corpus.write_text(wiki + "\n".join(en) + "\n" + "\n".join(de) + "\n", encoding="utf-8")
    return corpus


def prepare_mixture(args, data_dir: Path, tokenizer) -> tuple[Path, dict[str, list]]:
    """The SFT mixture (a file) and the held-out items per task. Items whose question is over
    MAX_TOKENS tokens are left out, in training and held out alike, to fit the context."""
    rng = random.Random(args.seed)
    m30k = args.data / "multi30k"
    de, en = gz_lines(m30k / "train.de.gz"), gz_lines(m30k / "train.en.gz")

    sentences = args.data / "sentences"
    n = args.per_task
    train, held_out = {}, {}
    pairs = list(zip(de, en))
    rng.shuffle(pairs)
    train["translate"] = pairs[:n]
    test_de, test_en = (gz_lines(m30k / f"test_2016_flickr.{side}.gz") for side in ("de", "en"))
    held_out["translate"] = list(zip(test_de, test_en))[: args.held_out]
    for task, folder, names in (("sentiment", "mr", None), ("question", "trec", TREC_NAMES),
                                ("subjectivity", "subj", None)):
        rows = [(s, names[y] if names else y) for s, y in read_tsv(sentences / folder / "train.tsv")
]
        rng.shuffle(rows)
        train[task] = rows[:n]
        test = [(s, names[y] if names else y) for s, y in read_tsv(sentences / folder / "test.tsv")
]
        held_out[task] = random.Random(args.seed).sample(test, min(args.held_out, len(test)))
    continuations = wiki_continuations(args.data / "wikitext-2" / "test.txt", rng)
    rng.shuffle(continuations)
    held_out["continue"] = continuations[: args.held_out]
    train["continue"] = continuations[args.held_out:][:n]

    def fits(task: str, question: str) -> bool:
        return len(tokenizer.encode(INSTRUCTIONS[task] + question)) <= MAX_TOKENS

    train = {task: [item for item in items if fits(task, item[0])] for task, items in train.items()}
    held_out = {task: [item for item in items if fits(task, item[0])] for task, items in held_out.items()}
    mixture = [{"messages": [{"role": "user", "content": INSTRUCTIONS[task] + question},
                             {"role": "assistant", "content": answer}]}
               for task, items in train.items() for question, answer in items]
    rng.shuffle(mixture)
    sft = write_jsonl(data_dir / "sft.jsonl", mixture)
    (data_dir / "held_out.json").write_text(json.dumps(held_out, indent=1), encoding="utf-8")
    return sft, held_out


def evaluate(run: Path, held_out: dict[str, list]) -> dict[str, dict]:
    """Greedy answers to the held-out items of each task, scored."""
    import sacrebleu
    import torch

    from seqlab.align import ChatTemplate, sequence_logps, stream_reply
    from seqlab.train.run import open_run

    _, task, model, device = open_run(run)
    template = ChatTemplate(task.tokenizer)
    eos = task.tokenizer.eos_id
    results = {}
    for name, items in held_out.items():
        conversations = [[{"role": "user", "content": INSTRUCTIONS[name] + question}] for question, _ in items]
        if name == "continue":  # perplexity of the true continuation
            total, tokens = 0.0, 0
            for conversation, (_, answer) in zip(conversations, items):
                prompt, reply = template.prompt_and_completion(conversation, answer)
                reply = reply[:-1]  # the words, not the end of turn
                ids = torch.tensor([prompt + reply], device=device)
                with torch.no_grad():
                    logits = model(ids[:, :-1]).logits
                mask = torch.zeros_like(ids[:, 1:], dtype=torch.bool)
                mask[:, len(prompt) - 1:] = True
                total -= float(sequence_logps(logits, ids[:, 1:], mask))
                tokens += len(reply)
            results[name] = {"perplexity": round(math.exp(total / tokens), 2), "items": len(items)}
            continue
        answers = []
        for conversation in conversations:
            prompt = template.encode(conversation, add_generation_prompt=True)[0]
            reply = list(stream_reply(model, prompt, eos, answer_budget(name), temperature=0))
            answers.append(template.decode_reply(reply))
        if name == "translate":
            bleu = sacrebleu.corpus_bleu(answers, [[answer for _, answer in items]])
            results[name] = {"bleu": round(bleu.score, 2), "items": len(items)}
        else:
            right = sum((a.split() or [""])[0].strip(".,!?").lower() == label for a, (_, label) in zip(answers, items))
            results[name] = {"accuracy": round(right / len(items), 4), "items": len(items)}
        results[name]["examples"] = [{"user": c[0]["content"], "reply": a, "reference": r}
                                     for c, a, (_, r) in list(zip(conversations, answers, items))[:3]]
    return results


def answer_budget(task: str) -> int:
    """Tokens a greedy answer may take: a sentence for translation, a word for the labels."""
    return 48 if task == "translate" else 4


def transcript(run: Path) -> str:
    """Each message in a fresh conversation (`/reset` between them): the mixture is single-turn."""
    text = "\n/reset\n".join(TRANSCRIPT) + "\n/exit\n"
    result = subprocess.run([sys.executable, "-m", "seqlab", "chat", str(run), "--temperature", "0",
                             "--max-new-tokens", "48"], input=text, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"seqlab chat {run} failed: {result.stderr.strip()[-2000:]}")
    replies = result.stdout.splitlines()
    if len(replies) != len(TRANSCRIPT):
        raise RuntimeError(f"seqlab chat {run} printed {len(replies)} replies to {len(TRANSCRIPT)} messages")
    lines = [f"$ printf 'MESSAGE\\n/reset\\nMESSAGE ...' | seqlab chat {run.name} --temperature 0"]
    for message, reply in zip(TRANSCRIPT, replies):
        lines += [f"user> {message}", f"assistant> {reply}", "/reset"]
    return "\n".join(lines) + "\n"


def table(results: dict) -> str:
    rows = ["| task | held-out items | score |", "|---|---|---|"]
    for name, result in results.items():
        metric = next(k for k in ("bleu", "accuracy", "perplexity") if k in result)
        value = f"{result[metric] * 100:.1f} %" if metric == "accuracy" else f"{result[metric]}"
        rows.append(f"| {name} | {result['items']} | {metric} {value} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("runs/alignment-chatbot"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-task", type=int, default=4000, help="training items per task")
    parser.add_argument("--held-out", type=int, default=200, help="held-out items per task")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pretrain-minutes", type=float, default=14)
    parser.add_argument("--sft-epochs", type=int, default=4)
    parser.add_argument("--stages", nargs="*", default=["pretrain", "sft", "evaluate"])
    args = parser.parse_args()
    require(args.data, ("wikitext-2/valid.txt", "multi30k/train.de.gz", "sentences/trec/train.tsv",
                        "sentences/mr/train.tsv", "sentences/subj/train.tsv"), "the shared data")
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = prepare_corpus(args, args.out / "data")
    common = [f"trainer.num_threads={args.threads}", f"trainer.seed={args.seed}"]
    runs = args.out / "runs"
    runs.mkdir(exist_ok=True)
    summaries = {}
    if "pretrain" in args.stages:
        summaries["pretrain"] = run_seqlab(
            "pretrain-clm", [*pretrain_overrides(corpus, 6000, args.pretrain_minutes), *common], runs / "base")
    from seqlab.data.tokenizers import Tokenizer

    sft_file, held_out = prepare_mixture(args, args.out / "data", Tokenizer.load(runs / "base" / "tokenizer.json"))
    if "sft" in args.stages:
        summaries["sft"] = run_seqlab("sft", [
            f"data.train={sft_file}", f"model.init_from={runs / 'base'}", "data.max_length=96",
            f"trainer.epochs={args.sft_epochs}", "trainer.batch_size=32", "trainer.lr=0.0005",
            "trainer.warmup_steps=50", "trainer.eval_every=250", "trainer.max_time_minutes=60",
            *common], runs / "sft")
    if "evaluate" in args.stages:
        results = evaluate(runs / "sft", held_out)
        text = transcript(runs / "sft")
        (args.out / "transcript.txt").write_text(text, encoding="utf-8")
        (args.out / "table.md").write_text(table(results), encoding="utf-8")
        (args.out / "results.json").write_text(json.dumps({
            "machine": machine(args.threads),
            "summaries": summaries, "results": results}, indent=2), encoding="utf-8")
        print(table(results))
        print(text)


if __name__ == "__main__":
    main()
