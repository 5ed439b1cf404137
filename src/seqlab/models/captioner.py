"""One-to-many: an image captioner, a small CNN encoder and a recurrent decoder with attention.

The file reads bottom-up: the image encoder (convolutions -> a grid of region features and one
image vector), the memory the decoder reads, then :class:`Captioner`, which bridges the image
vector to the decoder's first state and reuses the sequence-to-sequence
:class:`~seqlab.models.seq2seq.Decoder` over image regions instead of source words. It offers the
step API, so :func:`seqlab.decode.greedy_decode` and :func:`seqlab.decode.beam_search` caption
images unchanged (the "source" is the image batch; give them ``max_length``).

Papers: Vinyals et al. (2015), "Show and Tell" (a CNN's image vector starts an LSTM that writes
the caption); Xu et al. (2015), "Show, Attend and Tell" (attention over the CNN's grid of
regions, the decoder's first state computed from the image).

Shapes (used in every docstring of this file):

    N  batch size (images, or images x beams while searching)
    C_in image channels (3), P image size (P x P pixels)
    C  region feature size (the last conv layer's channels), G = P / 2^K grid side after K
       conv blocks, R = G * G regions
    T  caption length (padded, BOS ... EOS), V vocabulary size
    E  embedding size, H decoder hidden size, L decoder layers
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.models.registry import register_model
from seqlab.models.seq2seq import (
    ATTENTIONS,
    Bridge,
    Decoder,
    DecoderState,
    RecurrentStepMixin,
    _check_choice,
)

__all__ = ["Captioner", "CaptionerOutput", "ImageEncoder", "ImageMemory"]


@dataclass
class CaptionerOutput:
    """Output of :meth:`Captioner.forward`.

    logits: (N, T-1, V) scores for caption positions 1..T-1.
    loss: scalar cross-entropy averaged over non-padding caption tokens.
    attentions: (N, T-1, R) attention weights over regions when asked for and the model
    attends, else None (reshape to (N, T-1, G, G) to see them on the image).
    """

    logits: torch.Tensor
    loss: torch.Tensor
    attentions: torch.Tensor | None = None


class ImageEncoder(nn.Module):
    r"""Convolution blocks -> region features (the attention's keys and values) and an image vector.

    Each of the K blocks is conv 3x3 (padding 1) -> ReLU -> max-pool 2x2, halving the image side:

    .. math::
        F = \mathrm{Block}_K(\dots\mathrm{Block}_1(x)), \qquad
        a_r = F_{:, r} + p_r \ (r = 1..R), \qquad v = \mathrm{LayerNorm}(W\,\mathrm{vec}(F) + b)

    The regions a_r are the grid's feature columns (Xu et al. 2015's annotation vectors) plus a
    learned embedding p_r of their grid cell: a convolution's features say what is in a cell but
    not where the cell is, and a caption has to say "on the left". The image vector v is a fully
    connected layer over the whole flattened grid, as classification CNNs end (the vector
    Show and Tell feeds its decoder); unlike mean pooling it keeps where things are. Layer
    normalisation (Ba et al. 2016) holds v at unit scale: the ReLU features grow as the CNN
    learns, and an unnormalised v soon saturates the tanh that turns it into the decoder's
    first state, which then passes no gradient back to the image.

    ======== =========================================
    images   (N, C_in, P, P) float, pixels in [0, 1]
    regions  (N, R, C)
    vector   (N, C)
    ======== =========================================
    """

    def __init__(
        self, image_size: int = 32, channels: tuple[int, ...] = (32, 64, 64), in_channels: int = 3
    ) -> None:
        super().__init__()
        if not channels or any(c < 1 for c in channels):
            raise ValueError(
                f"channels should be a non-empty list of positive sizes, got {channels}"
            )
        blocks = len(channels)
        if image_size < 2**blocks or image_size % 2**blocks:
            raise ValueError(
                f"image_size should be a multiple of 2^{blocks} = {2**blocks} ({blocks} conv "
                f"blocks each halve it), got {image_size}"
            )
        layers: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            previous = width
        self.convs = nn.Sequential(*layers)
        self.image_size = image_size
        self.in_channels = in_channels
        self.grid_size = image_size // 2**blocks
        self.output_size = channels[-1]
        regions = self.grid_size**2
        self.position = nn.Parameter(torch.zeros(regions, self.output_size))
        self.fc = nn.Linear(regions * self.output_size, self.output_size)
        self.norm = nn.LayerNorm(self.output_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He et al. (2015) initialisation of the conv layers (they feed ReLUs), zero biases.

        torch's default conv scale shrinks the signal at every ReLU layer, so on mostly black
        images the decoder first sees almost constant regions; He initialisation keeps the
        scale, and the generated captions are learned several times faster.
        """
        for module in self.convs:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.position, std=0.02)

    @property
    def num_regions(self) -> int:
        """R = G * G."""
        return self.grid_size**2

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        expected = (self.in_channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images should be (N, {', '.join(map(str, expected))}) (channels first, "
                f"resized to image_size={self.image_size}), got shape {tuple(images.shape)}"
            )
        features = self.convs(images)  # (N, C, G, G)
        vector = self.norm(self.fc(features.flatten(1)))  # (N, C * G * G) -> (N, C)
        regions = features.flatten(2).transpose(1, 2)  # (N, C, R) -> (N, R, C)
        return regions + self.position, vector


@dataclass
class ImageMemory:
    """What the decoder reads from an image batch (duck-types seq2seq's EncoderMemory).

    outputs: (N, R, C) region features; keys and values of the attention.
    vector: (N, C) the image vector that starts the decoder.
    mask: None (every region is real).
    projected_keys: the attention's key projection of `outputs`, computed once, or None.
    """

    outputs: torch.Tensor
    vector: torch.Tensor
    mask: torch.Tensor | None = None
    projected_keys: torch.Tensor | None = None

    def index_select(self, index: torch.Tensor) -> ImageMemory:
        """The memory of batch rows `index` (repeat a row to give each beam its copy)."""
        return ImageMemory(
            outputs=self.outputs.index_select(0, index),
            vector=self.vector.index_select(0, index),
            projected_keys=None
            if self.projected_keys is None
            else self.projected_keys.index_select(0, index),
        )


@register_model
class Captioner(RecurrentStepMixin, nn.Module):
    r"""CNN encoder + recurrent decoder (optionally attending over image regions), teacher-forced.

    .. math::
        a_{1..R}, v = \mathrm{CNN}(x), \qquad s_0 = \tanh(W_s v + b_s), \qquad
        p(y_1..y_T \mid x) = \prod_t p(y_t \mid y_{<t}, a_{1..R}, s_0)

    with loss the mean cross-entropy over non-padding caption tokens. The decoder is
    seq2seq's :class:`~seqlab.models.seq2seq.Decoder` with the regions as its annotations:
    ``attention="none"`` (Show and Tell: the image enters through s_0 alone), ``"bahdanau"``
    (additive attention before the step, as Show, Attend and Tell), ``"dot"`` / ``"general"``
    (Luong, after the step; ``input_feeding`` optional). For an LSTM, c_0 gets its own
    projection of v, like h_0.

    Step API (see :class:`seqlab.decode.greedy.StepModel`): ``encode(images, lengths=None)``
    (lengths are ignored; the decoders pass their source lengths through), ``init_state``,
    ``step``, ``reorder_state``, ``reorder_memory``.

    ============= ==============================================================
    images        (N, C_in, P, P) float in [0, 1]
    tgt           (N, T) long: BOS y_1 .. y_m EOS, then `pad_id`
    logits        (N, T-1, V)
    attentions    (N, T-1, R)
    prev_tokens   (N,) long; log_probs (N, V); attention (N, R)
    ============= ==============================================================
    """

    def __init__(
        self,
        vocab_size: int,
        image_size: int = 32,
        channels: tuple[int, ...] = (32, 64, 64),
        in_channels: int = 3,
        embedding_dim: int = 64,
        hidden_size: int = 128,
        cell: str = "gru",
        num_layers: int = 1,
        dropout: float = 0.0,
        nonlinearity: str = "tanh",
        init: str = "default",
        peephole: bool = False,
        coupled: bool = False,
        reset_after: bool = True,
        attention: str = "bahdanau",
        attention_size: int | None = None,
        input_feeding: bool = False,
        label_smoothing: float = 0.0,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        _check_choice("attention", attention, ATTENTIONS)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"label_smoothing should be a number in range [0, 1), got {label_smoothing!r}"
            )
        self.encoder = ImageEncoder(image_size, tuple(channels), in_channels)
        feature_size = self.encoder.output_size
        if attention == "dot" and hidden_size != feature_size:
            raise ValueError(
                f"attention='dot' needs hidden_size equal to the region feature size (the last "
                f"of channels), got hidden_size={hidden_size} and channels={list(channels)}; "
                f"use attention='general' or 'bahdanau' for different sizes"
            )
        # The image vector plays the role of a one-layer, one-direction encoder's final state.
        self.bridge = Bridge(
            "projection",
            cell,
            encoder_hidden_size=feature_size,
            encoder_layers=1,
            bidirectional=False,
            merge_mode="concat",
            decoder_hidden_size=hidden_size,
            decoder_layers=num_layers,
        )
        self.decoder = Decoder(
            vocab_size,
            embedding_dim,
            hidden_size,
            encoder_size=feature_size,
            cell=cell,
            num_layers=num_layers,
            dropout=dropout,
            attention=attention,
            attention_size=attention_size,
            input_feeding=input_feeding,
            padding_idx=pad_id,
            nonlinearity=nonlinearity,
            init=init,
            peephole=peephole,
            coupled=coupled,
            reset_after=reset_after,
        )
        self.is_lstm = cell == "lstm"
        self.label_smoothing = label_smoothing
        self.pad_id = pad_id

    def encode(self, images: torch.Tensor, lengths: torch.Tensor | None = None) -> ImageMemory:
        """Run the CNN: images (N, C_in, P, P) -> :class:`ImageMemory`. `lengths` is ignored."""
        regions, vector = self.encoder(images)  # (N, R, C), (N, C)
        return self.decoder.prepare(ImageMemory(regions, vector))

    def init_state(self, memory: ImageMemory) -> DecoderState:
        """The decoder's first state, s_0 = tanh(W_s v + b_s) (and c_0 likewise for an LSTM)."""
        vector = memory.vector.unsqueeze(0)  # (1, N, C), a one-layer "final state"
        hidden = self.bridge((vector, vector) if self.is_lstm else vector)  # (L, N, H)
        return self.decoder.initial_state(hidden, memory.vector.size(0))

    def forward(
        self, images: torch.Tensor, tgt: torch.Tensor, return_attentions: bool = False
    ) -> CaptionerOutput:
        if tgt.dim() != 2 or tgt.size(1) < 2:
            raise ValueError(
                f"tgt should be (N, T) with T >= 2 (BOS ... EOS), got shape {tuple(tgt.shape)}"
            )
        if tgt.size(0) != images.size(0):
            raise ValueError(
                f"need one caption per image, got {images.size(0)} images and {tgt.size(0)} "
                f"captions (repeat an image's row for each of its captions)"
            )
        memory = self.encode(images)
        state = self.init_state(memory)
        inputs, targets = tgt[:, :-1], tgt[:, 1:]  # (N, T-1) each
        logits, attentions = self.decoder(inputs, state, memory)  # (N, T-1, V), (N, T-1, R)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)),  # (N * (T-1), V)
            targets.reshape(-1),
            ignore_index=self.pad_id,
            label_smoothing=self.label_smoothing,
        )
        return CaptionerOutput(
            logits=logits, loss=loss, attentions=attentions if return_attentions else None
        )
