"""Building blocks: recurrent cells and layers, attention, positional encodings, Transformer blocks."""

from seqlab.nn.attention import AdditiveAttention, DotAttention, GeneralAttention, masked_softmax
from seqlab.nn.cells import GRUCell, LSTMCell, RNNCell
from seqlab.nn.multihead import MultiheadAttention, causal_mask, scaled_dot_product_attention
from seqlab.nn.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
)
from seqlab.nn.recurrent import GRU, LSTM, RNN
from seqlab.nn.transformer import (
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)

__all__ = ["RNNCell", "LSTMCell", "GRUCell", "RNN", "LSTM", "GRU",
           "AdditiveAttention", "DotAttention", "GeneralAttention", "masked_softmax",
           "MultiheadAttention", "causal_mask", "scaled_dot_product_attention",
           "LearnedPositionalEmbedding", "RotaryEmbedding", "SinusoidalPositionalEncoding",
           "TransformerDecoder", "TransformerDecoderLayer", "TransformerEncoder",
           "TransformerEncoderLayer"]
