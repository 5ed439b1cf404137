"""Losses that any model can be trained with: a model computes representations, an objective
computes a loss from them.

Each objective is a function of model outputs (logits, hidden states, pooled vectors) and
targets, written out from its paper; tasks choose one independently of the model family, so
masked language modelling on a BiLSTM or contrastive learning on a Transformer is a config
change. Objectives that change the inputs (masking) also say how.
"""

from seqlab.objectives.causal_lm import causal_lm_loss
from seqlab.objectives.contrastive import in_batch_accuracy, info_nce
from seqlab.objectives.masked_lm import IGNORE_INDEX, mask_tokens, masked_lm_loss, word_starts

__all__ = [
    "IGNORE_INDEX",
    "causal_lm_loss",
    "in_batch_accuracy",
    "info_nce",
    "mask_tokens",
    "masked_lm_loss",
    "word_starts",
]
