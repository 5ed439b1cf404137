"""Preference losses: the Bradley–Terry reward-model loss and Direct Preference Optimisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["bradley_terry_loss", "dpo_loss"]


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    r"""Per-pair loss of a reward model under the Bradley–Terry preference model.

    .. math::
        P(y_w \succ y_l) = \sigma(r(x, y_w) - r(x, y_l)), \qquad
        \mathcal{L} = -\log \sigma(r(x, y_w) - r(x, y_l))

    (Bradley & Terry, 1952; Ouyang et al., 2022, "Training language models to follow
    instructions with human feedback"). Both inputs (N,); returns (N,). The pair is ranked
    right when :math:`r_w > r_l` (accuracy), and :math:`r_w - r_l` is its margin.
    """
    return -F.logsigmoid(chosen_rewards - rejected_rewards)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Direct Preference Optimisation (Rafailov et al., 2023), per example.

    .. math::
        \hat r_w = \beta\,[\log\pi(y_w|x) - \log\pi_{ref}(y_w|x)], \qquad
        \hat r_l = \beta\,[\log\pi(y_l|x) - \log\pi_{ref}(y_l|x)], \\
        \mathcal{L} = -\log\sigma(\hat r_w - \hat r_l)

    The log-probabilities are sums over the completion tokens (:func:`sequence_logps`), all (N,).
    Returns ``(losses, chosen_rewards, rejected_rewards)``, each (N,); the implicit rewards
    :math:`\hat r` are detached (they are metrics, as TRL reports them). With the policy equal to
    the reference every loss is :math:`\log 2` and both rewards are zero.
    """
    if beta <= 0:
        raise ValueError(f"beta should be a number > 0 (0.1 is usual), got {beta!r}")
    chosen = policy_chosen_logps - reference_chosen_logps  # (N,)
    rejected = policy_rejected_logps - reference_rejected_logps  # (N,)
    losses = -F.logsigmoid(beta * (chosen - rejected))
    return losses, beta * chosen.detach(), beta * rejected.detach()
