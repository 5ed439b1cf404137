"""Decoding: greedy, sampling (temperature / top-k / top-p), beam search."""

from seqlab.decode.beam import beam_search, gnmt_length_penalty
from seqlab.decode.greedy import StepModel, greedy_decode, max_output_lengths
from seqlab.decode.sampling import filter_top_k, filter_top_p, sample_next_token

__all__ = [
    "StepModel",
    "beam_search",
    "filter_top_k",
    "filter_top_p",
    "gnmt_length_penalty",
    "greedy_decode",
    "max_output_lengths",
    "sample_next_token",
]
