"""Summarise a padded batch of per-step features into one vector per sequence.

With outputs o_1 .. o_T of a sequence of length T (the steps past T are padding):

    last:  the final hidden state h_T of the top layer (for a bidirectional layer, the forward
           direction's h_T and the backward direction's h_1, merged like the outputs are)
    mean:  (1 / T) * sum_{t <= T} o_t
    max:   max_{t <= T} o_t   (element-wise)

Padding never enters the result, so a padded batch gives the same vectors as each sequence alone.

Shapes: N batch, L padded length, D directions (2 if bidirectional else 1), H hidden size,
H_out the layer's merged output width.

    outputs  (N, L, H_out)        lengths  (N,) long, 1 <= lengths[i] <= L
    h_n      (num_layers * D, N, H)
    result   (N, H_out)
"""

from __future__ import annotations

import torch

__all__ = ["POOLINGS", "lengths_to_mask", "merge_final_states", "pool_outputs"]

POOLINGS = ("last", "mean", "max")


def lengths_to_mask(lengths: torch.Tensor | None, max_length: int, batch_size: int,
                    device: torch.device | None = None) -> torch.Tensor:
    """Return a bool mask (N, L), True at the valid steps ``t < lengths[i]`` (all True if None)."""
    if lengths is None:
        return torch.ones(batch_size, max_length, dtype=torch.bool, device=device)
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.shape != (batch_size,):
        raise ValueError(f"lengths should have shape ({batch_size},), got {tuple(lengths.shape)}")
    if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > max_length):
        raise ValueError(
            f"lengths should lie in [1, {max_length}] (the padded length), got {lengths.tolist()}"
        )
    steps = torch.arange(max_length, device=lengths.device)  # (L,)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)  # (N, L)


def merge_final_states(h_n: torch.Tensor, num_directions: int, merge_mode: str) -> torch.Tensor:
    """Return the top layer's final hidden state (N, H_out), directions merged with ``merge_mode``.

    ``merge_mode`` is the layer's (concat / sum / mean / max), so the width matches its outputs.
    """
    top = h_n[-num_directions:]  # (D, N, H)
    if num_directions == 1:
        return top[0]  # (N, H)
    if merge_mode == "concat":
        return top.transpose(0, 1).reshape(top.size(1), -1)  # (N, D * H), forward first
    if merge_mode == "sum":
        return top.sum(dim=0)
    if merge_mode == "mean":
        return top.mean(dim=0)
    if merge_mode == "max":
        return top.amax(dim=0)
    raise ValueError(f"merge_mode should be one of 'concat', 'sum', 'mean', 'max', got {merge_mode!r}")


def pool_outputs(outputs: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool ``outputs`` (N, L, H_out) over the valid steps of ``mask`` (N, L) with mean or max."""
    valid = mask.unsqueeze(-1)  # (N, L, 1)
    if pooling == "mean":
        counts = valid.sum(dim=1).to(outputs.dtype)  # (N, 1)
        return outputs.masked_fill(~valid, 0.0).sum(dim=1) / counts  # (N, H_out)
    if pooling == "max":
        return outputs.masked_fill(~valid, float("-inf")).amax(dim=1)  # (N, H_out)
    raise ValueError(f"pooling should be 'mean' or 'max' here, got {pooling!r}")
