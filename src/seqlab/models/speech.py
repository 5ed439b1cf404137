"""Speech recognition: log-mel frames in, characters out (Listen, Attend and Spell; Whisper's shape).

The file reads bottom-up: the pieces both models share (frame masks, stacking frames, the CTC
head), the pyramidal recurrent listener and :class:`ListenAttendSpell`, which reuses the
sequence-to-sequence :class:`~seqlab.models.seq2seq.Decoder` as its speller, then the
convolutional front-end and :class:`SpeechTransformer`, a tiny Whisper-shaped encoder-decoder
built from seqlab's Transformer layers. Both offer the step API, so
:func:`seqlab.decode.greedy_decode` and :func:`seqlab.decode.beam_search` transcribe with them
unchanged (the "source" is the batch of feature frames and their lengths).

Papers: Chan, Jaitly, Le & Vinyals (2016), "Listen, Attend and Spell" (pyramidal BLSTM
listener, attention-based character speller); Sak et al. (2015) (stacking and skipping frames);
Radford et al. (2023), "Robust Speech Recognition via Large-Scale Weak Supervision" (Whisper:
two convolutions, the second of stride 2, sinusoidal positions, pre-norm Transformer encoder and
decoder); Graves et al. (2006) (CTC); Watanabe et al. (2017) (CTC and attention trained jointly).

Shapes (used in every docstring of this file):

    N  batch size (utterances, or utterances x beams while searching)
    F  feature frames (padded), M mel bands; S encoder steps after down-sampling (padded)
    T  transcript length in characters (BOS ... EOS), V vocabulary size
    H  hidden size, He encoder output size, E = d_model
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.models.recurrent import recurrent_layer
from seqlab.models.registry import register_model
from seqlab.models.seq2seq import (
    ATTENTIONS,
    Bridge,
    Decoder,
    DecoderState,
    EncoderMemory,
    RecurrentStepMixin,
    StepModelMixin,
    _check_choice,
)
from seqlab.models.transformer import TransformerEmbedding, TransformerMemory
from seqlab.nn.positional import SinusoidalPositionalEncoding
from seqlab.nn.transformer import (
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)

if TYPE_CHECKING:
    from seqlab.decode.kv_cache import KVCache

__all__ = [
    "ListenAttendSpell",
    "PyramidalListener",
    "SpeechOutput",
    "SpeechTransformer",
    "frame_mask",
    "stack_frames",
]


@dataclass
class SpeechOutput:
    """Output of the speech models' ``forward``.

    logits: (N, T-1, V) scores for transcript positions 1..T-1.
    loss: scalar, the attention decoder's cross-entropy (mixed with CTC when ``ctc_weight`` > 0).
    attentions: (N, T-1, S) attention over encoder steps when asked for, else None.
    ctc_loss: the CTC loss alone when the model has a CTC head, else None.
    """

    logits: torch.Tensor
    loss: torch.Tensor
    attentions: torch.Tensor | None = None
    ctc_loss: torch.Tensor | None = None


def frame_mask(lengths: torch.Tensor, length: int) -> torch.Tensor:
    """(N, length) bool, True at real frames (position < lengths)."""
    return torch.arange(length, device=lengths.device)[None, :] < lengths[:, None]


def _check_features(features: torch.Tensor, lengths: torch.Tensor, n_mels: int) -> torch.Tensor:
    if features.dim() != 3 or features.size(-1) != n_mels:
        raise ValueError(
            f"features should be (N, F, M={n_mels}) log-mel frames, got shape {tuple(features.shape)}"
        )
    lengths = lengths.to(device=features.device, dtype=torch.long)
    if int(lengths.min()) < 1 or int(lengths.max()) > features.size(1):
        raise ValueError(
            f"lengths should lie in [1, {features.size(1)}] (the padded frame count), got min "
            f"{int(lengths.min())} and max {int(lengths.max())}"
        )
    return lengths


def stack_frames(
    features: torch.Tensor, lengths: torch.Tensor, factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate each `factor` consecutive frames into one (Sak et al. 2015): the sequence is
    `factor` times shorter and each step `factor` times wider.

    Frames past each length are zeroed first and the batch is zero padded to a multiple of
    `factor`, so a padded utterance stacks exactly as it would alone.

    ======== =========================================
    features (N, F, D) -> (N, ceil(F / factor), factor * D)
    lengths  (N,) -> ceil(lengths / factor)
    ======== =========================================
    """
    if factor == 1:
        return features, lengths
    batch, frames, width = features.shape
    features = features * frame_mask(lengths, frames)[..., None].to(features.dtype)
    extra = -frames % factor
    features = F.pad(features, (0, 0, 0, extra))  # (N, F', D), F' a multiple of factor
    stacked = features.reshape(batch, (frames + extra) // factor, factor * width)
    return stacked, (lengths + factor - 1) // factor


class CTCHead(nn.Module):
    r"""A linear layer over the encoder's steps trained with CTC (Graves et al. 2006).

    .. math::
        \mathcal{L}_{CTC} = -\log \sum_{\pi \in \mathcal{B}^{-1}(y)} \prod_s p(\pi_s \mid x)

    where B removes repeats then blanks; the blank is the padding id, which never occurs in a
    transcript. Loss from torch's ``ctc_loss``, averaged over the batch of per-character losses
    (``reduction="mean"`` divides each utterance by its transcript length).
    """

    def __init__(self, input_size: int, vocab_size: int, blank: int) -> None:
        super().__init__()
        self.proj = nn.Linear(input_size, vocab_size)
        self.blank = blank

    def forward(
        self, encoded: torch.Tensor, lengths: torch.Tensor, tgt: torch.Tensor, bos_positions: int = 1
    ) -> torch.Tensor:
        log_probs = torch.log_softmax(self.proj(encoded).float(), dim=-1)  # (N, S, V)
        targets = tgt[:, bos_positions:]  # (N, T-1): y_1 .. y_m EOS pad ...
        target_lengths = (targets != self.blank).sum(dim=1) - 1  # EOS is not spoken
        return F.ctc_loss(
            log_probs.transpose(0, 1), targets, lengths, target_lengths.clamp(min=0),
            blank=self.blank, reduction="mean", zero_infinity=True,
        )


class PyramidalListener(nn.Module):
    r"""LAS's listener: stacked frames, then bidirectional recurrent layers that halve time.

    .. math::
        h^1_s = \mathrm{BiRNN}^1(x'_s), \qquad
        h^j_s = \mathrm{BiRNN}^j\bigl([h^{j-1}_{2s};\ h^{j-1}_{2s+1}]\bigr) \ (j = 2..J)

    x' are the input frames stacked `frame_stack` at a time (:func:`stack_frames`); every layer
    after the first reads pairs of its predecessor's steps (the pyramid of Chan et al. 2016), so
    the encoder is frame_stack * 2^(J-1) times shorter than the input: attention then looks at
    a few dozen steps instead of hundreds. Each layer respects lengths (outputs past a length
    are zero), so a padded batch gives each utterance the outputs it would have alone.

    ======== ====================================================
    features (N, F, M); lengths (N,)
    outputs  (N, S, He), He = 2 H; S = ceil(F / (frame_stack * 2^(J-1)))
    lengths  (N,) encoder steps
    ======== ====================================================
    """

    def __init__(
        self,
        n_mels: int,
        hidden_size: int = 128,
        num_layers: int = 2,
        frame_stack: int = 3,
        cell: str = "lstm",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_layers < 1 or frame_stack < 1:
            raise ValueError(
                f"num_layers and frame_stack should be positive integers, got {num_layers} and "
                f"{frame_stack}"
            )
        self.n_mels = n_mels
        self.frame_stack = frame_stack
        self.layers = nn.ModuleList()
        input_size = n_mels * frame_stack
        for index in range(num_layers):
            self.layers.append(recurrent_layer(cell, input_size, hidden_size, bidirectional=True))
            input_size = 2 * (2 * hidden_size)  # the next layer reads pairs of steps
        self.dropout = nn.Dropout(dropout)
        self.output_size = 2 * hidden_size

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = _check_features(features, lengths, self.n_mels)
        x, lengths = stack_frames(features, lengths, self.frame_stack)  # (N, F / k, k M)
        for index, layer in enumerate(self.layers):
            if index > 0:
                x, lengths = stack_frames(self.dropout(x), lengths, 2)  # (N, S / 2, 4 H)
            x, _ = layer(x, lengths=lengths)  # (N, S, 2 H), zero past each length
        return x, lengths


@register_model
class ListenAttendSpell(RecurrentStepMixin, nn.Module):
    r"""Listen, Attend and Spell (Chan et al. 2016): a pyramidal listener and an attending speller.

    .. math::
        h_{1..S} = \mathrm{Listen}(x_{1..F}), \qquad s_0 = \tanh(W_s \bar h + b_s), \qquad
        p(y_t \mid y_{<t}, x) = \mathrm{Spell}(y_{t-1}, s_{t-1}, \mathrm{Attend}(s, h))

    with \bar h the mean of the listener's outputs over real steps. The speller is seq2seq's
    :class:`~seqlab.models.seq2seq.Decoder` over characters with the listener's steps as its
    annotations (``attention``: ``"bahdanau"``, additive, before the step as in the paper;
    ``"dot"`` / ``"general"``, Luong's, after it). The loss is the cross-entropy over non-padding
    characters; with ``ctc_weight`` = lambda > 0 a CTC head on the listener joins it,
    loss = (1 - lambda) CE + lambda CTC (Watanabe et al. 2017), which pushes the attention to
    stay monotonic early in training.

    Step API (see :class:`seqlab.decode.greedy.StepModel`): ``encode(features, lengths)``,
    ``init_state``, ``step``, ``reorder_state``, ``reorder_memory``.

    ============= ==============================================================
    features      (N, F, M) float log-mel frames, zero past each length
    lengths       (N,) long frame counts
    tgt           (N, T) long: BOS y_1 .. y_m EOS, then `pad_id`
    logits        (N, T-1, V); attentions (N, T-1, S)
    ============= ==============================================================
    """

    def __init__(
        self,
        vocab_size: int,
        n_mels: int = 40,
        frame_stack: int = 3,
        encoder_hidden_size: int = 128,
        encoder_layers: int = 2,
        embedding_dim: int = 32,
        hidden_size: int = 256,
        cell: str = "lstm",
        dropout: float = 0.0,
        attention: str = "bahdanau",
        attention_size: int | None = None,
        ctc_weight: float = 0.0,
        label_smoothing: float = 0.0,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        _check_choice("attention", attention, ATTENTIONS)
        if attention == "none":
            raise ValueError("a speech recogniser needs attention: use 'bahdanau', 'dot' or 'general'")
        if not 0.0 <= ctc_weight < 1.0:
            raise ValueError(f"ctc_weight should be a number in range [0, 1), got {ctc_weight!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"label_smoothing should be a number in range [0, 1), got {label_smoothing!r}"
            )
        self.listener = PyramidalListener(
            n_mels, encoder_hidden_size, encoder_layers, frame_stack, cell, dropout
        )
        encoder_size = self.listener.output_size
        # The mean listener output plays the role of a one-layer, one-direction final state.
        self.bridge = Bridge(
            "projection", cell, encoder_hidden_size=encoder_size, encoder_layers=1,
            bidirectional=False, merge_mode="concat", decoder_hidden_size=hidden_size,
            decoder_layers=1,
        )
        self.decoder = Decoder(
            vocab_size, embedding_dim, hidden_size, encoder_size=encoder_size, cell=cell,
            dropout=dropout, attention=attention, attention_size=attention_size,
            padding_idx=pad_id,
        )
        self.ctc = CTCHead(encoder_size, vocab_size, pad_id) if ctc_weight > 0 else None
        self.ctc_weight = ctc_weight
        self.is_lstm = cell == "lstm"
        self.label_smoothing = label_smoothing
        self.pad_id = pad_id

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> EncoderMemory:
        """Listen: features (N, F, M), lengths (N,) -> :class:`EncoderMemory` over S steps."""
        outputs, steps = self.listener(features, lengths)  # (N, S, He), (N,)
        mask = frame_mask(steps, outputs.size(1))  # (N, S)
        mean = outputs.sum(dim=1) / steps[:, None].to(outputs.dtype)  # (N, He); zeros past lengths
        memory = EncoderMemory(outputs, mask, steps, final_state=mean.unsqueeze(0))  # (1, N, He)
        return self.decoder.prepare(memory)

    def init_state(self, memory: EncoderMemory) -> DecoderState:
        """The speller's first state, s_0 = tanh(W_s mean(h) + b_s)."""
        vector = memory.final_state  # (1, N, He)
        hidden = self.bridge((vector, vector) if self.is_lstm else vector)  # (1, N, H)
        return self.decoder.initial_state(hidden, memory.outputs.size(0))

    def forward(
        self,
        features: torch.Tensor,
        lengths: torch.Tensor,
        tgt: torch.Tensor,
        return_attentions: bool = False,
    ) -> SpeechOutput:
        _check_target(tgt, features)
        memory = self.encode(features, lengths)
        state = self.init_state(memory)
        inputs, targets = tgt[:, :-1], tgt[:, 1:]  # (N, T-1) each
        logits, attentions = self.decoder(inputs, state, memory)  # (N, T-1, V), (N, T-1, S)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
            ignore_index=self.pad_id, label_smoothing=self.label_smoothing,
        )
        ctc_loss = None
        if self.ctc is not None:
            ctc_loss = self.ctc(memory.outputs, memory.lengths, tgt)
            loss = (1 - self.ctc_weight) * loss + self.ctc_weight * ctc_loss
        return SpeechOutput(logits, loss, attentions if return_attentions else None, ctc_loss)


def _check_target(tgt: torch.Tensor, features: torch.Tensor) -> None:
    if tgt.dim() != 2 or tgt.size(1) < 2:
        raise ValueError(f"tgt should be (N, T) with T >= 2 (BOS ... EOS), got shape {tuple(tgt.shape)}")
    if tgt.size(0) != features.size(0):
        raise ValueError(
            f"need one transcript per utterance, got {features.size(0)} utterances and "
            f"{tgt.size(0)} transcripts"
        )


class ConvFrontEnd(nn.Module):
    r"""Whisper's stem: 1-D convolutions over time (kernel 3, padding 1), each followed by GELU.

    .. math::
        z^{(j)} = \mathrm{GELU}(\mathrm{Conv1d}_{k=3,\ \mathrm{stride}=r_j}(z^{(j-1)})),
        \qquad S = \lceil F / \textstyle\prod_j r_j \rceil

    Whisper uses strides (1, 2): 100 frames a second become 50 steps. Frames past each length
    are zeroed before every convolution, so padding never leaks into the real steps.

    ======== ======================================
    features (N, F, M); lengths (N,)
    output   (N, S, E); lengths (N,) steps
    ======== ======================================
    """

    def __init__(self, n_mels: int, d_model: int, strides: tuple[int, ...] = (1, 2)) -> None:
        super().__init__()
        if not strides or any(s not in (1, 2) for s in strides):
            raise ValueError(f"strides should be a non-empty list of 1s and 2s, got {list(strides)}")
        self.convs = nn.ModuleList(
            nn.Conv1d(n_mels if i == 0 else d_model, d_model, 3, stride=s, padding=1)
            for i, s in enumerate(strides)
        )
        self.strides = tuple(strides)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = features.transpose(1, 2)  # (N, M, F)
        for conv, stride in zip(self.convs, self.strides):
            x = x * frame_mask(lengths, x.size(-1))[:, None, :].to(x.dtype)
            x = F.gelu(conv(x))  # (N, E, F / stride)
            lengths = (lengths + stride - 1) // stride
        x = x * frame_mask(lengths, x.size(-1))[:, None, :].to(x.dtype)
        return x.transpose(1, 2), lengths  # (N, S, E)


@register_model
class SpeechTransformer(StepModelMixin, nn.Module):
    r"""A tiny Whisper-shaped encoder-decoder: conv stem + sinusoids + Transformer, characters out.

    .. math::
        m = \mathrm{Encoder}(\mathrm{Conv}(x) + P), \qquad
        h = \mathrm{Decoder}(\sqrt{E}\,E_{tgt}[y_{<t}] + P',\ m), \qquad
        p(y_t \mid y_{<t}, x) = \mathrm{softmax}(E_{tgt} h_t)

    P are sinusoids (Vaswani et al. 2017), P' the decoder's learned positions, as in Whisper;
    both stacks are pre-norm with a final LayerNorm, the output matrix tied to the character
    embedding. The loss is the cross-entropy over non-padding characters (plus CTC on the
    encoder with ``ctc_weight`` > 0, as in :class:`ListenAttendSpell`).

    Step API as :class:`~seqlab.models.TransformerSeq2Seq` (a key/value cache per step).

    ============= ==============================================================
    features      (N, F, M) float; lengths (N,) long
    tgt           (N, T) long: BOS y_1 .. y_m EOS, then `pad_id`
    logits        (N, T-1, V); attentions (N, T-1, S) last layer's cross-attention, head mean
    ============= ==============================================================
    """

    def __init__(
        self,
        vocab_size: int,
        n_mels: int = 40,
        d_model: int = 128,
        nhead: int = 4,
        num_encoder_layers: int = 3,
        num_decoder_layers: int = 2,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
        conv_strides: tuple[int, ...] = (1, 2),
        max_frames: int = 3000,
        max_length: int = 256,
        ctc_weight: float = 0.0,
        label_smoothing: float = 0.0,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 <= ctc_weight < 1.0:
            raise ValueError(f"ctc_weight should be a number in range [0, 1), got {ctc_weight!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"label_smoothing should be a number in range [0, 1), got {label_smoothing!r}"
            )
        self.n_mels = n_mels
        self.front = ConvFrontEnd(n_mels, d_model, tuple(conv_strides))
        self.position = SinusoidalPositionalEncoding(d_model, max_frames)
        self.dropout = nn.Dropout(dropout)
        dim_feedforward = dim_feedforward or 4 * d_model
        layer_args = (d_model, nhead, dim_feedforward, dropout, "gelu")
        self.encoder = TransformerEncoder(
            TransformerEncoderLayer(*layer_args, batch_first=True, norm_first=True),
            num_encoder_layers, norm=nn.LayerNorm(d_model),
        )
        self.target_embedding = TransformerEmbedding(
            vocab_size, d_model, max_length=max_length, positional="learned", dropout=dropout,
            scale_embeddings=True, padding_idx=pad_id,
        )
        self.decoder = TransformerDecoder(
            TransformerDecoderLayer(*layer_args, batch_first=True, norm_first=True),
            num_decoder_layers, norm=nn.LayerNorm(d_model),
        )
        self.out = nn.Linear(d_model, vocab_size, bias=False)
        self.out.weight = self.target_embedding.token.weight
        self.ctc = CTCHead(d_model, vocab_size, pad_id) if ctc_weight > 0 else None
        self.ctc_weight = ctc_weight
        self.num_decoder_layers = num_decoder_layers
        self.label_smoothing = label_smoothing
        self.pad_id = pad_id
        for name, parameter in self.named_parameters():
            if parameter.dim() > 1 and "norm" not in name and "convs" not in name:
                nn.init.xavier_uniform_(parameter)

    def _encode(self, features: torch.Tensor, lengths: torch.Tensor) -> TransformerMemory:
        lengths = _check_features(features, lengths, self.n_mels)
        x, steps = self.front(features, lengths)  # (N, S, E), (N,)
        x = self.dropout(self.position(x))
        padding = ~frame_mask(steps, x.size(1))  # (N, S) True at padding
        outputs, _ = self.encoder(x, src_key_padding_mask=padding)  # (N, S, E)
        return TransformerMemory(outputs, padding, steps)

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> TransformerMemory:
        """Run the encoder, with each decoder layer's cross-attention keys / values computed once."""
        memory = self._encode(features, lengths)
        memory.key_values = [
            layer.multihead_attn.project_key_value(memory.outputs, memory.outputs)
            for layer in self.decoder.layers
        ]
        return memory

    def init_state(self, memory: TransformerMemory) -> KVCache:
        """An empty key/value cache for the decoder's self-attention."""
        from seqlab.decode.kv_cache import KVCache

        return KVCache(self.num_decoder_layers)

    def step(
        self, prev_tokens: torch.Tensor, state: KVCache, memory: TransformerMemory
    ) -> tuple[torch.Tensor, KVCache, None]:
        """One step: prev_tokens (N,) -> log_probs (N, V), the grown cache, None."""
        offset = state.length
        x = self.target_embedding(prev_tokens[:, None], offset=offset)  # (N, 1, E)
        hidden, _, _ = self.decoder(
            x, memory.outputs, memory_key_padding_mask=memory.padding, kv_cache=state,
            position_offset=offset, memory_key_values=memory.key_values,
        )  # (N, 1, E)
        return torch.log_softmax(self.out(hidden[:, 0]), dim=-1), state, None

    def forward(
        self,
        features: torch.Tensor,
        lengths: torch.Tensor,
        tgt: torch.Tensor,
        return_attentions: bool = False,
    ) -> SpeechOutput:
        _check_target(tgt, features)
        memory = self._encode(features, lengths)
        inputs, targets = tgt[:, :-1], tgt[:, 1:]  # (N, T-1) each
        target_padding = inputs == self.pad_id
        target_padding[:, 0] = False
        hidden, _, cross = self.decoder(
            self.target_embedding(inputs), memory.outputs, tgt_key_padding_mask=target_padding,
            memory_key_padding_mask=memory.padding, tgt_is_causal=True,
            need_weights=return_attentions,
        )  # (N, T-1, E)
        logits = self.out(hidden)  # (N, T-1, V)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
            ignore_index=self.pad_id, label_smoothing=self.label_smoothing,
        )
        ctc_loss = None
        if self.ctc is not None:
            ctc_loss = self.ctc(memory.outputs, memory.lengths, tgt)
            loss = (1 - self.ctc_weight) * loss + self.ctc_weight * ctc_loss
        attentions = cross[-1].mean(dim=1) if return_attentions else None  # (N, T-1, S)
        return SpeechOutput(logits, loss, attentions, ctc_loss)
