"""Greedy decoding for any encoder-decoder that exposes the step API.

At each step every sentence takes its single most likely next token:

    y_t = argmax_y log p(y | y_<t, x),  until y_t = EOS or the length cap

The model only has to provide the five methods of :class:`StepModel`; a recurrent
:class:`~seqlab.models.Seq2Seq` does, and so can a Transformer decoder with a key/value cache.

Shapes: N sentences, S source length, V target vocabulary.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch

__all__ = ["StepModel", "greedy_decode", "max_output_lengths"]


class StepModel(Protocol):
    """What greedy and beam search need from a model (memory and state are the model's own types).

    ``encode(src (N, S), src_lengths (N,)) -> memory``, ``init_state(memory) -> state``,
    ``step(prev_tokens (N,), state, memory) -> (log_probs (N, V), state, attention (N, S) | None)``,
    ``reorder_state(state, index (N',)) -> state`` and ``reorder_memory(memory, index) -> memory``
    pick (or repeat) batch rows.
    """

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> Any: ...

    def init_state(self, memory: Any) -> Any: ...

    def step(
        self, prev_tokens: torch.Tensor, state: Any, memory: Any
    ) -> tuple[torch.Tensor, Any, torch.Tensor | None]: ...

    def reorder_state(self, state: Any, index: torch.Tensor) -> Any: ...

    def reorder_memory(self, memory: Any, index: torch.Tensor) -> Any: ...


def max_output_lengths(
    src_lengths: torch.Tensor, max_length: int | None = None, max_length_ratio: float = 2.0
) -> torch.Tensor:
    """How many steps (EOS included) each sentence may decode: (N,) long.

    ``max_length`` when given, the same for every sentence; otherwise
    ``ceil(max_length_ratio * source_length)``, at least 1.
    """
    if max_length is not None:
        if max_length < 1:
            raise ValueError(f"max_length should be a positive integer or None, got {max_length}")
        return torch.full_like(src_lengths, max_length, dtype=torch.long)
    if not max_length_ratio > 0:
        raise ValueError(f"max_length_ratio should be a number > 0, got {max_length_ratio}")
    caps = [max(1, math.ceil(max_length_ratio * n)) for n in src_lengths.tolist()]
    return torch.tensor(caps, dtype=torch.long, device=src_lengths.device)


@torch.no_grad()
def greedy_decode(
    model: StepModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    bos_id: int,
    eos_id: int,
    max_length: int | None = None,
    max_length_ratio: float = 2.0,
) -> list[tuple[list[int], float]]:
    """Decode each sentence greedily, all sentences in one batched ``model.step`` per step.

    Args:
        model: a :class:`StepModel` (put it in eval mode first, so dropout is off).
        src: (N, S) source token ids, right padded. src_lengths: (N,).
        bos_id: the token fed at the first step. eos_id: the token that ends a sentence.
        max_length: cap on the steps (EOS included) of every sentence; None means
            ``ceil(max_length_ratio * source_length)`` per sentence.

    Returns:
        One ``(tokens, score)`` per sentence: the tokens without BOS and EOS, and the summed
        log-probability of every decoded token (EOS included). A sentence that hits its length
        cap ends without EOS.
    """
    caps = max_output_lengths(src_lengths, max_length, max_length_ratio).to(src.device)
    memory = model.encode(src, src_lengths)
    state = model.init_state(memory)
    batch = src.size(0)
    prev = torch.full((batch,), bos_id, dtype=torch.long, device=src.device)
    scores = torch.zeros(batch, device=src.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
    steps = []
    for t in range(1, int(caps.max()) + 1):
        log_probs, state, _ = model.step(prev, state, memory)  # (N, V)
        best_scores, best = log_probs.max(dim=-1)  # (N,), (N,)
        # Finished sentences keep stepping with the batch; their tokens and scores are ignored.
        scores = scores + best_scores.masked_fill(finished, 0.0).to(scores.dtype)
        steps.append(best.masked_fill(finished, eos_id))
        finished = finished | (best == eos_id) | (caps <= t)
        if bool(finished.all()):
            break
        prev = best
    tokens = torch.stack(steps, dim=1).tolist()  # (N, T)
    results = []
    for row, score in zip(tokens, scores.tolist()):
        length = row.index(eos_id) if eos_id in row else len(row)
        results.append((row[:length], score))
    return results
