"""Decoding: greedy, sampling (temperature / top-k / top-p), beam search."""

from seqlab.decode.sampling import filter_top_k, filter_top_p, sample_next_token

__all__ = ["sample_next_token", "filter_top_k", "filter_top_p"]
