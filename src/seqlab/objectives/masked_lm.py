"""Masked language modelling (Devlin et al. 2019, "BERT"): hide some tokens, predict them.

Of the tokens that may be chosen (not padding, not special), each is chosen with probability
p = 0.15; a chosen token is replaced by ``<mask>`` with probability 0.8, by a random regular
token with 0.1 and kept with 0.1. The loss is the cross-entropy at the chosen positions only.
With whole-word masking (the later BERT release) the choice is made per word and every piece of
a chosen word is chosen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["IGNORE_INDEX", "mask_tokens", "masked_lm_loss", "word_starts"]

IGNORE_INDEX = -100


def word_starts(tokens: list[str], kind: str) -> list[bool]:
    """Which sub-word tokens begin a word: WordPiece marks continuations with ``##``,
    byte-level BPE marks word starts with ``Ġ`` (a leading space); other kinds are whole words."""
    if kind == "wordpiece":
        return [not token.startswith("##") for token in tokens]
    if kind == "bpe":
        return [i == 0 or token.startswith(("Ġ", "Ċ")) for i, token in enumerate(tokens)]
    return [True] * len(tokens)


def mask_tokens(
    input_ids: torch.Tensor,
    candidates: torch.Tensor,
    mask_id: int,
    random_ids: tuple[int, int],
    probability: float = 0.15,
    replace_probabilities: tuple[float, float, float] = (0.8, 0.1, 0.1),
    starts: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose and corrupt tokens for masked language modelling.

    Args:
        input_ids: (N, L) long token ids.
        candidates: (N, L) bool, True where a token may be chosen (real, non-special tokens).
        mask_id: the ``<mask>`` id.
        random_ids: [low, high) of the ids a random replacement is drawn from (regular tokens).
        probability: chance that a candidate (or, with ``starts``, a word) is chosen.
        replace_probabilities: (mask, random, keep) for a chosen token; they must sum to 1.
        starts: (N, L) bool, True at the first token of each word, for whole-word masking.
        generator: the random source (a seeded one makes the masking repeatable).

    Returns:
        (inputs, targets), each (N, L): the corrupted inputs, and the original ids at the chosen
        positions with :data:`IGNORE_INDEX` everywhere else.
    """
    if not 0.0 < probability < 1.0:
        raise ValueError(f"mask probability should be in (0, 1), got {probability!r}")
    mask_share, random_share, keep_share = replace_probabilities
    if min(replace_probabilities) < 0 or abs(mask_share + random_share + keep_share - 1) > 1e-6:
        raise ValueError(
            f"replace probabilities (mask, random, keep) should be >= 0 and sum to 1, "
            f"got {replace_probabilities!r}"
        )
    low, high = random_ids
    if not 0 <= low < high:
        raise ValueError(f"random_ids should be [low, high) with low < high, got {random_ids!r}")
    device = input_ids.device
    draw = torch.rand(input_ids.shape, generator=generator, device=device)  # (N, L)
    if starts is None:
        chosen = (draw < probability) & candidates  # (N, L)
    else:
        # word w of a row is chosen when draw[n, w] < p; a token reads its word's decision
        word_index = (torch.cumsum(starts.long(), dim=1) - 1).clamp(min=0)  # (N, L)
        chosen = (draw < probability).gather(1, word_index) & candidates  # (N, L)
    action = torch.rand(input_ids.shape, generator=generator, device=device)  # (N, L)
    to_mask = chosen & (action < mask_share)
    to_random = chosen & (action >= mask_share) & (action < mask_share + random_share)
    random_tokens = torch.randint(low, high, input_ids.shape, generator=generator, device=device)
    inputs = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    inputs = torch.where(to_random, random_tokens, inputs)
    targets = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return inputs, targets


def masked_lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""Mean cross-entropy over the chosen positions (targets != -100) only.

    .. math::
        \mathcal{L} = -\frac{1}{|M|} \sum_{(n, t) \in M} \log \mathrm{softmax}(z_{n,t})[x_{n,t}]

    ``logits`` (N, L, V) with ``targets`` (N, L), or, when the model scored only the chosen
    positions, logits (K, V) with their targets (K,). A batch where nothing was chosen
    (possible with tiny batches) gives 0 with a zero gradient rather than NaN.
    """
    if not bool((targets != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    # ignore_index leaves the unchosen rows out of the mean without copying the chosen ones.
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)
