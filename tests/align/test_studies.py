"""The alignment studies' data (benchmarks/alignment_mr.py, alignment_chatbot.py) on a made-up
data folder: the splits the study's fairness rests on, and its diversity metric."""

import argparse
import gzip
import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
alignment_mr = pytest.importorskip("alignment_mr")
alignment_chatbot = pytest.importorskip("alignment_chatbot")

WORDS = ["good", "bad", "film", "plot", "actor", "scene", "story", "music", "long", "short", "fine", "dull"]


def _sentences(count, seed):
    rng = random.Random(seed)
    return [(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + f" s{seed}x{i}",
             rng.choice(["positive", "negative"])) for i in range(count)]


def _tsv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    (root / "wikitext-2").mkdir(parents=True)
    rng = random.Random(0)
    for name in ("valid", "test"):
        (root / "wikitext-2" / f"{name}.txt").write_text(
            "\n".join(" ".join(rng.choice(WORDS) for _ in range(40)) for _ in range(20)) + "\n")
    for folder, labels in (("mr", None), ("subj", ("subjective", "objective")),
                           ("trec", ("DESC", "HUM", "LOC"))):
        for split, seed in (("train", 1), ("valid", 2), ("test", 3)):
            rows = _sentences(120, seed)
            if labels:
                rows = [(s, labels[i % len(labels)]) for i, (s, _) in enumerate(rows)]
            _tsv(root / "sentences" / folder / f"{split}.tsv", rows)
    (root / "multi30k").mkdir()
    for split in ("train", "test_2016_flickr"):
        for side in ("de", "en"):
            with gzip.open(root / "multi30k" / f"{split}.{side}.gz", "wt") as handle:
                handle.write("".join(f"{side} {split} satz {i}\n" for i in range(50)))
    return root


def _mr_files(data, tmp_path):
    args = argparse.Namespace(data=data, seed=0, max_words=40, samples=30, pairs_per_sentence=1)
    return alignment_mr.prepare_data(args, tmp_path / "out")


def test_pairs_carry_only_sentiment(data, tmp_path):
    """Chosen is always a positive sentence's continuation, rejected a negative one's; in half
    of the pairs (within sampling) the chosen one continues the prompt's own sentence."""
    files = _mr_files(data, tmp_path)
    labels = {s: y for s, y in alignment_mr.read_tsv(data / "sentences" / "mr" / "train.tsv")}
    continuation_label = {}
    for sentence, label in labels.items():
        for k in range(2, 6):
            continuation_label[" ".join(sentence.split()[k:])] = label
    pairs = [json.loads(line) for line in files["pairs.jsonl"].read_text().splitlines()]
    assert len(pairs) > 40
    own_chosen = 0
    for pair in pairs:
        assert continuation_label[pair["chosen"]] == "positive"
        assert continuation_label[pair["rejected"]] == "negative"
        own = [s for s in labels if s.startswith(pair["prompt"] + " ")]
        own_chosen += any(s == f"{pair['prompt']} {pair['chosen']}" for s in own)
    assert 0.3 < own_chosen / len(pairs) < 0.7


def test_reward_model_and_judge_read_disjoint_sentences(data, tmp_path):
    """The judge's sentences are not the reward half's, and every text in a pair continues a
    reward-half sentence and no judge sentence; the test openings open test sentences."""
    files = _mr_files(data, tmp_path)
    judge = {s for s, _ in alignment_mr.read_tsv(files["judge.tsv"])}
    reward_half = {s for s, _ in alignment_mr.read_tsv(files["ranker.tsv"])}
    assert judge and reward_half and not judge & reward_half
    assert len(judge) + len(reward_half) == 120  # the whole training split, halved

    def continues(text, sentences):
        return any(s.endswith(" " + text) for s in sentences)

    for line in files["pairs.jsonl"].read_text().splitlines():
        pair = json.loads(line)
        for text in (pair["chosen"], pair["rejected"]):
            assert continues(text, reward_half) and not continues(text, judge), text
    test_openings = [json.loads(line)["prompt"] for line in files["test_prompts.jsonl"].read_text().splitlines()]
    test_sentences = [s for s, _ in alignment_mr.read_tsv(data / "sentences" / "mr" / "test.tsv")]
    assert len(test_openings) == 30
    assert all(any(s.startswith(o + " ") for s in test_sentences) for o in test_openings)


def test_data_made_with_other_settings_is_an_error(data, tmp_path):
    _mr_files(data, tmp_path)
    args = argparse.Namespace(data=data, seed=0, max_words=40, samples=10, pairs_per_sentence=1)
    with pytest.raises(SystemExit, match=r"made with other settings \(samples 30 -> 10\)"):
        alignment_mr.prepare_data(args, tmp_path / "out")


def test_distinct_2_counts_word_bigrams():
    # bigrams: (a b) (b a) (a b) | (a b) -> 2 distinct of 4
    assert alignment_mr.distinct_2(["a b a b", "a b", "c"]) == pytest.approx(2 / 4)
    assert alignment_mr.distinct_2([]) == 0


def test_chatbot_mixture_holds_out_its_test_items(data, tmp_path):
    from seqlab.data.tokenizers import Tokenizer

    args = argparse.Namespace(data=data, seed=0, per_task=40, held_out=10)
    texts = [*alignment_chatbot.INSTRUCTIONS.values(), " ".join(WORDS), "de en train test satz"] * 20
    tokenizer = Tokenizer.train(texts, kind="bpe", vocab_size=600)
    sft, held_out = alignment_chatbot.prepare_mixture(args, tmp_path, tokenizer)
    users = [json.loads(line)["messages"][0]["content"] for line in sft.read_text().splitlines()]
    assert set(held_out) == set(alignment_chatbot.INSTRUCTIONS)
    for task, items in held_out.items():
        assert len(items) == 10
        trained = {u for u in users if u.startswith(alignment_chatbot.INSTRUCTIONS[task])}
        assert trained, task
        assert not trained & {alignment_chatbot.INSTRUCTIONS[task] + q for q, _ in items}, task
    answers = {json.loads(line)["messages"][1]["content"] for line in sft.read_text().splitlines()}
    assert {"description", "person", "location"} <= answers  # TREC codes as words
