"""Many-to-many unaligned: a recurrent encoder-decoder with attention (sequence to sequence).

The file reads bottom-up: the encoder, the bridge from the encoder's final states to the
decoder's first state, the decoder (one step, or a whole teacher-forced sequence), then
:class:`Seq2Seq`, which wires them together and offers the step API that
:func:`seqlab.decode.greedy_decode` and :func:`seqlab.decode.beam_search` drive.

Papers: Sutskever, Vinyals & Le (2014) and Cho et al. (2014) for the encoder-decoder without
attention ("the encoder vector"); Bahdanau, Cho & Bengio (2015) for additive attention read
before the recurrent step; Luong, Pham & Manning (2015) for dot / general attention read after
it, the attentional hidden state and input feeding; Bengio et al. (2015) for scheduled sampling.

Shapes (used in every docstring of this file):

    N  batch size (sentences, or sentences x beams while searching)
    S  source length (padded), T target length (padded, BOS ... EOS)
    V_src, V  source and target vocabulary sizes
    E  embedding size, H decoder hidden size, He encoder output size (D * encoder hidden size
       for merge_mode="concat", else the encoder hidden size), D = 2 if bidirectional else 1
    L  number of layers
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.models.recurrent import recurrent_layer
from seqlab.models.registry import register_model
from seqlab.nn.attention import AdditiveAttention, DotAttention, GeneralAttention

__all__ = [
    "ATTENTIONS",
    "BRIDGES",
    "Bridge",
    "Decoder",
    "DecoderState",
    "Encoder",
    "EncoderMemory",
    "RecurrentStepMixin",
    "Seq2Seq",
    "Seq2SeqOutput",
    "StepModelMixin",
]

ATTENTIONS = ("none", "bahdanau", "dot", "general", "concat")
BRIDGES = ("last", "projection", "zeros")

# A recurrent state: h for RNN / GRU, (h, c) for LSTM, each (L, N, H).
RecurrentState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} should be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _select(state: RecurrentState, index: torch.Tensor) -> RecurrentState:
    """Pick batch rows of a recurrent state (batch is dim 1): (L, N, H) -> (L, len(index), H)."""
    if isinstance(state, tuple):
        return tuple(part.index_select(1, index) for part in state)
    return state.index_select(1, index)


@dataclass
class Seq2SeqOutput:
    """Output of :meth:`Seq2Seq.forward`.

    logits: (N, T-1, V) scores for target positions 1..T-1 (the token after each input token).
    loss: scalar cross-entropy averaged over non-padding target tokens.
    attentions: (N, T-1, S) attention weights when asked for and the model attends, else None.
    """

    logits: torch.Tensor
    loss: torch.Tensor
    attentions: torch.Tensor | None = None


@dataclass
class EncoderMemory:
    """What the decoder reads from the source: the encoder's outputs and final state.

    outputs: (N, S, He) annotations, zero past each length; keys and values of the attention.
    mask: (N, S) bool, True at real source positions.
    lengths: (N,) source lengths.
    final_state: encoder h_n (or (h_n, c_n)), each (L * D, N, He / D or encoder hidden size).
    projected_keys: the attention's key projection of `outputs`, computed once, or None.
    """

    outputs: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    final_state: RecurrentState
    projected_keys: torch.Tensor | None = None

    def index_select(self, index: torch.Tensor) -> EncoderMemory:
        """The memory of batch rows `index` (repeat a row to give each beam its copy)."""
        return EncoderMemory(
            outputs=self.outputs.index_select(0, index),
            mask=self.mask.index_select(0, index),
            lengths=self.lengths.index_select(0, index),
            final_state=_select(self.final_state, index),
            projected_keys=None
            if self.projected_keys is None
            else self.projected_keys.index_select(0, index),
        )


@dataclass
class DecoderState:
    """The decoder's state between steps.

    hidden: recurrent state, each (L, N, H).
    feed: (N, H) the previous attentional hidden state h~ when input feeding is on, else None.
    """

    hidden: RecurrentState
    feed: torch.Tensor | None = None

    def index_select(self, index: torch.Tensor) -> DecoderState:
        """The state of batch rows `index` (used to follow beam back-pointers)."""
        feed = None if self.feed is None else self.feed.index_select(0, index)
        return DecoderState(hidden=_select(self.hidden, index), feed=feed)


class Encoder(nn.Module):
    r"""Embed the source and run a (bidirectional) recurrent layer over it, respecting lengths.

    .. math::
        x_s = \mathrm{Dropout}(E[w_s]), \qquad o_{1..S}, h_n = \mathrm{RNN}(x_{1..S})

    Bidirectional layers give annotations o_s that see the whole sentence (Bahdanau et al. 2015).
    With `lengths`, padding never reaches the states: outputs past a length are zero and h_n is
    taken at each sentence's last real token.

    ======= =================================================================
    src     (N, S) long token ids, right padded
    lengths (N,) long
    outputs (N, S, He), He = `output_size`
    h_n     (L * D, N, hidden_size); LSTM: (h_n, c_n)
    ======= =================================================================
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        hidden_size: int,
        cell: str = "gru",
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        merge_mode: str = "concat",
        padding_idx: int = 0,
        nonlinearity: str = "tanh",
        init: str = "default",
        peephole: bool = False,
        coupled: bool = False,
        reset_after: bool = True,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
        self.dropout = nn.Dropout(dropout)
        self.rnn = recurrent_layer(
            cell,
            embedding_dim,
            hidden_size,
            num_layers=num_layers,
            dropout=dropout,
            bidirectional=bidirectional,
            merge_mode=merge_mode,
            nonlinearity=nonlinearity,
            init=init,
            peephole=peephole,
            coupled=coupled,
            reset_after=reset_after,
        )
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.merge_mode = merge_mode

    @property
    def output_size(self) -> int:
        """He, the width of each annotation (2 * hidden_size for bidirectional concat)."""
        return self.rnn.output_size

    def forward(
        self, src: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, RecurrentState]:
        embedded = self.dropout(self.embedding(src))  # (N, S, E)
        return self.rnn(embedded, lengths=lengths)  # (N, S, He), (L * D, N, hidden_size)


def _merge(forward: torch.Tensor, backward: torch.Tensor, merge_mode: str) -> torch.Tensor:
    """Combine two directions' states, each (..., H), the way the encoder merges its outputs."""
    if merge_mode == "concat":
        return torch.cat([forward, backward], dim=-1)
    if merge_mode == "sum":
        return forward + backward
    if merge_mode == "mean":
        return (forward + backward) / 2
    return torch.maximum(forward, backward)


class Bridge(nn.Module):
    r"""Turn the encoder's final states into the decoder's initial state (the "encoder vector").

    Directions are first merged per layer as the encoder merges its outputs, giving
    m_l (N, He) for each encoder layer l. Then, per `mode`:

    - ``"last"``: s_0^l = m_l (Sutskever et al. 2014; Cho et al. 2014). Needs as many decoder
      layers as encoder layers and H = He.
    - ``"projection"``: [s_0^1; ...; s_0^L] = tanh(W m_top + b), from the top encoder layer,
      for any sizes (Bahdanau et al. 2015 use tanh(W_s h_1) of the backward direction).
    - ``"zeros"``: s_0 = 0; the decoder learns everything through attention.

    For an LSTM the cell state c is bridged the same way as h (its own W for ``"projection"``).

    ============== ======================================================
    encoder state  (L_enc * D, N, encoder hidden size), or an (h, c) pair
    decoder state  (L, N, H), or an (h, c) pair
    ============== ======================================================
    """

    def __init__(
        self,
        mode: str,
        cell: str,
        encoder_hidden_size: int,
        encoder_layers: int,
        bidirectional: bool,
        merge_mode: str,
        decoder_hidden_size: int,
        decoder_layers: int,
    ) -> None:
        super().__init__()
        _check_choice("bridge", mode, BRIDGES)
        self.mode = mode
        self.is_lstm = cell == "lstm"
        self.num_directions = 2 if bidirectional else 1
        self.merge_mode = merge_mode
        self.encoder_layers = encoder_layers
        self.decoder_hidden_size = decoder_hidden_size
        self.decoder_layers = decoder_layers
        merged_size = encoder_hidden_size * (
            self.num_directions if merge_mode == "concat" and bidirectional else 1
        )
        if mode == "last" and (merged_size, encoder_layers) != (
            decoder_hidden_size,
            decoder_layers,
        ):
            raise ValueError(
                f"bridge='last' copies the encoder's final states, so it needs the decoder hidden "
                f"size and layers to equal the encoder's merged state size and layers, got "
                f"decoder ({decoder_hidden_size}, {decoder_layers} layers) and encoder "
                f"({merged_size}, {encoder_layers} layers); use bridge='projection' or 'zeros'"
            )
        self.proj_h = self.proj_c = None
        if mode == "projection":
            self.proj_h = nn.Linear(merged_size, decoder_layers * decoder_hidden_size)
            if self.is_lstm:
                self.proj_c = nn.Linear(merged_size, decoder_layers * decoder_hidden_size)

    def _merged(self, state: torch.Tensor) -> torch.Tensor:
        """(L_enc * D, N, h) -> (L_enc, N, He): the directions of each layer merged."""
        layers, batch = self.encoder_layers, state.size(1)
        state = state.reshape(layers, self.num_directions, batch, -1)  # (L_enc, D, N, h)
        if self.num_directions == 1:
            return state[:, 0]  # (L_enc, N, h)
        return _merge(state[:, 0], state[:, 1], self.merge_mode)  # (L_enc, N, He)

    def _bridge_one(self, state: torch.Tensor, proj: nn.Linear | None) -> torch.Tensor:
        batch = state.size(1)
        if self.mode == "zeros":
            return state.new_zeros(self.decoder_layers, batch, self.decoder_hidden_size)
        merged = self._merged(state)  # (L_enc, N, He)
        if self.mode == "last":
            return merged.contiguous()
        projected = torch.tanh(proj(merged[-1]))  # (N, L * H)
        projected = projected.view(batch, self.decoder_layers, self.decoder_hidden_size)
        return projected.transpose(0, 1).contiguous()  # (L, N, H)

    def forward(self, encoder_state: RecurrentState) -> RecurrentState:
        if self.is_lstm:
            h, c = encoder_state
            return self._bridge_one(h, self.proj_h), self._bridge_one(c, self.proj_c)
        return self._bridge_one(encoder_state, self.proj_h)


class Decoder(nn.Module):
    r"""Embedding + stacked recurrent cells + attention + output layer, one target token a step.

    With y_{t-1} the previous token, e = Dropout(E[y_{t-1}]), s_t the top layer's state and
    c_t the attention context over the encoder outputs (keys = values = annotations):

    - ``attention="none"`` (Sutskever / Cho): s_t = RNN(e, s_{t-1}); o_t = s_t.
    - ``"bahdanau"`` (attend before the step, additive score):
      c_t = Attn(s_{t-1}, annotations); s_t = RNN([e; c_t], s_{t-1});
      o_t = tanh(W_o [s_t; c_t; e]) (the paper's deep output with tanh in place of maxout).
    - ``"dot"`` / ``"general"`` / ``"concat"`` (Luong, attend after the step):
      s_t = RNN([e; o_{t-1} if input_feeding], s_{t-1}); c_t = Attn(s_t, annotations);
      o_t = tanh(W_c [c_t; s_t]) (the attentional hidden state h~_t; input feeding passes it
      to the next step's input). ``"concat"`` is Luong's name for the additive score
      v^T tanh(W_q s_t + W_k h_s) read after the step; with input feeding it is the decoder
      Joey NMT calls "bahdanau".

    Then logits_t = W_out Dropout(o_t) + b, with W_out = E (the target embedding matrix) when
    ``tie_embeddings`` (Press & Wolf 2017; needs embedding_dim = hidden_size). `dropout` also
    acts on the embeddings and between stacked layers.

    ================ =====================================================
    prev tokens      (N,) long
    embedded inputs  (N, T, E) for the teacher-forced sequence path
    logits           (N, V) per step, (N, T, V) for a sequence
    attention        (N, S) per step, (N, T, S) for a sequence; None if "none"
    ================ =====================================================
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        hidden_size: int,
        encoder_size: int,
        cell: str = "gru",
        num_layers: int = 1,
        dropout: float = 0.0,
        attention: str = "bahdanau",
        attention_size: int | None = None,
        input_feeding: bool = False,
        tie_embeddings: bool = False,
        padding_idx: int = 0,
        nonlinearity: str = "tanh",
        init: str = "default",
        peephole: bool = False,
        coupled: bool = False,
        reset_after: bool = True,
    ) -> None:
        super().__init__()
        _check_choice("attention", attention, ATTENTIONS)
        if input_feeding and attention not in ("dot", "general", "concat"):
            raise ValueError(
                f"input_feeding=True is Luong et al.'s and needs attention 'dot', 'general' or "
                f"'concat', got attention={attention!r}"
            )
        if attention == "dot" and hidden_size != encoder_size:
            raise ValueError(
                f"attention='dot' needs the decoder hidden size to equal the encoder output size, "
                f"got hidden_size={hidden_size} and encoder output size {encoder_size} (a "
                f"bidirectional concat encoder doubles its width: halve encoder_hidden_size or "
                f"use merge_mode='sum'); or use attention='general'"
            )
        self.attention_type = attention
        self.input_feeding = input_feeding
        self.hidden_size = hidden_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
        self.dropout = nn.Dropout(dropout)

        if attention in ("bahdanau", "concat"):
            self.attention = AdditiveAttention(
                hidden_size, encoder_size, attention_size or hidden_size
            )
        elif attention == "dot":
            self.attention = DotAttention()
        elif attention == "general":
            self.attention = GeneralAttention(hidden_size, encoder_size)
        else:
            self.attention = None

        rnn_input_size = embedding_dim
        if attention == "bahdanau":
            rnn_input_size += encoder_size
        if input_feeding:
            rnn_input_size += hidden_size
        self.rnn = recurrent_layer(
            cell,
            rnn_input_size,
            hidden_size,
            num_layers=num_layers,
            dropout=dropout,
            nonlinearity=nonlinearity,
            init=init,
            peephole=peephole,
            coupled=coupled,
            reset_after=reset_after,
        )

        if attention == "bahdanau":
            self.combine = nn.Linear(hidden_size + encoder_size + embedding_dim, hidden_size)
        elif attention in ("dot", "general", "concat"):
            self.combine = nn.Linear(encoder_size + hidden_size, hidden_size, bias=False)
        else:
            self.combine = None
        self.out = nn.Linear(hidden_size, vocab_size)
        if tie_embeddings:
            if embedding_dim != hidden_size:
                raise ValueError(
                    f"tie_embeddings=True needs embedding_dim == hidden_size (the output layer "
                    f"reads o_t of size hidden_size), got {embedding_dim} and {hidden_size}"
                )
            self.out.weight = self.embedding.weight

    @property
    def is_parallel(self) -> bool:
        """Whether a teacher-forced sequence can run all steps at once (no step feeds the next)."""
        return self.attention_type != "bahdanau" and not self.input_feeding

    def prepare(self, memory: EncoderMemory) -> EncoderMemory:
        """Memory with the attention's key projection computed once for all steps."""
        if self.attention is None:
            return memory
        return replace(memory, projected_keys=self.attention.project_keys(memory.outputs))

    def initial_state(self, hidden: RecurrentState, batch_size: int) -> DecoderState:
        feed = None
        if self.input_feeding:
            top = hidden[0] if isinstance(hidden, tuple) else hidden
            feed = top.new_zeros(batch_size, self.hidden_size)
        return DecoderState(hidden=hidden, feed=feed)

    def _attend(
        self, query: torch.Tensor, memory: EncoderMemory
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attention(
            query, memory.outputs, memory.outputs, memory.mask, memory.projected_keys
        )

    def advance(
        self, prev_tokens: torch.Tensor, state: DecoderState, memory: EncoderMemory
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """One step up to the output layer: o_t (N, H), the new state, attention (N, S) or None."""
        embedded = self.dropout(self.embedding(prev_tokens))  # (N, E)
        inputs = [embedded]
        context = weights = None
        if self.attention_type == "bahdanau":
            top = state.hidden[0] if isinstance(state.hidden, tuple) else state.hidden
            context, weights = self._attend(top[-1], memory)  # query s_{t-1}: (N, H)
            inputs.append(context)  # (N, He)
        if self.input_feeding:
            inputs.append(state.feed)  # (N, H)
        rnn_input = torch.cat(inputs, dim=-1).unsqueeze(1)  # (N, 1, E + ...)
        output, hidden = self.rnn(rnn_input, state.hidden)
        output = output.squeeze(1)  # (N, H), the new top state s_t
        if self.attention_type == "bahdanau":
            attentional = torch.tanh(self.combine(torch.cat([output, context, embedded], dim=-1)))
        elif self.attention is not None:
            context, weights = self._attend(output, memory)  # (N, He), (N, S)
            attentional = torch.tanh(self.combine(torch.cat([context, output], dim=-1)))
        else:
            attentional = output
        feed = attentional if self.input_feeding else None
        return attentional, DecoderState(hidden=hidden, feed=feed), weights

    def step(
        self, prev_tokens: torch.Tensor, state: DecoderState, memory: EncoderMemory
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """One decoding step: logits (N, V), the new state and attention weights (N, S) or None."""
        attentional, state, weights = self.advance(prev_tokens, state, memory)
        return self.out(self.dropout(attentional)), state, weights  # (N, V)

    def forward(
        self, tokens: torch.Tensor, state: DecoderState, memory: EncoderMemory
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced decoding of tokens (N, T) -> logits (N, T, V), attention (N, T, S).

        Runs every step in one call of the recurrent layer when no step feeds the next
        (no attention, or Luong attention without input feeding); otherwise loops over
        `advance` and applies the output layer to all steps at once.
        """
        if not self.is_parallel:
            # Only the recurrence is sequential: the output layer, the widest matrix product,
            # runs once over all steps.
            outputs, attentions = [], []
            for t in range(tokens.size(1)):
                attentional, state, weights = self.advance(tokens[:, t], state, memory)
                outputs.append(attentional)
                attentions.append(weights)
            stacked = None if attentions[0] is None else torch.stack(attentions, dim=1)
            logits = self.out(self.dropout(torch.stack(outputs, dim=1)))
            return logits, stacked  # (N, T, V), (N, T, S)
        embedded = self.dropout(self.embedding(tokens))  # (N, T, E)
        outputs, _ = self.rnn(embedded, state.hidden)  # (N, T, H)
        weights = None
        if self.attention is not None:
            context, weights = self._attend(outputs, memory)  # (N, T, He), (N, T, S)
            outputs = torch.tanh(self.combine(torch.cat([context, outputs], dim=-1)))
        return self.out(self.dropout(outputs)), weights  # (N, T, V)


class StepModelMixin:
    """What beam search and the exporters ask of every encoder-decoder beyond ``encode`` /
    ``init_state`` / ``step``: moving batch rows of its state and memory (both have
    ``index_select``), and its size."""

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (shared tensors counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def reorder_state(self, state, index: torch.Tensor):
        """Decoder state (or key/value cache) of batch rows `index` (N',) long."""
        return state.index_select(index)

    def reorder_memory(self, memory, index: torch.Tensor):
        """Encoder memory of batch rows `index` (N',) long."""
        return memory.index_select(index)


class RecurrentStepMixin(StepModelMixin):
    """The step of a model whose ``decoder`` is a recurrent :class:`Decoder`."""

    def step(
        self, prev_tokens: torch.Tensor, state: DecoderState, memory
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """One step: prev_tokens (N,) -> log_probs (N, V), new state, attention (N, S) or None."""
        logits, state, weights = self.decoder.step(prev_tokens, state, memory)
        return torch.log_softmax(logits, dim=-1), state, weights


@register_model
class Seq2Seq(RecurrentStepMixin, nn.Module):
    r"""Recurrent encoder-decoder with optional attention, trained with teacher forcing.

    .. math::
        p(y_1..y_T \mid x) = \prod_t p(y_t \mid y_{<t}, x), \qquad
        \mathcal{L} = -\frac{1}{|\{t: y_t \ne \mathrm{pad}\}|}
            \sum_{t: y_t \ne \mathrm{pad}} \log p(y_t \mid y_{<t}, x)

    The encoder reads the source (:class:`Encoder`), the bridge turns its final states into the
    decoder's first state (:class:`Bridge`: ``"last"``, ``"projection"`` or ``"zeros"``) and the
    decoder predicts each target token from the previous one (:class:`Decoder`: attention
    ``"none"``, ``"bahdanau"``, ``"dot"``, ``"general"`` or ``"concat"``, optional Luong input
    feeding, optional output layer tied to the target embeddings).

    ``cell`` (``"rnn"``, ``"lstm"``, ``"gru"``) and its variant options (``nonlinearity``,
    ``init``, ``peephole``, ``coupled``, ``reset_after``, see
    :func:`~seqlab.models.recurrent_layer`) apply to the encoder and the decoder alike.

    Scheduled sampling (Bengio et al. 2015): while training with ``teacher_forcing_ratio < 1``
    each sentence at each step is fed the true previous token with that probability, else the
    model's own most likely previous token. In eval mode the true tokens are always fed, so the
    loss is the usual teacher-forced validation loss.

    Step API used by :mod:`seqlab.decode` (generic: any model with these five methods can be
    searched): ``encode(src, src_lengths) -> memory``, ``init_state(memory) -> state``,
    ``step(prev_tokens, state, memory) -> (log_probs, state, attention)``,
    ``reorder_state(state, index)`` and ``reorder_memory(memory, index)`` (pick / repeat batch
    rows, for beams).

    ============= ==============================================================
    src           (N, S) long, right padded with `pad_id`
    src_lengths   (N,) long
    tgt           (N, T) long: BOS y_1 .. y_m EOS, then `pad_id`
    logits        (N, T-1, V), predictions for tgt[:, 1:]
    attentions    (N, T-1, S)
    prev_tokens   (N,) long; log_probs (N, V); attention (N, S)
    ============= ==============================================================
    """

    def __init__(
        self,
        source_vocab_size: int,
        target_vocab_size: int,
        embedding_dim: int = 256,
        hidden_size: int = 256,
        cell: str = "gru",
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = True,
        merge_mode: str = "concat",
        nonlinearity: str = "tanh",
        init: str = "default",
        peephole: bool = False,
        coupled: bool = False,
        reset_after: bool = True,
        encoder_hidden_size: int | None = None,
        attention: str = "bahdanau",
        attention_size: int | None = None,
        input_feeding: bool = False,
        tie_embeddings: bool = False,
        bridge: str = "projection",
        teacher_forcing_ratio: float = 1.0,
        label_smoothing: float = 0.0,
        pad_id: int = 0,
        max_source_length: int | None = None,
    ) -> None:
        super().__init__()
        _check_choice("attention", attention, ATTENTIONS)
        _check_choice("bridge", bridge, BRIDGES)
        if not 0.0 <= teacher_forcing_ratio <= 1.0:
            raise ValueError(
                f"teacher_forcing_ratio should be a number in range [0, 1], "
                f"got {teacher_forcing_ratio!r}"
            )
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"label_smoothing should be a number in range [0, 1), got {label_smoothing!r}"
            )
        if max_source_length is not None and max_source_length < 1:
            raise ValueError(
                f"max_source_length should be a positive integer or None, got {max_source_length}"
            )
        encoder_hidden_size = encoder_hidden_size or hidden_size
        self.encoder = Encoder(
            source_vocab_size,
            embedding_dim,
            encoder_hidden_size,
            cell=cell,
            num_layers=num_layers,
            dropout=dropout,
            bidirectional=bidirectional,
            merge_mode=merge_mode,
            padding_idx=pad_id,
            nonlinearity=nonlinearity,
            init=init,
            peephole=peephole,
            coupled=coupled,
            reset_after=reset_after,
        )
        self.bridge = Bridge(
            bridge,
            cell,
            encoder_hidden_size=encoder_hidden_size,
            encoder_layers=num_layers,
            bidirectional=bidirectional,
            merge_mode=merge_mode,
            decoder_hidden_size=hidden_size,
            decoder_layers=num_layers,
        )
        self.decoder = Decoder(
            target_vocab_size,
            embedding_dim,
            hidden_size,
            encoder_size=self.encoder.output_size,
            cell=cell,
            num_layers=num_layers,
            dropout=dropout,
            attention=attention,
            attention_size=attention_size,
            input_feeding=input_feeding,
            tie_embeddings=tie_embeddings,
            padding_idx=pad_id,
            nonlinearity=nonlinearity,
            init=init,
            peephole=peephole,
            coupled=coupled,
            reset_after=reset_after,
        )
        self.teacher_forcing_ratio = teacher_forcing_ratio
        self.label_smoothing = label_smoothing
        self.pad_id = pad_id
        self.max_source_length = max_source_length

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncoderMemory:
        """Run the encoder: src (N, S), src_lengths (N,) -> :class:`EncoderMemory`."""
        if src.dim() != 2:
            raise ValueError(f"src should be (N, S) token ids, got shape {tuple(src.shape)}")
        src_lengths = src_lengths.to(device=src.device, dtype=torch.long)
        longest = int(src_lengths.max())
        if self.max_source_length is not None and longest > self.max_source_length:
            raise ValueError(
                f"source length {longest} is longer than max_source_length="
                f"{self.max_source_length}; shorten or split the input, or raise the limit"
            )
        if longest > src.size(1) or int(src_lengths.min()) < 1:
            raise ValueError(
                f"src_lengths should lie in [1, {src.size(1)}] (the padded source length), got "
                f"min {int(src_lengths.min())} and max {longest}"
            )
        outputs, final_state = self.encoder(src, src_lengths)  # (N, S, He)
        mask = torch.arange(src.size(1), device=src.device) < src_lengths[:, None]  # (N, S)
        memory = EncoderMemory(outputs, mask, src_lengths, final_state)
        return self.decoder.prepare(memory)

    def init_state(self, memory: EncoderMemory) -> DecoderState:
        """The decoder's first state, bridged from the encoder's final states."""
        return self.decoder.initial_state(self.bridge(memory.final_state), memory.outputs.size(0))

    def _scheduled_sampling(
        self, inputs: torch.Tensor, state: DecoderState, memory: EncoderMemory
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Step by step, feeding the model's own previous prediction where a coin says so."""
        logits, attentions = [], []
        prev = inputs[:, 0]  # (N,) BOS
        for t in range(inputs.size(1)):
            if t > 0:
                use_truth = torch.rand(prev.shape, device=prev.device) < self.teacher_forcing_ratio
                predicted = logits[-1].argmax(dim=-1)  # (N,)
                prev = torch.where(use_truth, inputs[:, t], predicted)
            step_logits, state, weights = self.decoder.step(prev, state, memory)
            logits.append(step_logits)
            attentions.append(weights)
        stacked = None if attentions[0] is None else torch.stack(attentions, dim=1)
        return torch.stack(logits, dim=1), stacked

    def forward(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        tgt: torch.Tensor,
        return_attentions: bool = False,
    ) -> Seq2SeqOutput:
        if tgt.dim() != 2 or tgt.size(1) < 2:
            raise ValueError(
                f"tgt should be (N, T) with T >= 2 (BOS ... EOS), got shape {tuple(tgt.shape)}"
            )
        memory = self.encode(src, src_lengths)
        state = self.init_state(memory)
        inputs, targets = tgt[:, :-1], tgt[:, 1:]  # (N, T-1) each
        if self.training and self.teacher_forcing_ratio < 1.0:
            logits, attentions = self._scheduled_sampling(inputs, state, memory)
        else:
            logits, attentions = self.decoder(inputs, state, memory)  # (N, T-1, V)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)),  # (N * (T-1), V)
            targets.reshape(-1),
            ignore_index=self.pad_id,
            label_smoothing=self.label_smoothing,
        )
        return Seq2SeqOutput(
            logits=logits, loss=loss, attentions=attentions if return_attentions else None
        )
