"""SequenceClassifier: parity with torch.nn by hand, padding invariance, losses, regression."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from seqlab.models import ClassifierOutput, SequenceClassifier

VOCAB, EMBED, HIDDEN, CLASSES = 13, 4, 5, 3


def padded_batch(lengths, generator, pad=0):
    """Token ids (N, max(lengths)) in 1..VOCAB-1, padded with ``pad`` on the right."""
    ids = torch.randint(1, VOCAB, (len(lengths), max(lengths)), generator=generator)
    for row, length in enumerate(lengths):
        ids[row, length:] = pad
    return ids, torch.tensor(lengths)


def reference_lstm(model, bidirectional, num_layers=1):
    lstm = torch.nn.LSTM(EMBED, HIDDEN, num_layers=num_layers, bidirectional=bidirectional,
                         batch_first=True).double()
    lstm.load_state_dict(model.rnn.state_dict())
    return lstm


@pytest.mark.parametrize("bidirectional, num_layers", [(False, 2), (True, 1)])
def test_last_pooling_matches_torch_lstm_and_linear(bidirectional, num_layers):
    torch.manual_seed(0)
    model = SequenceClassifier(CLASSES, HIDDEN, cell="lstm", vocab_size=VOCAB,
                               embedding_dim=EMBED, num_layers=num_layers,
                               bidirectional=bidirectional).double()
    lstm = reference_lstm(model, bidirectional, num_layers)
    ids, lengths = padded_batch([6, 2, 4], torch.Generator().manual_seed(1))
    targets = torch.tensor([2, 0, 1])

    out = model(ids, lengths=lengths, targets=targets)

    x = model.embedding.weight[ids]  # (N, L, E)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    _, (h_n, _) = lstm(packed)
    if bidirectional:
        features = torch.cat([h_n[-2], h_n[-1]], dim=-1)  # forward then backward final states
    else:
        features = h_n[-1]
    logits = features @ model.head.weight.T + model.head.bias
    log_probs = logits - logits.logsumexp(dim=-1, keepdim=True)
    loss = -log_probs[torch.arange(3), targets].mean()
    assert isinstance(out, ClassifierOutput)
    torch.testing.assert_close(out.logits, logits)
    torch.testing.assert_close(out.loss, loss)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_mean_and_max_pool_valid_steps_of_torch_outputs(pooling):
    torch.manual_seed(0)
    model = SequenceClassifier(CLASSES, HIDDEN, vocab_size=VOCAB, embedding_dim=EMBED,
                               bidirectional=True, pooling=pooling).double()
    lstm = reference_lstm(model, bidirectional=True)
    ids, lengths = padded_batch([3, 5], torch.Generator().manual_seed(2))
    logits = model(ids, lengths=lengths).logits
    for row, length in enumerate(lengths.tolist()):
        outputs, _ = lstm(model.embedding.weight[ids[row : row + 1, :length]])  # (1, T, 2H)
        pooled = outputs[0].mean(dim=0) if pooling == "mean" else outputs[0].amax(dim=0)
        torch.testing.assert_close(logits[row], model.head(pooled))


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize(
    "cell, options",
    [
        ("lstm", {"bidirectional": True}),
        ("gru", {"bidirectional": True, "merge_mode": "sum", "num_layers": 2}),
        ("rnn", {"nonlinearity": "relu"}),
        ("lstm", {"peephole": True, "bidirectional": True, "merge_mode": "max"}),
    ],
)
def test_padding_does_not_change_the_result(pooling, cell, options):
    torch.manual_seed(0)
    model = SequenceClassifier(CLASSES, HIDDEN, cell=cell, vocab_size=VOCAB, embedding_dim=EMBED,
                               pooling=pooling, **options).double()
    # Pad with real token ids, not just padding_idx, so only the lengths can hide them.
    ids, lengths = padded_batch([5, 1, 3], torch.Generator().manual_seed(3), pad=7)
    batched = model(ids, lengths=lengths).logits
    for row, length in enumerate(lengths.tolist()):
        alone = model(ids[row : row + 1, :length]).logits
        torch.testing.assert_close(batched[row : row + 1], alone)


def test_float_features_and_regression_loss():
    torch.manual_seed(0)
    model = SequenceClassifier(1, HIDDEN, cell="gru", input_size=2, regression=True,
                               pooling="mean").double()
    x = torch.randn(4, 6, 2, dtype=torch.float64)
    lengths = torch.tensor([6, 3, 1, 4])
    targets = torch.randn(4, dtype=torch.float64)
    out = model(x, lengths=lengths, targets=targets)
    assert out.logits.shape == (4, 1)
    torch.testing.assert_close(out.loss, ((out.logits[:, 0] - targets) ** 2).mean())
    # Padded feature rows never matter.
    x_changed = x.clone()
    x_changed[1, 3:] = 100.0
    torch.testing.assert_close(model(x_changed, lengths=lengths).logits, out.logits)


def test_num_parameters_counts_every_tensor():
    model = SequenceClassifier(CLASSES, HIDDEN, cell="gru", vocab_size=VOCAB,
                               embedding_dim=EMBED, bidirectional=True)
    gru = 2 * (3 * HIDDEN * EMBED + 3 * HIDDEN * HIDDEN + 2 * 3 * HIDDEN)
    expected = VOCAB * EMBED + gru + (2 * HIDDEN + 1) * CLASSES
    assert model.num_parameters() == expected
    model.embedding.weight.requires_grad_(False)
    assert model.num_parameters(trainable_only=True) == expected - VOCAB * EMBED


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"vocab_size": 5, "input_size": 3}, "exactly one of vocab_size"),
        ({}, "exactly one of vocab_size"),
        ({"vocab_size": 5, "pooling": "attention"}, "pooling should be one of"),
        ({"vocab_size": 5, "cell": "lstmx"}, "cell should be one of"),
        ({"vocab_size": 5, "cell": "gru", "peephole": True}, "peephole"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SequenceClassifier(CLASSES, HIDDEN, **kwargs)


def test_one_class_needs_regression():
    with pytest.raises(ValueError, match="num_classes"):
        SequenceClassifier(1, HIDDEN, vocab_size=VOCAB)


def test_learns_a_tiny_task():
    # Class = whether token 1 occurs anywhere; a few hundred Adam steps fit 32 sequences.
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    ids, lengths = padded_batch([int(n) for n in torch.randint(2, 8, (32,), generator=generator)],
                                generator)
    mask = torch.arange(ids.size(1)) < lengths[:, None]
    targets = ((ids == 1) & mask).any(dim=1).long()
    model = SequenceClassifier(2, 16, cell="gru", vocab_size=VOCAB, embedding_dim=8,
                               pooling="max")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(100):
        optimizer.zero_grad()
        loss = model(ids, lengths=lengths, targets=targets).loss
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    assert torch.equal(model(ids, lengths=lengths).logits.argmax(-1), targets)
