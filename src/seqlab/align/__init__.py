"""Alignment: supervised fine-tuning on chats, reward models, DPO, PPO and GRPO.

The functions here are the maths of each method, for those who write their own loop; the
`sft`, `reward-model` and `dpo` tasks use them, and `seqlab chat` talks to the result.
`best_of_n` is the alignment that changes no weight: sample n replies, keep the best-rated.
"""

from seqlab.align.chat import ROLES, ChatTemplate, best_of_n, sample_replies, stream_reply
from seqlab.align.logprobs import entropy_from_logits, sequence_logps, token_logps
from seqlab.align.preference import bradley_terry_loss, dpo_loss
from seqlab.align.rl import (
    gae,
    group_advantages,
    kl_estimate,
    masked_mean,
    ngram_novelty,
    ppo_policy_loss,
    ppo_value_loss,
    token_rewards,
    whiten,
)

__all__ = [
    "ROLES",
    "ChatTemplate",
    "best_of_n",
    "bradley_terry_loss",
    "dpo_loss",
    "entropy_from_logits",
    "gae",
    "group_advantages",
    "kl_estimate",
    "masked_mean",
    "ngram_novelty",
    "ppo_policy_loss",
    "ppo_value_loss",
    "sample_replies",
    "sequence_logps",
    "stream_reply",
    "token_logps",
    "token_rewards",
    "whiten",
]
