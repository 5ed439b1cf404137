"""seqlab.data: tokenizers, file readers, padding and batching, generated tasks."""

from seqlab.data.batching import batches, bucket_batches, pad_sequences, padding_mask
from seqlab.data.images import (
    ImageCaptions,
    coloured_shapes,
    load_image,
    read_image_captions,
)
from seqlab.data.readers import (
    DataError,
    iter_labelled,
    iter_parallel,
    open_text,
    read_conll,
    read_labelled,
    read_parallel,
    read_series,
    read_text,
)
from seqlab.data.tasks import (
    ADDING_HS97_TOLERANCE,
    adding_problem,
    adding_problem_hs97,
    copy_memory,
    copy_memory_baseline,
    dates,
    digits,
    fill_in_the_blank,
    reversal,
)
from seqlab.data.tokenizers import SPECIAL_TOKENS, LabelVocab, Tokenizer

__all__ = [
    "ADDING_HS97_TOLERANCE",
    "SPECIAL_TOKENS",
    "DataError",
    "ImageCaptions",
    "LabelVocab",
    "Tokenizer",
    "adding_problem",
    "adding_problem_hs97",
    "batches",
    "bucket_batches",
    "coloured_shapes",
    "copy_memory",
    "copy_memory_baseline",
    "dates",
    "digits",
    "fill_in_the_blank",
    "iter_labelled",
    "iter_parallel",
    "load_image",
    "open_text",
    "pad_sequences",
    "padding_mask",
    "read_conll",
    "read_image_captions",
    "read_labelled",
    "read_parallel",
    "read_series",
    "read_text",
    "reversal",
]
