"""Building blocks: recurrent cells and layers (classic and minimal), attention, positional encodings, Transformer blocks."""

from seqlab.nn.attention import AdditiveAttention, DotAttention, GeneralAttention, masked_softmax
from seqlab.nn.cells import GRUCell, LSTMCell, RNNCell
from seqlab.nn.minimal import MinGRU, MinLSTM
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

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "AdditiveAttention",
    "DotAttention",
    "GRUCell",
    "GeneralAttention",
    "LSTMCell",
    "LearnedPositionalEmbedding",
    "MinGRU",
    "MinLSTM",
    "MultiheadAttention",
    "RNNCell",
    "RotaryEmbedding",
    "SinusoidalPositionalEncoding",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "causal_mask",
    "masked_softmax",
    "scaled_dot_product_attention",
]
