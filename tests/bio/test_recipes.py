"""The DNA recipes end to end on a tiny generated set and on a FASTA file: train, evaluate, predict."""

import json

import pytest

from seqlab.data.readers import DataError
from seqlab.train.config import load_config
from seqlab.train.run import build_task, evaluate_run, predict_run, train

TRAINER = ["trainer.max_steps=3", "trainer.progress=false", "trainer.batch_size=8", "trainer.num_threads=1"]
TINY = {
    "dna-bilstm": ["model.hidden_size=4", "model.embedding_dim=4"],
    "dna-transformer": ["model.d_model=8", "model.nhead=2", "model.num_layers=1", "model.max_length=512"],
}
GENERATED = ["data.train_size=40", "data.valid_size=10", "data.test_size=10", "data.sequence_length=20"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(TINY))
def test_dna_recipe_end_to_end(tmp_path, recipe):
    run_dir = tmp_path / "run"
    train(load_config(recipe, GENERATED + TINY[recipe] + TRAINER), run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0 <= summary["test"]["accuracy"] <= 1
    assert evaluate_run(run_dir)["test"] == pytest.approx(summary["test"], rel=1e-6)
    label, probability = predict_run(run_dir, ["acgtTATAAAAGgcgcNN"])[0].split("\t")
    assert label in ("motif", "none") and 0.5 <= float(probability) <= 1
    with pytest.raises(DataError, match="'Q' at position 3 is not a dna letter"):
        predict_run(run_dir, ["ACQT"])


def test_fasta_files_feed_the_task(tmp_path):
    lines = []
    for i in range(12):
        label = "rich" if i % 2 else "poor"
        lines += [f">s{i} label={label}", ("GCGC" if i % 2 else "ATAT") * 3, "acgn"]
    path = tmp_path / "train.fa"
    path.write_text("\n".join(lines) + "\n")
    task = build_task(load_config("dna-bilstm", [f"data.train={path}", "data.valid_fraction=0.25"]))
    task.prepare()
    assert len(task.examples["train"]) == 9 and len(task.examples["valid"]) == 3
    assert sorted(task.labels.decode(i) for i in range(len(task.labels))) == ["poor", "rich"]
    ids, _ = task.examples["train"][0]
    assert task.tokenizer.decode(ids).replace(" ", "") in {"ATATATATATATACGN", "GCGCGCGCGCGCACGN"}


def test_kmer_tokens(tmp_path):
    path = tmp_path / "k.fa"
    path.write_text(">a label=x\nACGTA\n>b label=y\nACNTT\n>c label=x\nGG\n>d label=y\nTTTT\n")
    task = build_task(load_config("dna-transformer", [f"data.train={path}", "data.kmer=3", "data.valid_fraction=0.25"]))
    task.prepare()
    assert task.tokenizer.vocab_size == 64 + 5  # every 3-mer over A C G T, and the special tokens
    assert task._tokens("ACGTA") == "ACG CGT GTA"
    assert task.tokenizer.decode(task.tokenizer.encode("ACG TTT")) == "ACG TTT"
    # ACN CNT NTT: every 3-mer holding N is unknown.
    assert task.tokenizer.encode(task._tokens("ACNTT")) == [task.tokenizer.unk_id] * 3
