"""The pretrain task end to end on tiny data: both objectives on both families, resume, errors."""

import json

import pytest

from seqlab.cli import main
from seqlab.train.config import ConfigError, load_config
from seqlab.train.run import predict_run, train

from .conftest import TINY_RECURRENT, TINY_TRAINER, TINY_TRANSFORMER, pretrain


def test_masked_lm_predicts_masks_and_every_family_objective_pair_trains(tmp_path, corpus,
                                                                         mlm_run,
                                                                         mlm_recurrent_run):
    for run in (mlm_run, mlm_recurrent_run):
        summary = json.loads((run / "summary.json").read_text())
        assert summary["valid"]["loss"] > 0 and 0 <= summary["valid"]["accuracy"] <= 1
        (line,) = predict_run(run, ["the <mask> film"])
        # the mask is filled with a regular token (with this tiny vocabulary, maybe a piece)
        assert line.startswith("the") and line.endswith("film") and "<mask>" not in line
        assert len(line) > len("the film")
    contrastive = pretrain(tmp_path / "c", corpus, "model.family=recurrent",
                           recipe="pretrain-contrastive")
    assert 0 <= contrastive.summary["valid"]["accuracy"] <= 1
    similarity = predict_run(contrastive.run_dir, ["a good film", "a good film", "music"])
    assert float(similarity[0]) == pytest.approx(1.0, abs=1e-5)


def test_supervised_pairs_and_whole_word_masking(tmp_path, corpus):
    config = load_config("pretrain-contrastive", [
        f"data.train={corpus / 'pairs.tsv'}", "data.pair_columns=[first,second]",
        "data.vocab_size=80", "data.max_length=16", "data.min_frequency=1",
        *TINY_TRANSFORMER, *TINY_RECURRENT, *TINY_TRAINER])
    result = train(config, tmp_path / "pairs")
    # The loss of a batch of pairs is InfoNCE with the *other column* as the positive, both ways,
    # written out here from the trained encoder's sentence vectors.
    import torch
    import torch.nn.functional as F

    from seqlab.train.run import open_run

    _, task, model, _ = open_run(result.run_dir)
    task.prepare(fit_vocab=False)
    model.eval()
    batch = task._collate(task.examples["train"][:8], seed=0)
    with torch.no_grad():
        loss, sums, count = task._losses(model, batch)
        first = model(batch["inputs"], lengths=batch["lengths"]).pooled
        second = model(batch["positives"], lengths=batch["positive_lengths"]).pooled
    cosines = F.normalize(first, dim=-1) @ F.normalize(second, dim=-1).T / 0.05  # (8, 8)
    labels = torch.arange(8)
    expected = (F.cross_entropy(cosines, labels) + F.cross_entropy(cosines.T, labels)) / 2
    assert count == 8 and float(loss) == pytest.approx(float(expected), rel=1e-4, abs=1e-6)
    assert sums["accuracy"] == float((cosines.argmax(1) == labels).sum())
    whole = pretrain(tmp_path / "wwm", corpus, "objective.whole_word=true")
    assert whole.summary["run"]["steps"] == 6


def test_whole_word_batches_choose_every_piece_of_a_word_together(corpus):
    from seqlab.train.run import build_task

    config = load_config("pretrain-mlm", [
        f"data.train={corpus / 'text.txt'}", "data.vocab_size=40", "data.max_length=16",
        "data.min_frequency=1", "objective.whole_word=true", "objective.mask_probability=0.4"])
    task = build_task(config)
    task.prepare()
    tokenizer, chosen_words = task.tokenizer, 0
    for index in range(0, 40, 8):
        key = (0, tuple(range(index, index + 8)))
        batch = task.collate(key)
        original = [task.examples["train"][i] for i in key[1]]
        for row, ids in enumerate(original):
            chosen = (batch["targets"][row, : len(ids)] != -100).tolist()
            word = []  # the chosen flags of the current word's pieces
            for token_id, flag in zip(ids, chosen):
                if not tokenizer.id_to_token(token_id).startswith("##") and word:
                    assert all(word) or not any(word), (ids, chosen)
                    chosen_words += all(word)
                    word = []
                word.append(flag)
    assert chosen_words > 0


def test_an_interrupted_run_resumes_to_the_same_metrics(tmp_path, corpus):
    # A word vocabulary: the two fresh runs must not differ in their (tied) sub-word pieces.
    options = [f"data.train={corpus / 'text.txt'}", "data.tokenizer=word", "data.max_length=16",
               "data.min_frequency=1", *TINY_TRANSFORMER, *TINY_TRAINER,
               "trainer.save_every=2", "trainer.max_steps=6"]
    config = load_config("pretrain-mlm", options)
    whole = train(config, tmp_path / "whole")
    train(config, tmp_path / "cut", stop_after_step=3)
    resumed = train(config, tmp_path / "cut", resume=True)
    assert resumed.summary["valid"] == whole.summary["valid"]


def test_bad_settings_are_one_line_errors(tmp_path, corpus, capsys):
    base = ["train", "pretrain-mlm", f"data.train={corpus / 'text.txt'}", "--run-dir",
            str(tmp_path / "x")]
    assert main(base + ["model.family=recurrent", "model.recurrent.bidirectional=false"]) == 2
    assert "bidirectional=true" in capsys.readouterr().err
    assert main(base + ["model.pooling=cls", "model.family=recurrent"]) == 2
    assert "does not apply to model.family=recurrent" in capsys.readouterr().err
    assert main(base + ["objective.mask_replace=[0.5,0.2,0.2]"]) == 2
    assert "sum to 1" in capsys.readouterr().err
    assert main(["train", "pretrain-mlm"]) == 2
    assert "data.train=PATH" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="pair_columns"):
        load_config("pretrain-mlm", ["data.pair_columns=[a]"])
