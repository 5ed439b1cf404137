"""sequence_logps, dpo_loss, the Bradley–Terry loss, GAE, PPO / GRPO pieces against formulas
and loops written out here."""

import math

import pytest
import torch

from seqlab.align import (
    bradley_terry_loss,
    dpo_loss,
    entropy_from_logits,
    gae,
    group_advantages,
    kl_estimate,
    ngram_novelty,
    ppo_policy_loss,
    ppo_value_loss,
    sequence_logps,
    token_rewards,
    whiten,
)


def test_sequence_logps_sums_only_masked_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, dtype=torch.float64)
    labels = torch.tensor([[1, 2, 3, 4, 5], [6, 0, -100, -100, -100]])
    mask = torch.tensor([[False, False, True, True, True], [True, True, False, False, False]])
    expected = []
    for n in range(2):
        total = 0.0
        for t in range(5):
            if mask[n, t]:
                row = logits[n, t]
                total += float(row[labels[n, t]] - torch.logsumexp(row, 0))
        expected.append(total)
    assert sequence_logps(logits, labels, mask).tolist() == pytest.approx(expected, rel=1e-10)


def test_prompt_and_padding_never_count():
    torch.manual_seed(1)
    logits = torch.randn(1, 6, 5)
    labels = torch.tensor([[0, 1, 2, 3, 4, 0]])
    mask = torch.tensor([[False, False, True, True, False, False]])  # prompt, answer, padding
    base = sequence_logps(logits, labels, mask)
    changed = logits.clone()
    changed[0, [0, 1, 4, 5]] = torch.randn(4, 5) * 10  # anything outside the answer
    other_labels = labels.clone()
    other_labels[0, [0, 1, 4, 5]] = torch.tensor([3, 3, 1, -100])
    assert torch.equal(sequence_logps(changed, other_labels, mask), base)


def test_dpo_against_the_formula():
    torch.manual_seed(2)
    pc, pr, rc, rr = (torch.randn(4, dtype=torch.float64) * 5 for _ in range(4))
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.3)
    for i in range(4):
        margin = 0.3 * ((pc[i] - rc[i]) - (pr[i] - rr[i]))
        assert losses[i].item() == pytest.approx(math.log(1 + math.exp(-margin)), rel=1e-10)
        assert chosen[i].item() == pytest.approx(0.3 * float(pc[i] - rc[i]))
        assert rejected[i].item() == pytest.approx(0.3 * float(pr[i] - rr[i]))


def test_dpo_policy_equal_reference_is_log2_with_zero_rewards():
    logps = torch.tensor([-3.0, -10.0, -0.5])
    other = torch.tensor([-4.0, -1.0, -7.0])
    losses, chosen, rejected = dpo_loss(logps, other, logps, other)
    assert losses.tolist() == pytest.approx([math.log(2)] * 3)
    assert chosen.tolist() == [0.0] * 3 and rejected.tolist() == [0.0] * 3


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    torch.manual_seed(3)
    logits = torch.randn(2, 4, 6, requires_grad=True)  # row 0 the chosen answer, row 1 the rejected
    labels = torch.tensor([[1, 2, 3, 4], [5, 4, 3, 2]])
    mask = torch.tensor([[False, True, True, True]] * 2)
    logps = sequence_logps(logits, labels, mask)
    reference = logps.detach()
    losses, _, _ = dpo_loss(logps[:1], logps[1:], reference[:1], reference[1:])
    losses.sum().backward()
    with torch.no_grad():
        after = sequence_logps(logits - 1.0 * logits.grad, labels, mask)
    assert after[0] > logps[0] and after[1] < logps[1]


def test_bradley_terry_loss_and_accuracy():
    chosen = torch.tensor([2.0, -1.0, 0.5])
    rejected = torch.tensor([1.0, 0.0, 0.5])
    expected = [-math.log(1 / (1 + math.exp(-(c - r)))) for c, r in zip(chosen.tolist(), rejected.tolist())]
    assert bradley_terry_loss(chosen, rejected).tolist() == pytest.approx(expected)
    assert ((chosen > rejected).float().mean()).item() == pytest.approx(1 / 3)


def _gae_by_hand(rewards, values, gamma, lam, length):
    advantages = [0.0] * len(rewards)
    following = 0.0
    for t in reversed(range(length)):
        next_value = values[t + 1] if t + 1 < length else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        following = delta + gamma * lam * following
        advantages[t] = following
    returns = [a + v if t < length else 0.0 for t, (a, v) in enumerate(zip(advantages, values))]
    return advantages, returns


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (0.99, 1.0)])
def test_gae_against_a_written_out_loop(gamma, lam):
    torch.manual_seed(4)
    rewards = torch.randn(3, 6, dtype=torch.float64)
    values = torch.randn(3, 6, dtype=torch.float64)
    lengths = [6, 4, 1]
    mask = torch.arange(6)[None, :] < torch.tensor(lengths)[:, None]
    advantages, returns = gae(rewards, values, gamma=gamma, lam=lam, mask=mask)
    for n, length in enumerate(lengths):
        expected_a, expected_r = _gae_by_hand(rewards[n].tolist(), values[n].tolist(), gamma, lam, length)
        assert advantages[n].tolist() == pytest.approx(expected_a, rel=1e-10, abs=1e-12)
        assert returns[n].tolist() == pytest.approx(expected_r, rel=1e-10, abs=1e-12)


def test_gae_lambda_one_is_the_discounted_return_minus_value():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.2, 0.4, 0.6]])
    advantages, returns = gae(rewards, values, gamma=0.5, lam=1.0)
    assert returns.tolist()[0] == pytest.approx([0.25, 0.5, 1.0])
    assert advantages.tolist()[0] == pytest.approx([0.05, 0.1, 0.4])


def test_whiten_matches_mean_and_unbiased_std():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -7.0, 100.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, False]])
    kept = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, -7.0])
    mean, std = kept.mean(), kept.std()
    out = whiten(values, mask)
    assert out[mask].tolist() == pytest.approx(((kept - mean) / std).tolist(), rel=1e-5)
    assert out[~mask].tolist() == [0.0, 0.0]


def test_ppo_first_epoch_ratio_one_and_no_clipping():
    torch.manual_seed(5)
    logps = torch.randn(4, 5, requires_grad=True)
    advantages = torch.randn(4, 5)
    loss, metrics = ppo_policy_loss(logps, logps.detach(), advantages, clip_range=0.2)
    assert metrics["ratio"].item() == pytest.approx(1.0)
    assert metrics["clip_fraction"].item() == 0.0 and metrics["approx_kl"].item() == 0.0
    assert loss.item() == pytest.approx(-advantages.mean().item(), rel=1e-6)
    loss.backward()  # at ratio 1 the gradient is -A / (N T) for every token
    assert torch.allclose(logps.grad, -advantages / advantages.numel())


def test_ppo_policy_loss_clips_like_the_formula():
    logps = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.7]]))
    old = torch.zeros(1, 4)
    advantages = torch.tensor([[1.0, -1.0, 2.0, 1.0]])
    loss, metrics = ppo_policy_loss(logps, old, advantages, clip_range=0.2)
    ratio = [1.5, 0.5, 1.1, 0.7]
    terms = [max(-a * r, -a * min(max(r, 0.8), 1.2)) for a, r in zip([1.0, -1.0, 2.0, 1.0], ratio)]
    assert loss.item() == pytest.approx(sum(terms) / 4, rel=1e-6)
    # clipped: ratio 1.5 with A > 0 and 0.5 with A < 0; 0.7 with A > 0 keeps the smaller, unclipped
    assert metrics["clip_fraction"].item() == pytest.approx(0.5)


def test_ppo_value_loss_against_the_formula():
    values = torch.tensor([1.0, 0.0, 0.5])
    old = torch.tensor([0.5, 0.1, 0.5])
    returns = torch.tensor([2.0, 0.0, -1.0])
    loss, fraction = ppo_value_loss(values, old, returns, clip_range=0.2)
    clipped = [0.7, 0.0, 0.5]
    expected = sum(max((v - r) ** 2, (c - r) ** 2) for v, c, r in zip([1.0, 0.0, 0.5], clipped, [2.0, 0.0, -1.0]))
    assert loss.item() == pytest.approx(0.5 * expected / 3)
    assert fraction.item() == pytest.approx(1 / 3)


def test_kl_estimators_zero_at_equality_and_formulas():
    logps = torch.tensor([-1.0, -2.0, -0.3])
    assert all(kl_estimate(logps, logps, kind).abs().max().item() == 0.0 for kind in ("k1", "k2", "k3"))
    reference = torch.tensor([-1.5, -1.0, -0.3])
    r = logps - reference
    assert kl_estimate(logps, reference, "k3").tolist() == pytest.approx((torch.exp(-r) - 1 + r).tolist())
    assert (kl_estimate(logps, reference, "k3") >= 0).all()
    # E_p[k1] and E_p[k3] are the true KL of two categorical distributions
    p = torch.tensor([0.7, 0.2, 0.1])
    q = torch.tensor([0.3, 0.3, 0.4])
    true_kl = float((p * (p / q).log()).sum())
    for kind in ("k1", "k3"):
        assert float((p * kl_estimate(p.log(), q.log(), kind)).sum()) == pytest.approx(true_kl, rel=1e-5)
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_estimate(logps, reference, "k4")


def test_token_rewards_put_the_score_at_the_last_token():
    logps = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, -2.0]])
    reference = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -2.0, -2.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    rewards = token_rewards(torch.tensor([3.0, -1.0]), logps, reference, mask, kl_coef=0.1)
    assert rewards.flatten().tolist() == pytest.approx([-0.05, 0.0, 3.05, 0.0, -1.0, 0.0])


def test_group_advantages_normalise_within_each_group():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0], [0.0, 3.0, 6.0, 9.0]])
    out = group_advantages(rewards)
    for row, expected_row in zip(out, rewards):
        mean, std = expected_row.mean(), expected_row.std()
        assert row.tolist() == pytest.approx(((expected_row - mean) / (std + 1e-4)).tolist(), abs=1e-6)
    assert out[1].tolist() == [0.0] * 4
    with pytest.raises(ValueError, match="group of at least 2"):
        group_advantages(torch.ones(3))


def test_entropy_from_logits():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    assert entropy_from_logits(logits).item() == pytest.approx(1.5 * math.log(2))


def test_ngram_novelty_is_the_share_of_bigrams_used_once_in_the_batch():
    replies = [[1, 2, 3, 4], [2, 3, 9], [5, 5, 5], [7], []]
    # bigrams: (1,2) (2,3) (3,4) | (2,3) (3,9) | (5,5) (5,5) | none | none
    assert ngram_novelty(replies).tolist() == pytest.approx([2 / 3, 1 / 2, 0.0, 0.0, 0.0])
    assert ngram_novelty(replies, n=1).tolist() == pytest.approx([2 / 4, 1 / 3, 0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="at least 1"):
        ngram_novelty(replies, n=0)
