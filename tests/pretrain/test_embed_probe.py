"""`seqlab embed` and `seqlab probe`: the vectors are the model's, padding does not change them,
and the probe is scikit-learn's logistic regression on them."""

import json

import numpy as np
import pytest
import torch

from seqlab.cli import main
from seqlab.embed import ProbeConfig, embed_texts, probe
from seqlab.train.run import open_run

TEXTS = ["the good film", "a bad long boring movie about the war", "music", "the king and queen"]


def test_embed_equals_the_models_mean_hidden_state_and_ignores_padding(mlm_run):
    vectors = embed_texts(mlm_run, TEXTS)
    _, task, model, _ = open_run(mlm_run)
    with torch.no_grad():
        for text, vector in zip(TEXTS, vectors):
            ids = torch.tensor([task.tokenizer.encode(text)[:16]])
            hidden = model(ids).hidden[0]  # (L, H), no padding when alone
            np.testing.assert_allclose(vector, hidden.mean(0).numpy(), rtol=1e-5, atol=1e-5)
    alone = [embed_texts(mlm_run, [text])[0] for text in TEXTS]
    np.testing.assert_allclose(np.stack(alone), vectors, rtol=1e-5, atol=1e-5)


def test_embed_uses_the_pooled_vector_of_a_sentence_encoder(tmp_path, corpus):
    from .conftest import pretrain

    run = pretrain(tmp_path / "simcse", corpus, recipe="pretrain-contrastive").run_dir
    vectors = embed_texts(run, TEXTS)
    _, task, model, _ = open_run(run)
    with torch.no_grad():
        ids = torch.tensor([task.tokenizer.encode(TEXTS[1])[:16]])
        expected = model(ids).pooled[0].numpy()
    np.testing.assert_allclose(vectors[1], expected, rtol=1e-5, atol=1e-5)


def test_embed_command_writes_jsonl_and_npy(mlm_run, tmp_path, capsys):
    assert main(["embed", str(mlm_run), *TEXTS[:2]]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == TEXTS[:2]
    expected = embed_texts(mlm_run, TEXTS[:2])
    np.testing.assert_allclose(np.array([line["embedding"] for line in lines]), expected,
                               atol=1e-5)
    assert main(["embed", str(mlm_run), *TEXTS, "--format", "npy",
                 "--out", str(tmp_path / "e.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), embed_texts(mlm_run, TEXTS), atol=1e-6)


def test_probe_is_logistic_regression_on_the_vectors(mlm_run, corpus):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from seqlab.data.readers import read_labelled

    labelled = str(corpus / "labelled.tsv")
    config = ProbeConfig.model_validate({"data": {"train": labelled, "test": labelled,
                                                  "text_column": "sentence"},
                                         "probe": {"C": 0.5}})
    results = probe(mlm_run, config)
    rows = read_labelled(labelled, "sentence", "label")
    features = embed_texts(mlm_run, [text for text, _ in rows])
    labels = [label for _, label in rows]
    by_hand = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000,
                                                                 random_state=0))
    expected = by_hand.fit(features, labels).score(features, labels)
    assert results["test_accuracy"] == pytest.approx(expected)
    assert results["dimensions"] == features.shape[1]
    # --random-init: the same architecture with fresh weights, seeded, so other vectors
    random_vectors = embed_texts(mlm_run, TEXTS, random_init=True, seed=3)
    assert random_vectors.shape == embed_texts(mlm_run, TEXTS).shape
    assert not np.allclose(random_vectors, embed_texts(mlm_run, TEXTS), atol=1e-3)
    np.testing.assert_array_equal(random_vectors,
                                  embed_texts(mlm_run, TEXTS, random_init=True, seed=3))


def test_probe_command_and_its_errors(mlm_run, corpus, capsys):
    labelled = str(corpus / "labelled.tsv")
    assert main(["probe", str(mlm_run), f"data.train={labelled}", f"data.valid={labelled}",
                 f"data.test={labelled}", "data.text_column=sentence", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["C"] in (0.01, 0.1, 1.0, 10.0) and 0.0 <= results["test_accuracy"] <= 1.0
    assert main(["probe", str(mlm_run), f"data.train={labelled}"]) == 2
    assert "data.test=PATH" in capsys.readouterr().err
    assert main(["probe", str(mlm_run), f"data.train={labelled}", f"data.test={labelled}"]) == 2
    assert "no column 'text'" in capsys.readouterr().err
