"""Decoding: greedy, sampling (temperature / top-k / top-p), beam search; BLEU / chrF."""

from seqlab.decode.beam import beam_search, best_outputs, gnmt_length_penalty
from seqlab.decode.greedy import StepModel, greedy_decode, max_output_lengths
from seqlab.decode.kv_cache import KVCache, LayerKVCache
from seqlab.decode.sampling import filter_top_k, filter_top_p, sample_next_token
from seqlab.decode.scoring import bleu, chrf, exact_match

__all__ = [
    "KVCache",
    "LayerKVCache",
    "StepModel",
    "beam_search",
    "best_outputs",
    "bleu",
    "chrf",
    "exact_match",
    "filter_top_k",
    "filter_top_p",
    "gnmt_length_penalty",
    "greedy_decode",
    "max_output_lengths",
    "sample_next_token",
]
