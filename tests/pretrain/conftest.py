"""Tiny corpora and pre-trained runs shared by the pre-training tests."""

import random

import pytest

from seqlab.train.config import load_config
from seqlab.train.run import train

WORDS = ["the", "a", "film", "movie", "story", "actor", "plot", "scene", "good", "bad", "great", "boring", "funny", "dull", "long", "short", "music", "city", "river", "king", "queen", "war", "peace", "year", "team", "game", "song", "book"]

TINY_TRANSFORMER = ["model.transformer.d_model=16", "model.transformer.nhead=2",
                    "model.transformer.num_layers=1", "model.transformer.max_length=16"]
TINY_RECURRENT = ["model.recurrent.hidden_size=8", "model.recurrent.embedding_dim=8"]
TINY_TRAINER = ["trainer.batch_size=8", "trainer.max_steps=6", "trainer.eval_every=3",
                "trainer.warmup_steps=0", "trainer.progress=false", "trainer.max_time_minutes=null"]


def sentences(count, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(count)]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "text.txt").write_text("\n".join(sentences(300)) + "\n", encoding="utf-8")
    rows = ["sentence\tlabel"]
    for text in sentences(120, seed=1):
        rows.append(f"{text}\t{'positive' if 'good' in text or 'great' in text else 'negative'}")
    (folder / "labelled.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    pairs = ["first\tsecond"] + [f"{t}\t{' '.join(reversed(t.split()))}"
                                  for t in sentences(100, seed=2)]
    (folder / "pairs.tsv").write_text("\n".join(pairs) + "\n", encoding="utf-8")
    return folder


def pretrain(tmp_path, corpus, *overrides, recipe="pretrain-mlm"):
    config = load_config(recipe, [f"data.train={corpus / 'text.txt'}", "data.vocab_size=60",
                                  "data.max_length=16", "data.min_frequency=1",
                                  *TINY_TRANSFORMER, *TINY_RECURRENT, *TINY_TRAINER, *overrides])
    return train(config, tmp_path)


@pytest.fixture(scope="session")
def mlm_run(tmp_path_factory, corpus):
    return pretrain(tmp_path_factory.mktemp("runs") / "mlm", corpus).run_dir


@pytest.fixture(scope="session")
def mlm_recurrent_run(tmp_path_factory, corpus):
    return pretrain(tmp_path_factory.mktemp("runs") / "mlm-rnn", corpus,
                    "model.family=recurrent").run_dir
