"""SequenceTagger: per-step parity with torch.nn, masked losses, padding invariance, regression."""

import pytest
import torch
import torch.nn.functional as F

from seqlab.models import SequenceTagger, TaggerOutput

VOCAB, EMBED, HIDDEN, TAGS = 11, 4, 5, 3
LENGTHS = [5, 2, 4]


def batch(generator, pad_id=6, pad_tag=2):
    """Ids and tags padded with real values, so only ``lengths`` can mark the padding."""
    n, max_length = len(LENGTHS), max(LENGTHS)
    ids = torch.randint(1, VOCAB, (n, max_length), generator=generator)
    tags = torch.randint(0, TAGS, (n, max_length), generator=generator)
    for row, length in enumerate(LENGTHS):
        ids[row, length:] = pad_id
        tags[row, length:] = pad_tag
    return ids, tags, torch.tensor(LENGTHS)


def test_logits_match_torch_bilstm_per_sequence():
    torch.manual_seed(0)
    model = SequenceTagger(TAGS, HIDDEN, cell="lstm", vocab_size=VOCAB, embedding_dim=EMBED,
                           bidirectional=True).double()
    lstm = torch.nn.LSTM(EMBED, HIDDEN, bidirectional=True, batch_first=True).double()
    lstm.load_state_dict(model.rnn.state_dict())
    ids, _, lengths = batch(torch.Generator().manual_seed(0))
    logits = model(ids, lengths=lengths).logits
    assert logits.shape == (3, max(LENGTHS), TAGS)
    for row, length in enumerate(LENGTHS):
        outputs, _ = lstm(model.embedding.weight[ids[row : row + 1, :length]])  # (1, T, 2H)
        expected = outputs @ model.head.weight.T + model.head.bias  # (1, T, C)
        torch.testing.assert_close(logits[row : row + 1, :length], expected)


@pytest.mark.parametrize("cell, options", [("lstm", {"bidirectional": True}),
                                           ("gru", {"bidirectional": True, "num_layers": 2,
                                                    "merge_mode": "mean"}),
                                           ("rnn", {})])
def test_masked_loss_equals_loss_on_unpadded_sequences(cell, options):
    torch.manual_seed(0)
    model = SequenceTagger(TAGS, HIDDEN, cell=cell, vocab_size=VOCAB, embedding_dim=EMBED,
                           **options).double()
    ids, tags, lengths = batch(torch.Generator().manual_seed(1))
    out = model(ids, lengths=lengths, targets=tags)
    assert isinstance(out, TaggerOutput)

    # By hand: every sequence alone, summed negative log-likelihood over its own steps,
    # divided by the total number of real steps.
    total = 0.0
    for row, length in enumerate(LENGTHS):
        logits = model(ids[row : row + 1, :length]).logits[0]  # (T, C)
        log_probs = logits - logits.logsumexp(dim=-1, keepdim=True)
        total = total - log_probs[torch.arange(length), tags[row, :length]].sum()
        # padding invariance of the per-step logits too
        torch.testing.assert_close(out.logits[row, :length], logits)
    torch.testing.assert_close(out.loss, total / sum(LENGTHS))


def test_loss_ignores_whatever_sits_in_the_padding():
    torch.manual_seed(0)
    model = SequenceTagger(TAGS, HIDDEN, vocab_size=VOCAB, embedding_dim=EMBED,
                           bidirectional=True).double()
    ids, tags, lengths = batch(torch.Generator().manual_seed(2))
    other_ids, other_tags, _ = batch(torch.Generator().manual_seed(2), pad_id=0, pad_tag=-100)
    loss = model(ids, lengths=lengths, targets=tags).loss
    torch.testing.assert_close(model(other_ids, lengths=lengths, targets=other_tags).loss, loss)
    # No lengths: every step counts, which is plain cross-entropy over all of them.
    logits = model(ids).logits
    torch.testing.assert_close(model(ids, targets=tags).loss,
                               F.cross_entropy(logits.reshape(-1, TAGS), tags.reshape(-1)))


def test_forecasting_regression_over_valid_steps():
    torch.manual_seed(0)
    model = SequenceTagger(1, HIDDEN, cell="gru", input_size=2, regression=True,
                           output_size=2).double()
    x = torch.randn(3, 5, 2, dtype=torch.float64)
    targets = torch.randn(3, 5, 2, dtype=torch.float64)
    lengths = torch.tensor(LENGTHS)
    targets[1, 2:] = float("nan")  # padding may hold anything, even NaN
    x[1, 2:] = float("nan")
    out = model(x, lengths=lengths, targets=targets)
    assert out.logits.shape == (3, 5, 2)

    squared, count = 0.0, 0
    for row, length in enumerate(LENGTHS):
        prediction = model(x[row : row + 1, :length]).logits[0]  # (T, 2)
        squared = squared + ((prediction - targets[row, :length]) ** 2).sum()
        count += length * 2
    torch.testing.assert_close(out.loss, squared / count)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_single_output_regression_accepts_flat_targets():
    torch.manual_seed(0)
    model = SequenceTagger(1, HIDDEN, input_size=1, regression=True).double()
    x = torch.randn(2, 4, 1, dtype=torch.float64)
    y = torch.randn(2, 4, dtype=torch.float64)
    out = model(x, targets=y)
    torch.testing.assert_close(out.loss, ((out.logits[..., 0] - y) ** 2).mean())


def test_num_parameters():
    model = SequenceTagger(TAGS, HIDDEN, cell="rnn", vocab_size=VOCAB, embedding_dim=EMBED)
    rnn = HIDDEN * EMBED + HIDDEN * HIDDEN + 2 * HIDDEN
    assert model.num_parameters() == VOCAB * EMBED + rnn + (HIDDEN + 1) * TAGS


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="output_size is only used with regression=True"):
        SequenceTagger(TAGS, HIDDEN, vocab_size=VOCAB, output_size=2)
    with pytest.raises(ValueError, match="exactly one of vocab_size"):
        SequenceTagger(TAGS, HIDDEN)
    with pytest.raises(ValueError, match="coupled"):
        SequenceTagger(TAGS, HIDDEN, cell="rnn", vocab_size=VOCAB, coupled=True)
    model = SequenceTagger(TAGS, HIDDEN, vocab_size=VOCAB)
    with pytest.raises(ValueError, match="lengths"):
        model(torch.ones(2, 3, dtype=torch.long), lengths=torch.tensor([3, 4]))
