"""Fill in the blank: targets only at the blank, the loss at the blank, left context only when unidirectional."""

import math

import pytest
import torch
import torch.nn.functional as F

from seqlab.data.tasks import fill_in_the_blank
from seqlab.tasks.fill_blank import BLANK, IGNORE
from seqlab.train.config import load_config
from seqlab.train.run import build_task

SMALL = ["data.train_size=40", "data.valid_size=8", "data.test_size=8", "model.hidden_size=6",
         "model.embedding_dim=5"]


def prepared(*overrides):
    task = build_task(load_config("fill-blank-bilstm", SMALL + list(overrides)))
    task.prepare()
    return task


def test_one_target_per_sentence_at_the_blank():
    task = prepared()
    inputs, targets, lengths = task.tensors["valid"]
    pairs = fill_in_the_blank(8, seed=1)  # the valid split's draw (seed 0 * 3 + 1)
    for row, (text, label) in enumerate(pairs):
        words = text.split()
        assert int(lengths[row]) == len(words)
        assert task.tokenizer.decode(inputs[row, : len(words)].tolist()).split() == words
        marked = (targets[row] != IGNORE).nonzero().flatten().tolist()
        assert marked == [words.index(BLANK)]
        assert task.labels.decode(int(targets[row, marked[0]])) == label


def test_loss_is_the_cross_entropy_at_the_blank_and_accuracy_counts_it():
    torch.manual_seed(0)
    task = prepared()
    model = task.build_model().eval()
    inputs, targets, lengths = task.tensors["test"]
    batch = {"inputs": inputs, "targets": targets, "lengths": lengths}
    with torch.no_grad():
        logits = model(inputs, lengths=lengths).logits  # (N, L, C)
        metrics = task.batch_metrics(model, batch)
    at_blank = targets != IGNORE
    expected = F.cross_entropy(logits[at_blank], targets[at_blank])
    assert metrics["loss"] == pytest.approx(float(expected) * len(inputs), rel=1e-5)
    correct = (logits[at_blank].argmax(-1) == targets[at_blank]).sum()
    assert metrics["accuracy"] == float(correct)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_only_a_bidirectional_model_sees_the_words_after_the_blank(bidirectional):
    torch.manual_seed(0)
    task = prepared(f"model.bidirectional={str(bidirectional).lower()}")
    model = task.build_model().eval()
    left = "my sister took my ___ to the vet because it was"
    texts = [f"{left} purring", f"{left} barking all day"]
    ids = [torch.tensor([task.tokenizer.encode_words(t.split())]) for t in texts]
    position = left.split().index(BLANK)
    with torch.no_grad():
        at_blank = [model(x).logits[0, position] for x in ids]
    same = torch.allclose(at_blank[0], at_blank[1], atol=1e-6)
    assert same is (not bidirectional)


def test_predict_answers_with_a_label_and_checks_the_blank():
    from seqlab.data.readers import DataError

    task = prepared()
    model = task.build_model().eval()
    with torch.no_grad():
        answer = task.predict(model, ["the boy took my ___ to the vet because it was purring"], torch.device("cpu"))
    assert answer[0] in {"bird", "cat", "dog", "fish"}
    with pytest.raises(DataError, match="exactly once"):
        task.predict(model, ["no blank here"], torch.device("cpu"))


def test_chance_level_in_the_report():
    task = prepared()
    line = task.report(None, torch.device("cpu"))[0]
    assert "0.250" in line and f"{math.log(4):.3f}" in line
