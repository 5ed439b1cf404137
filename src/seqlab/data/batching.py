"""Padding variable-length sequences into one tensor, and grouping examples into batches.

A batch of N sequences of different lengths becomes one rectangular tensor by right padding::

    [[5, 8, 2],            [[5, 8, 2, 0],        lengths = [3, 4, 1]
     [7, 7, 3, 9],   -->    [7, 7, 3, 9],
     [4]]                   [4, 0, 0, 0]]

Two policies: pad to the longest sequence in the batch (``max_length=None``; no wasted steps
beyond the batch's own longest), or pad/truncate every sequence to one fixed ``max_length``
(fixed shapes; long sequences lose their end, or their start with ``truncation="left"``).
The lengths travel with the batch so recurrent layers can stop at each sequence's last real step.

Bucketing keeps the padding small: examples of similar length share a batch. Sorting the whole
data set would make every epoch identical, so :func:`bucket_batches` sorts only within chunks of
``batch_size * bucket_size_multiplier`` shuffled examples, then shuffles the order of the batches
(the "bucket iterator" of torchtext / AllenNLP).

=========  ===========================================
symbol     meaning
=========  ===========================================
N          number of sequences (batch size)
L          padded length (longest, or ``max_length``)
F          features per step (2-D input sequences)
=========  ===========================================
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["batches", "bucket_batches", "pad_sequences", "padding_mask", "token_batches"]

TRUNCATIONS = ("right", "left")


def _as_tensor(sequence: Sequence[int] | torch.Tensor, index: int) -> torch.Tensor:
    if isinstance(sequence, torch.Tensor):
        tensor = sequence
    elif isinstance(sequence, np.ndarray):
        tensor = torch.from_numpy(sequence)
    else:
        values = list(sequence)
        # Ints give int64 ids, floats stay float; an empty list is an empty id sequence.
        tensor = torch.tensor(values) if values else torch.zeros(0, dtype=torch.int64)
    if tensor.dim() not in (1, 2):
        raise ValueError(
            f"sequence {index} has {tensor.dim()} dimensions; expected 1 (token ids, shape (T,)) "
            "or 2 (features, shape (T, F))"
        )
    return tensor


def pad_sequences(
    sequences: Sequence[Sequence[int] | torch.Tensor],
    pad_value: float = 0,
    max_length: int | None = None,
    truncation: str = "right",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad sequences into one tensor, to the longest or to a fixed ``max_length``.

    Args:
        sequences: lists of ints, 1-D tensors ``(T,)`` or 2-D feature tensors ``(T, F)``.
        pad_value: the value written past each sequence's end (``pad_id`` = 0 for tokens).
        max_length: ``None`` pads to the longest sequence; an int pads or truncates every
            sequence to exactly this length.
        truncation: which end a too-long sequence loses: ``"right"`` keeps the first
            ``max_length`` steps, ``"left"`` the last ones.

    Returns:
        ``(padded, lengths)``: ``padded`` is ``(N, L)`` (ids keep their dtype, lists give int64)
        or ``(N, L, F)`` float for feature sequences; ``lengths`` is int64 ``(N,)``, clipped to
        ``max_length``.
    """
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be None or >= 1, got {max_length}")
    tensors = [_as_tensor(sequence, index) for index, sequence in enumerate(sequences)]
    if not tensors:
        raise ValueError("pad_sequences needs at least one sequence, got none")
    dims = {tensor.dim() for tensor in tensors}
    if len(dims) > 1:
        raise ValueError("sequences mix 1-D and 2-D tensors; give all ids or all features")
    trailing = {tuple(tensor.shape[1:]) for tensor in tensors}
    if len(trailing) > 1:
        raise ValueError(f"feature sequences differ in feature size: {sorted(trailing)}")

    dtype = tensors[0].dtype
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    if dims == {2} and not dtype.is_floating_point:
        dtype = torch.get_default_dtype()

    lengths = torch.tensor([tensor.shape[0] for tensor in tensors], dtype=torch.int64)
    length = int(lengths.max()) if max_length is None else max_length
    lengths = lengths.clamp(max=length)
    padded = torch.full(
        (len(tensors), length, *trailing.pop()), pad_value, dtype=dtype
    )  # (N, L) or (N, L, F)
    for row, tensor in enumerate(tensors):
        kept = int(lengths[row])
        if kept == 0:
            continue
        piece = tensor[:kept] if truncation == "right" else tensor[tensor.shape[0] - kept :]
        padded[row, :kept] = piece.to(dtype)
    return padded, lengths


def padding_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """Boolean ``(N, L)`` mask, True at real steps and False at padding."""
    length = int(lengths.max()) if max_length is None else max_length
    steps = torch.arange(length, device=lengths.device)  # (L,)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)  # (N, L)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _rng(seed: int, epoch: int) -> np.random.Generator:
    # One stream per (seed, epoch): epochs differ, and any epoch can be replayed on resume.
    return np.random.default_rng([seed, epoch])


def _split(order: np.ndarray, batch_size: int, drop_last: bool) -> list[list[int]]:
    groups = [
        order[start : start + batch_size].tolist() for start in range(0, len(order), batch_size)
    ]
    if drop_last and groups and len(groups[-1]) < batch_size:
        groups.pop()
    return groups


def batches(
    n: int,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    drop_last: bool = False,
) -> list[list[int]]:
    """Indices ``0..n-1`` in batches of ``batch_size``, shuffled per (seed, epoch) if asked."""
    _check_batch_size(batch_size)
    order = _rng(seed, epoch).permutation(n) if shuffle else np.arange(n)
    return _split(order, batch_size, drop_last)


def bucket_batches(
    lengths: Sequence[int] | torch.Tensor,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    bucket_size_multiplier: int = 50,
    drop_last: bool = False,
) -> list[list[int]]:
    """Batches of indices whose sequences have similar lengths.

    The indices are shuffled (per ``seed`` and ``epoch``), cut into chunks of
    ``batch_size * bucket_size_multiplier``, sorted by length inside each chunk, cut into
    batches, and the batch order is shuffled. Every index appears exactly once (with
    ``drop_last``, at most ``batch_size - 1`` of them are left out, from the final batch).
    Without ``shuffle`` the chunks are taken in index order and the batches kept in order.
    """
    _check_batch_size(batch_size)
    if bucket_size_multiplier < 1:
        raise ValueError(f"bucket_size_multiplier must be >= 1, got {bucket_size_multiplier}")
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.tolist()
    lengths = np.asarray(lengths, dtype=np.int64)
    rng = _rng(seed, epoch)
    order = rng.permutation(len(lengths)) if shuffle else np.arange(len(lengths))
    chunk = batch_size * bucket_size_multiplier
    groups: list[list[int]] = []
    for start in range(0, len(order), chunk):
        indices = order[start : start + chunk]
        # A stable sort keeps the shuffled order among equal lengths.
        indices = indices[np.argsort(lengths[indices], kind="stable")]
        groups.extend(_split(indices, batch_size, drop_last=False))
    if drop_last and groups and len(groups[-1]) < batch_size:
        groups.pop()
    if shuffle:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    return groups


def token_batches(
    lengths: Sequence[int] | torch.Tensor,
    max_tokens: int,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    bucket_size: int = 6400,
) -> list[list[int]]:
    """Batches of indices holding at most ``max_tokens`` padded tokens each (batch by tokens).

    A batch of sequences padded to its longest one costs size x longest; filling batches up to
    that product instead of a fixed number of sequences gives short sentences larger batches
    and long ones smaller, so every step does about the same work. As in
    :func:`bucket_batches`, the indices are shuffled per (``seed``, ``epoch``), cut into chunks
    of ``bucket_size`` sorted by length, grouped greedily, and the batch order shuffled. A
    sequence longer than ``max_tokens`` gets a batch of its own.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.tolist()
    lengths = np.asarray(lengths, dtype=np.int64)
    rng = _rng(seed, epoch)
    order = rng.permutation(len(lengths)) if shuffle else np.arange(len(lengths))
    groups: list[list[int]] = []
    for start in range(0, len(order), bucket_size):
        indices = order[start : start + bucket_size]
        indices = indices[np.argsort(lengths[indices], kind="stable")]
        batch: list[int] = []
        for index in indices.tolist():
            # Sorted by length: the newcomer is the batch's longest sequence.
            if batch and (len(batch) + 1) * int(lengths[index]) > max_tokens:
                groups.append(batch)
                batch = []
            batch.append(index)
        if batch:
            groups.append(batch)
    if shuffle:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    return groups
