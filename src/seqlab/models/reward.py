"""Scalar heads on a causal language model: a reward model (last token) and PPO's value head
(every token)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seqlab.models.registry import register_model

__all__ = ["RewardModel", "RewardOutput", "ValueHeadLM"]


@dataclass
class RewardOutput:
    """rewards: (N,) one score per sequence. hidden: (N, L, H) the backbone's last layer."""

    rewards: torch.Tensor
    hidden: torch.Tensor | None = None


@register_model
class RewardModel(nn.Module):
    r"""A scalar reward on any seqlab language model (Ouyang et al., 2022).

    .. math:: r(x, y) = w^\top h_{T} + b

    where :math:`h_T` is the backbone's last-layer output at the last real token of the
    prompt + completion (the backbone is causal, so that position has read the whole text).
    The backbone is a :class:`~seqlab.models.TransformerLM` or a recurrent
    :class:`~seqlab.models.LanguageModel`; its own vocabulary head stays in place but is unused.
    It is held as ``encoder`` so that a language-model run's tensors load into it by name
    (``model.init_from`` prefixes a bare model's tensors with ``encoder.``).

    ============ =====================================================
    input_ids    (N, L) long, right-padded
    lengths      (N,) long, the real tokens of each row; None = all L
    rewards      (N,)
    ============ =====================================================
    """

    def __init__(self, encoder: nn.Module, dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.score = nn.Linear(encoder.head.in_features, 1)
        nn.init.normal_(self.score.weight, std=0.02)
        nn.init.zeros_(self.score.bias)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> RewardOutput:
        hidden = self.encoder(input_ids).hidden  # (N, L, H)
        if lengths is None:
            last = hidden[:, -1]  # (N, H)
        else:
            index = (lengths - 1).clamp(min=0).to(hidden.device)  # (N,)
            last = hidden[torch.arange(hidden.size(0), device=hidden.device), index]  # (N, H)
        rewards = self.score(self.dropout(last)).squeeze(-1)  # (N,)
        return RewardOutput(rewards=rewards, hidden=hidden)


@register_model
class ValueHeadLM(nn.Module):
    r"""A causal language model with a value head, the policy and critic of PPO.

    .. math:: V(w_{\le t}) = w^\top h_t + b

    The forward pass is the language model's (``model(ids, state=...)`` gives its
    :class:`~seqlab.models.LMOutput`, so generation and chat work unchanged); :meth:`values`
    reads the value of every position from the hidden states it returned. As in
    :class:`RewardModel`, the language model is held as ``encoder`` so that an `sft` run's
    tensors load into it by name. The value head starts at zero.

    ============ =====================================================
    input_ids    (N, L) long
    values       (N, L) from hidden (N, L, H)
    ============ =====================================================
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.value = nn.Linear(encoder.head.in_features, 1)
        nn.init.zeros_(self.value.weight)
        nn.init.zeros_(self.value.bias)

    @property
    def language_model(self) -> nn.Module:
        return self.encoder

    def forward(self, input_ids: torch.Tensor, state=None):
        return self.encoder(input_ids, state=state)

    def values(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.value(hidden).squeeze(-1)  # (N, L)
