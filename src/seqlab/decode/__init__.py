"""Decoding: greedy, sampling (temperature / top-k / top-p), beam search."""

from seqlab.decode.sampling import filter_top_k, filter_top_p, sample_next_token

__all__ = ["filter_top_k", "filter_top_p", "sample_next_token"]
