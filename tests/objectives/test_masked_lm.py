"""BERT's masking scheme and the masked-LM loss, checked against counts and a formula."""

import math

import pytest
import torch

from seqlab.objectives import IGNORE_INDEX, mask_tokens, masked_lm_loss, word_starts

MASK, SPECIAL, VOCAB = 4, 5, 1000


def _batch(rows=400, length=200, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(SPECIAL, VOCAB, (rows, length), generator=generator)
    lengths = torch.randint(length // 2, length + 1, (rows,), generator=generator)
    ids[:, 0] = 2  # <bos>, a special token
    valid = torch.arange(length)[None, :] < lengths[:, None]
    ids[~valid] = 0  # padding
    candidates = valid & (ids >= SPECIAL)
    return ids, candidates


def test_chosen_share_and_the_80_10_10_split():
    ids, candidates = _batch()
    inputs, targets = mask_tokens(ids, candidates, MASK, (SPECIAL, VOCAB),
                                  generator=torch.Generator().manual_seed(1))
    chosen = targets != IGNORE_INDEX
    share = chosen.sum().item() / candidates.sum().item()
    assert share == pytest.approx(0.15, abs=0.005)
    total = chosen.sum().item()
    masked = (chosen & (inputs == MASK)).sum().item() / total
    kept = (chosen & (inputs == ids)).sum().item() / total
    replaced = (chosen & (inputs != MASK) & (inputs != ids)).sum().item() / total
    assert masked == pytest.approx(0.8, abs=0.01)
    assert kept == pytest.approx(0.1, abs=0.01)
    assert replaced == pytest.approx(0.1, abs=0.01)
    # targets hold the original token exactly where chosen
    assert torch.equal(targets[chosen], ids[chosen])
    # random replacements are regular tokens
    assert int(inputs[chosen & (inputs != MASK)].min()) >= SPECIAL


def test_special_and_padding_tokens_are_never_chosen_nor_changed():
    ids, candidates = _batch(seed=3)
    for seed in range(5):
        inputs, targets = mask_tokens(ids, candidates, MASK, (SPECIAL, VOCAB),
                                      generator=torch.Generator().manual_seed(seed))
        assert not (targets[~candidates] != IGNORE_INDEX).any()
        assert torch.equal(inputs[~candidates], ids[~candidates])


def test_other_probabilities_and_a_seeded_generator_repeat():
    ids, candidates = _batch(rows=200, seed=5)
    first = mask_tokens(ids, candidates, MASK, (SPECIAL, VOCAB), probability=0.3,
                        replace_probabilities=(1.0, 0.0, 0.0),
                        generator=torch.Generator().manual_seed(7))
    again = mask_tokens(ids, candidates, MASK, (SPECIAL, VOCAB), probability=0.3,
                        replace_probabilities=(1.0, 0.0, 0.0),
                        generator=torch.Generator().manual_seed(7))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    chosen = first[1] != IGNORE_INDEX
    assert chosen.sum().item() / candidates.sum().item() == pytest.approx(0.3, abs=0.01)
    assert bool((first[0][chosen] == MASK).all())


def test_whole_word_masking_takes_every_piece_of_a_chosen_word():
    tokens = ["the", "un", "##believ", "##able", "cat", "sat", "##s"] * 40
    starts = torch.tensor([word_starts(tokens, "wordpiece")] * 50)
    ids = torch.randint(SPECIAL, VOCAB, starts.shape, generator=torch.Generator().manual_seed(0))
    candidates = torch.ones_like(starts)
    _, targets = mask_tokens(ids, candidates, MASK, (SPECIAL, VOCAB), starts=starts,
                             generator=torch.Generator().manual_seed(2))
    chosen = targets != IGNORE_INDEX
    word = torch.cumsum(starts.long(), dim=1)
    for row in range(chosen.size(0)):
        for w in word[row].unique():
            pieces = chosen[row][word[row] == w]
            assert bool(pieces.all()) or not bool(pieces.any())
    words_chosen = chosen[starts].float().mean().item()
    assert words_chosen == pytest.approx(0.15, abs=0.02)


def test_word_starts_for_each_kind():
    assert word_starts(["the", "un", "##able"], "wordpiece") == [True, True, False]
    assert word_starts(["The", "Ġun", "able"], "bpe") == [True, True, False]
    assert word_starts(["a", "b"], "word") == [True, True]


def test_loss_is_the_cross_entropy_at_chosen_positions_only():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 11)
    targets = torch.full((3, 6), IGNORE_INDEX)
    targets[0, 1], targets[1, 4], targets[2, 0] = 3, 7, 10
    expected = -sum(math.log(torch.softmax(logits[n, t], -1)[targets[n, t]].item())
                    for n, t in [(0, 1), (1, 4), (2, 0)]) / 3
    assert masked_lm_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    changed = logits.clone()
    changed[0, 0] += 100.0  # an unchosen position
    changed[2, 5] -= 50.0
    assert masked_lm_loss(changed, targets).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("family", ["transformer", "recurrent"])
def test_scoring_only_the_chosen_positions_gives_their_logits_loss_and_gradients(family):
    from seqlab.models import RecurrentMaskedLM, TransformerEncoderModel, TransformerMaskedLM

    torch.manual_seed(0)
    if family == "transformer":
        model = TransformerMaskedLM(TransformerEncoderModel(50, d_model=16, nhead=2,
                                                            num_layers=1, max_length=12))
    else:
        model = RecurrentMaskedLM(50, embedding_dim=8, hidden_size=8)
    model.eval()  # no dropout: both passes see the same network
    ids = torch.randint(5, 50, (3, 12))
    lengths = torch.tensor([12, 9, 5])
    chosen = (torch.rand(3, 12) < 0.3) & (torch.arange(12) < lengths[:, None])
    targets = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    full = model(ids, lengths=lengths).logits  # (N, L, V)
    part = model(ids, lengths=lengths, positions=chosen).logits  # (K, V)
    assert part.shape == (int(chosen.sum()), 50)
    torch.testing.assert_close(part, full[chosen], atol=1e-5, rtol=0)
    masked_lm_loss(full, targets).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    masked_lm_loss(part, targets[chosen]).backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, expected[name], atol=1e-6, rtol=1e-4)


def test_a_batch_with_nothing_chosen_gives_zero_not_nan():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    loss = masked_lm_loss(logits, torch.full((2, 3), IGNORE_INDEX))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_bad_arguments_name_the_problem():
    ids, candidates = _batch(rows=2, length=5)
    with pytest.raises(ValueError, match="mask probability"):
        mask_tokens(ids, candidates, MASK, (SPECIAL, VOCAB), probability=1.5)
    with pytest.raises(ValueError, match="sum to 1"):
        mask_tokens(ids, candidates, MASK, (SPECIAL, VOCAB), replace_probabilities=(0.5, 0.1, 0.1))
