"""Choosing the next token from logits: greedy, temperature, top-k and nucleus (top-p) sampling.

Given logits z over a vocabulary of V tokens, sampling at temperature T draws from

    p_i = softmax(z / T)_i

after two optional truncations that remove the unreliable tail of the distribution:

* top-k (Fan et al., 2018, "Hierarchical Neural Story Generation"): keep the k largest logits;
* top-p, or nucleus sampling (Holtzman et al., 2020, "The Curious Case of Neural Text
  Degeneration"): keep the smallest set of most likely tokens whose probabilities sum to at
  least p.

Removed tokens get the logit -inf, so they have probability zero after the softmax.
Temperature 0 is the limit T -> 0, i.e. greedy decoding (argmax).

Shapes: N batch, V vocabulary size. ``logits`` is (N, V); the result is a LongTensor (N,).
"""

from __future__ import annotations

import torch

__all__ = ["filter_top_k", "filter_top_p", "prompt_batch", "sample_next_token"]


def prompt_batch(prompt_ids: torch.Tensor | list[int], max_new_tokens: int,
                 device: torch.device) -> torch.Tensor:
    """A generator's prompt as a (N, P) id tensor on ``device``: one prompt may be a list or 1-D.

    Raises ValueError for an empty prompt, a prompt of another rank, or ``max_new_tokens`` < 0.
    """
    if not isinstance(prompt_ids, torch.Tensor):
        prompt_ids = torch.tensor([list(prompt_ids)], dtype=torch.long)
    prompt_ids = prompt_ids.to(device)
    if prompt_ids.dim() == 1:
        prompt_ids = prompt_ids.unsqueeze(0)  # (1, P)
    if prompt_ids.dim() != 2 or prompt_ids.size(1) == 0:
        raise ValueError(
            f"prompt_ids should be (N, P) with P >= 1, got shape {tuple(prompt_ids.shape)}"
        )
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens should be >= 0, got {max_new_tokens!r}")
    return prompt_ids


def _check_top_k(top_k: int) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k should be an integer >= 1 or None, got {top_k!r}")


def _check_top_p(top_p: float) -> None:
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p should be a number in (0, 1] or None, got {top_p!r}")


def filter_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Return a copy of ``logits`` (..., V) with every logit outside the ``top_k`` largest set to -inf.

    Tokens tied with the k-th largest logit are all kept. ``top_k`` larger than V keeps everything.
    """
    _check_top_k(top_k)
    top_k = min(top_k, logits.size(-1))
    kth_largest = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def filter_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Return a copy of ``logits`` (..., V) keeping only the nucleus of probability mass ``top_p``.

    The nucleus is the smallest set of most likely tokens whose softmax probabilities sum to at
    least ``top_p``; the most likely token is always kept. ``top_p=1`` keeps everything.
    """
    _check_top_p(top_p)
    if top_p == 1.0:
        # Rounding in the cumulative sum must not drop a token when everything is asked for.
        return logits.clone()
    sorted_logits, sorted_indices = torch.sort(logits, dim=-1, descending=True)  # (..., V)
    sorted_probs = torch.softmax(sorted_logits, dim=-1)
    # Mass of the strictly more likely tokens: a token is kept while that mass is still short of
    # top_p, which keeps exactly the tokens needed to reach top_p and always keeps the first one.
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    remove_sorted = mass_before >= top_p
    remove = remove_sorted.scatter(-1, sorted_indices, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row of ``logits`` (N, V); returns a LongTensor (N,).

    ``temperature=0`` is greedy decoding (argmax; ``top_k`` / ``top_p`` then change nothing).
    Otherwise the logits are divided by ``temperature``, truncated with :func:`filter_top_k` and
    then :func:`filter_top_p`, and one token is drawn from the softmax with ``generator``, so a
    seeded generator makes the draw reproducible.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits should have shape (N, V), got {tuple(logits.shape)}")
    if temperature < 0:
        raise ValueError(f"temperature should be a number >= 0 (0 is greedy), got {temperature!r}")
    if top_k is not None:
        _check_top_k(top_k)
    if top_p is not None:
        _check_top_p(top_p)

    if temperature == 0:
        return logits.argmax(dim=-1)

    logits = logits.float() / temperature
    if top_k is not None:
        logits = filter_top_k(logits, top_k)
    if top_p is not None:
        logits = filter_top_p(logits, top_p)
    probs = torch.softmax(logits, dim=-1)  # (N, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (N,)


def windowed_stream(forward, prompt_ids: torch.Tensor, max_new_tokens: int, window: int,
                    cache=None, capacity: int | None = None, **sampling):
    """Yield each new token (N,) of a causal model whose context holds ``window`` tokens.

    ``forward(ids, cache)`` runs the model on ``ids`` (N, T) after what ``cache`` holds and
    returns (the last position's logits (N, V), the cache). The cache serves while it holds fewer
    than ``capacity`` positions; once full (or with no cache at all) each step reruns the last
    ``window`` tokens: a sliding window. ``sampling`` goes to :func:`sample_next_token`.
    """
    tokens = prompt_ids
    logits, cache = forward(prompt_ids[:, -window:], cache)
    for step in range(max_new_tokens):
        next_token = sample_next_token(logits, **sampling)  # (N,)
        yield next_token
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)  # (N, t + 1)
        if step + 1 == max_new_tokens:
            break
        if cache is not None and cache.length == capacity:
            cache = None  # full: go on with the sliding window
        if cache is not None:
            logits, cache = forward(next_token[:, None], cache)
        else:
            logits, _ = forward(tokens[:, -window:], None)
