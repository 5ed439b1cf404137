"""Building blocks: recurrent cells and layers, attention, positional encodings, Transformer blocks."""

from seqlab.nn.attention import AdditiveAttention, DotAttention, GeneralAttention, masked_softmax
from seqlab.nn.cells import GRUCell, LSTMCell, RNNCell
from seqlab.nn.recurrent import GRU, LSTM, RNN

__all__ = ["RNNCell", "LSTMCell", "GRUCell", "RNN", "LSTM", "GRU",
           "AdditiveAttention", "DotAttention", "GeneralAttention", "masked_softmax"]
