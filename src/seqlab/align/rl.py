"""Reinforcement learning on token sequences: GAE, PPO's clipped losses, KL estimators, GRPO.

Shapes: N rollouts, T generated tokens (time, the last dimension). ``mask`` (N, T) is true at
the generated tokens and false at padding after each sequence's end; every mean below is over
the masked positions only.
"""

from __future__ import annotations

from collections import Counter

import torch

__all__ = [
    "gae",
    "group_advantages",
    "kl_estimate",
    "masked_mean",
    "ngram_novelty",
    "ppo_policy_loss",
    "ppo_value_loss",
    "token_rewards",
    "whiten",
]


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is true (all of them when None)."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def whiten(values: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True,
           eps: float = 1e-8) -> torch.Tensor:
    r"""Advantage whitening: :math:`(x - \mu) / \sqrt{\sigma^2 + \epsilon}` over the masked values.

    The variance is the unbiased one (as TRL computes it); ``shift_mean=False`` only rescales.
    Masked-out positions come back as zero.
    """
    mean = masked_mean(values, mask)
    centred = values - mean
    if mask is None:
        count = values.numel()
        variance = (centred ** 2).sum() / max(count - 1, 1)
    else:
        count = mask.sum()
        variance = (centred ** 2 * mask).sum() / (count - 1).clamp(min=1)
    out = centred if shift_mean else values
    out = out * torch.rsqrt(variance + eps)
    return out if mask is None else out * mask


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Generalised advantage estimation (Schulman et al., 2016) over the last dimension.

    .. math::
        \delta_t = r_t + \gamma V_{t+1} - V_t, \qquad
        \hat A_t = \delta_t + \gamma\lambda \hat A_{t+1}, \qquad
        \hat R_t = \hat A_t + V_t

    with :math:`V_{t+1} = \hat A_{t+1} = 0` past the end of each sequence (the episode ends at
    its last masked step, so nothing after it is bootstrapped). ``rewards`` and ``values``
    (..., T); ``mask`` (..., T), true on the valid prefix. Returns ``(advantages, returns)``,
    zero where the mask is false; no gradient flows into them.
    """
    rewards, values = rewards.detach(), values.detach()
    if mask is None:
        mask = torch.ones_like(rewards, dtype=torch.bool)
    mask = mask.to(rewards.dtype)
    values = values * mask
    steps = rewards.size(-1)
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(steps)):
        next_mask = mask[..., t + 1] if t + 1 < steps else torch.zeros_like(last)
        next_value = values[..., t + 1] if t + 1 < steps else torch.zeros_like(last)
        delta = rewards[..., t] + gamma * next_value - values[..., t]
        last = (delta + gamma * lam * next_mask * last) * mask[..., t]
        advantages[..., t] = last
    returns = (advantages + values) * mask
    return advantages, returns


def kl_estimate(logps: torch.Tensor, reference_logps: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    r"""Per-token estimate of :math:`KL(\pi \,\|\, \pi_{ref})` from tokens sampled from :math:`\pi`.

    With :math:`r = \log\pi(y_t) - \log\pi_{ref}(y_t)` (Schulman, 2020, "Approximating KL
    divergence"):

    * ``k1`` = :math:`r` — unbiased, can be negative per token (PPO's KL penalty in the reward);
    * ``k2`` = :math:`r^2 / 2` — biased, low variance;
    * ``k3`` = :math:`e^{-r} - 1 + r` — unbiased and never negative (GRPO's KL term).

    All are zero when the policy equals the reference. Same shape as the inputs.
    """
    log_ratio = logps - reference_logps
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio ** 2
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kind={kind!r} is not one of: k1, k2, k3")


def token_rewards(scores: torch.Tensor, logps: torch.Tensor, reference_logps: torch.Tensor,
                  mask: torch.Tensor, kl_coef: float = 0.05) -> torch.Tensor:
    r"""PPO's per-token reward: a KL penalty at every token and the score at the last one.

    .. math:: r_t = -\beta_{KL}\,(\log\pi(y_t) - \log\pi_{ref}(y_t)) + [t = T_n - 1]\, s_n

    (Ziegler et al., 2019). ``scores`` (N,) from the reward model; the rest (N, T). Returns (N, T),
    zero where the mask is false.
    """
    mask = mask.bool()
    rewards = -kl_coef * (logps - reference_logps).detach()
    positions = torch.arange(mask.size(-1), device=mask.device)
    last = (positions * mask).argmax(dim=-1)  # (N,) index of each sequence's last masked token
    rewards = rewards.scatter_add(-1, last[:, None], scores.detach()[:, None].to(rewards.dtype))
    return rewards.masked_fill(~mask, 0.0)


def ppo_policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor | None = None,
    clip_range: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""PPO's clipped surrogate objective (Schulman et al., 2017), as a loss to minimise.

    .. math::
        \rho_t = \exp(\log\pi(y_t) - \log\pi_{old}(y_t)), \qquad
        \mathcal{L} = \mathbb{E}_t\big[\max(-\hat A_t \rho_t,\;
            -\hat A_t\,\mathrm{clip}(\rho_t, 1-\epsilon, 1+\epsilon))\big]

    Returns the loss and metrics: ``clip_fraction`` (share of tokens where the clipped term is
    the larger, i.e. the update is cut), ``approx_kl`` = :math:`\mathbb{E}[(\log\rho)^2] / 2`,
    and ``ratio`` (mean :math:`\rho`). On the first epoch over a rollout :math:`\rho = 1` and
    nothing is clipped.
    """
    log_ratio = logps - old_logps.detach()
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        metrics = {
            "clip_fraction": masked_mean((clipped > unclipped).to(logps.dtype), mask),
            "approx_kl": 0.5 * masked_mean(log_ratio ** 2, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, metrics


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor | None = None,
    clip_range: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""PPO's clipped value loss.

    .. math::
        V^{clip}_t = V^{old}_t + \mathrm{clip}(V_t - V^{old}_t, -\epsilon, \epsilon), \qquad
        \mathcal{L}_V = \tfrac12\,\mathbb{E}_t\big[\max((V_t - \hat R_t)^2,
            (V^{clip}_t - \hat R_t)^2)\big]

    Returns the loss and the clip fraction (share of tokens where the clipped error is larger).
    """
    old_values = old_values.detach()
    clipped_values = old_values + (values - old_values).clamp(-clip_range, clip_range)
    error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(error, clipped_error), mask)
    with torch.no_grad():
        fraction = masked_mean((clipped_error > error).to(values.dtype), mask)
    return loss, fraction


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    r"""GRPO's advantages (Shao et al., 2024, DeepSeekMath): each reward normalised in its group.

    .. math:: \hat A_{i} = \frac{r_i - \mathrm{mean}(r_{1..G})}{\mathrm{std}(r_{1..G}) + \epsilon}

    ``rewards`` (B, G): G completions of each of B prompts; returns (B, G). The standard
    deviation is the unbiased one; a group whose rewards are all equal gets zero advantages.
    """
    if rewards.dim() != 2 or rewards.size(1) < 2:
        raise ValueError(f"rewards should be (prompts, group) with a group of at least 2, got "
                         f"shape {tuple(rewards.shape)}")
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)
    return (rewards - mean) / (std + eps)


def ngram_novelty(replies: list[list[int]], n: int = 2) -> torch.Tensor:
    r"""(N,) the share of each reply's n-grams that occur nowhere else in the batch.

    .. math:: \nu_i = \frac{|\{g \in \mathrm{ngrams}(y_i) : c(g) = 1\}|}{|\mathrm{ngrams}(y_i)|}

    where c(g) counts the occurrences of g over all the replies, with repeats: an n-gram used
    twice, in one reply or in two, is novel in neither place. A reply shorter than n scores 0.
    Over a batch this is distinct-n (Li et al., 2016) seen from each reply: a policy that repeats
    its own phrases, or everyone else's, scores low. An RL task adds ``diversity_coef`` times it to
    every reward.
    """
    if n < 1:
        raise ValueError(f"n should be at least 1, got {n}")
    grams = [[tuple(reply[i:i + n]) for i in range(len(reply) - n + 1)] for reply in replies]
    counts = Counter(g for reply in grams for g in reply)
    return torch.tensor([sum(counts[g] == 1 for g in reply) / len(reply) if reply else 0.0
                         for reply in grams])
