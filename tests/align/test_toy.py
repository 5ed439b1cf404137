"""A short-sequence toy task: PPO, GRPO and DPO each raise the expected reward.

The policy is a table of logits, one row per position of a 4-token answer over 6 tokens; the
reward is the share of tokens equal to 1 (expected reward 1/6 at the start). The expected
reward is computed exactly from the table, not sampled.
"""

import pytest
import torch

from seqlab.align import (
    dpo_loss,
    gae,
    group_advantages,
    kl_estimate,
    ppo_policy_loss,
    ppo_value_loss,
    sequence_logps,
    token_logps,
    token_rewards,
    whiten,
)

T, V, GOOD = 4, 6, 1


def _sample(logits, count, generator):
    probs = torch.softmax(logits, -1)  # (T, V)
    return torch.stack([torch.multinomial(probs[t], count, replacement=True, generator=generator)
                        for t in range(T)], dim=1)  # (count, T)


def _logits_for(table, count):
    return table.unsqueeze(0).expand(count, T, V)  # (count, T, V)


def _score(tokens):
    return (tokens == GOOD).float().mean(dim=1)  # (count,)


def _expected_reward(table):
    return float(torch.softmax(table, -1)[:, GOOD].mean())


def test_ppo_raises_the_expected_reward():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    reference = torch.zeros(T, V)
    policy = torch.zeros(T, V, requires_grad=True)
    values = torch.zeros(T, requires_grad=True)
    optimizer = torch.optim.Adam([policy, values], lr=0.05)
    before = _expected_reward(policy.detach())
    mask = torch.ones(64, T, dtype=torch.bool)
    for _ in range(15):
        with torch.no_grad():
            tokens = _sample(policy, 64, generator)
            old_logps = token_logps(_logits_for(policy, 64), tokens)
            ref_logps = token_logps(_logits_for(reference, 64), tokens)
            old_values = values.expand(64, T).clone()
            rewards = token_rewards(_score(tokens), old_logps, ref_logps, mask, kl_coef=0.05)
            advantages, returns = gae(rewards, old_values, gamma=1.0, lam=0.95, mask=mask)
            advantages = whiten(advantages, mask)
        for epoch in range(4):
            logps = token_logps(_logits_for(policy, 64), tokens)
            policy_loss, metrics = ppo_policy_loss(logps, old_logps, advantages, mask)
            if epoch == 0:
                assert metrics["clip_fraction"].item() == 0.0
            value_loss, _ = ppo_value_loss(values.expand(64, T), old_values, returns, mask)
            optimizer.zero_grad()
            (policy_loss + 0.1 * value_loss).backward()
            optimizer.step()
    assert _expected_reward(policy.detach()) > before + 0.3


def test_grpo_raises_the_expected_reward():
    torch.manual_seed(1)
    generator = torch.Generator().manual_seed(1)
    reference = torch.zeros(T, V)
    policy = torch.zeros(T, V, requires_grad=True)
    optimizer = torch.optim.Adam([policy], lr=0.05)
    before = _expected_reward(policy.detach())
    prompts, group = 8, 8
    for _ in range(15):
        with torch.no_grad():
            tokens = _sample(policy, prompts * group, generator)
            old_logps = token_logps(_logits_for(policy, prompts * group), tokens)
            ref_logps = token_logps(_logits_for(reference, prompts * group), tokens)
            advantages = group_advantages(_score(tokens).view(prompts, group)).view(-1, 1)  # (B G, 1)
        for _ in range(2):
            logps = token_logps(_logits_for(policy, prompts * group), tokens)
            loss, _ = ppo_policy_loss(logps, old_logps, advantages.expand_as(logps))
            loss = loss + 0.04 * kl_estimate(logps, ref_logps, "k3").mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert _expected_reward(policy.detach()) > before + 0.3


def test_dpo_raises_the_expected_reward():
    torch.manual_seed(2)
    generator = torch.Generator().manual_seed(2)
    reference = torch.zeros(T, V)
    first, second = _sample(reference, 256, generator), _sample(reference, 256, generator)
    better = _score(first) > _score(second)
    worse = _score(first) < _score(second)
    chosen = torch.cat([first[better], second[worse]])
    rejected = torch.cat([second[better], first[worse]])
    mask = torch.ones_like(chosen, dtype=torch.bool)
    count = len(chosen)
    with torch.no_grad():
        ref_chosen = sequence_logps(_logits_for(reference, count), chosen, mask)
        ref_rejected = sequence_logps(_logits_for(reference, count), rejected, mask)
    policy = torch.zeros(T, V, requires_grad=True)
    optimizer = torch.optim.Adam([policy], lr=0.05)
    before = _expected_reward(policy.detach())
    for step in range(60):
        logps_chosen = sequence_logps(_logits_for(policy, count), chosen, mask)
        logps_rejected = sequence_logps(_logits_for(policy, count), rejected, mask)
        losses, _, _ = dpo_loss(logps_chosen, logps_rejected, ref_chosen, ref_rejected, beta=0.1)
        if step == 0:
            assert losses.mean().item() == pytest.approx(0.6931, abs=1e-4)
        optimizer.zero_grad()
        losses.mean().backward()
        optimizer.step()
    assert _expected_reward(policy.detach()) > before + 0.3
