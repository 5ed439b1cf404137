"""Video captioning: per-frame CNN features, an encoder over time, a decoder attending to frames.

The file reads bottom-up: :class:`VideoEncoder` (the captioner's
:class:`~seqlab.models.captioner.ImageEncoder` on every frame, then a recurrent layer or a
Transformer encoder over the sequence of frame vectors), then :class:`VideoCaptioner`, which
bridges the clip's summary to the decoder's first state and reuses the sequence-to-sequence
:class:`~seqlab.models.seq2seq.Decoder`, attending over the encoded frames as a translator
attends over source words. It offers the step API, so :func:`seqlab.decode.greedy_decode` and
:func:`seqlab.decode.beam_search` caption clips unchanged (the "source" is the clip batch and
its lengths are the clips' frame counts; give them ``max_length``).

Papers: Venugopalan et al. (2015), "Sequence to Sequence -- Video to Text" (S2VT: CNN frame
features read by an LSTM that then writes the sentence); Yao et al. (2015), "Describing Videos
by Exploiting Temporal Structure" (soft attention over the frames while decoding); Vaswani et
al. (2017) for the Transformer encoder option; Simonyan & Zisserman (2014), "Two-Stream
Convolutional Networks" (motion given to the CNN as an input, there optical flow, here frame
differences). ``memory="regions"`` runs the encoder over time at every grid cell and attends
over the cells, the spatio-temporal form of Show, Attend and Tell's regions.

Shapes (used in every docstring of this file):

    N  batch size (clips, or clips x beams while searching)
    F  frames (padded; each clip has `lengths[i]` real frames), C_in image channels (3),
       P frame size (P x P pixels), C frame feature size (the last conv layer's channels)
    He encoded frame size (encoder_hidden_size; x 2 for a bidirectional concat encoder)
    R  grid cells of a frame (the ImageEncoder's regions), for memory="regions"
    T  caption length (padded, BOS ... EOS), V vocabulary size
    E  embedding size, H decoder hidden size, L layers
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.models.captioner import ImageEncoder
from seqlab.models.recurrent import CELLS, recurrent_layer
from seqlab.models.registry import register_model
from seqlab.models.seq2seq import (
    ATTENTIONS,
    Bridge,
    Decoder,
    DecoderState,
    EncoderMemory,
    RecurrentStepMixin,
    Seq2SeqOutput,
    _check_choice,
    _merge,
)
from seqlab.nn.positional import SinusoidalPositionalEncoding
from seqlab.nn.transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = ["MEMORIES", "TEMPORAL_ENCODERS", "VideoCaptioner", "VideoEncoder"]

# What reads the frame vectors in order: a recurrent cell kind, or a Transformer encoder.
TEMPORAL_ENCODERS = (*CELLS, "transformer")
# What the decoder attends over: the encoded frames, or each grid cell's encoded history.
MEMORIES = ("frames", "regions")


class VideoEncoder(nn.Module):
    r"""Frame features from a CNN, then an encoder over time: annotations of the frames.

    .. math::
        v_f = \mathrm{CNN}([x_f;\ x_f - x_{f-1}]) \ (f = 1..F,\ x_0 = x_1), \qquad
        o_{1..F}, h_n = \mathrm{RNN}(v_{1..F}) \quad\text{or}\quad
        o_{1..F} = \mathrm{Transformer}(W v_{1..F} + p_{1..F}),\ h_n = \tfrac{1}{F}\sum_f o_f

    v_f is the :class:`~seqlab.models.captioner.ImageEncoder`'s image vector (a fully connected
    layer over the whole grid, so it keeps where things are: a motion is a change of place from
    frame to frame). With ``frame_differences`` (the default) the CNN also sees the difference
    from the previous frame as extra channels, a cheap stand-in for the optical flow that
    two-stream networks feed (Simonyan & Zisserman 2014): a shape that moves by one pixel lights
    its leading edge up and its trailing edge down, so the sign of the change shows the
    direction in a single frame, where the plain frame vectors would have to agree on
    positions to the pixel. ``kind`` picks the temporal encoder: a recurrent layer (``"gru"``,
    ``"lstm"``, ``"rnn"``, ``"mingru"``, ``"minlstm"``; ``bidirectional`` optional), whose final
    state summarises the clip, or a pre-norm ``"transformer"`` encoder with sinusoidal frame
    positions and a final LayerNorm, summarised by the mean of its outputs over real frames.
    With ``memory="regions"`` the same temporal encoder runs over time at each of the R grid
    cells instead (input: the cell's region features a_{f,r}, frame after frame), and the
    encoder returns each cell's summary (the top layer's final state, directions merged; the
    Transformer's mean over real frames): what happened *there*, the spatio-temporal
    counterpart of the image captioner's regions. The clip's state h_n is then the mean of the
    cells' final states.

    ``cell_options`` are a recurrent encoder's variant options (``nonlinearity``, ``init``,
    ``peephole``, ``coupled``, ``reset_after``), passed to
    :func:`~seqlab.models.recurrent_layer`, which checks them.

    Padding frames never count: the CNN runs on real frames only, the recurrent layer stops at
    each clip's length, the Transformer masks padded keys, and outputs past a length are zero.
    So a clip's encoding does not depend on the padding or on the other clips of its batch.

    ============= ===============================================================
    clips         (N, F, C_in, P, P) float, pixels in [0, 1], right padded
    CNN input     (N, F, 2 C_in, P, P) with frame differences, else as clips
    lengths       (N,) long, frames per clip
    outputs       (N, F, He), zero past each length; memory="regions": (N, R, He)
    h_n           (L * D, N, encoder_hidden_size), LSTM (h_n, c_n)
    h_n (Transf.) (1, N, He), the mean of the real frames' outputs
    ============= ===============================================================
    """

    def __init__(
        self,
        kind: str = "gru",
        image_size: int = 32,
        channels: tuple[int, ...] = (32, 64, 64),
        in_channels: int = 3,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        merge_mode: str = "concat",
        nhead: int = 4,
        dim_feedforward: int | None = None,
        max_frames: int = 256,
        frame_differences: bool = True,
        memory: str = "frames",
        **cell_options,
    ) -> None:
        super().__init__()
        _check_choice("encoder", kind, TEMPORAL_ENCODERS)
        _check_choice("memory", memory, MEMORIES)
        if kind == "transformer" and bidirectional:
            raise ValueError(
                "bidirectional=True applies to a recurrent encoder; a Transformer encoder "
                "already sees every frame from every frame"
            )
        if kind == "transformer" and cell_options:
            raise ValueError(
                f"{', '.join(sorted(cell_options))} are recurrent cell options; a Transformer "
                f"encoder takes none"
            )
        if kind == "transformer" and hidden_size % nhead:
            raise ValueError(
                f"a Transformer encoder needs hidden_size divisible by nhead, got hidden_size="
                f"{hidden_size} and nhead={nhead}"
            )
        self.in_channels = in_channels
        self.memory = memory
        self.frame_differences = frame_differences
        frame_channels = 2 * in_channels if frame_differences else in_channels
        self.frames = ImageEncoder(image_size, tuple(channels), frame_channels)
        feature_size = self.frames.output_size
        self.kind = kind
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.merge_mode = merge_mode
        if kind == "transformer":
            self.input_projection = nn.Linear(feature_size, hidden_size)
            self.positions = SinusoidalPositionalEncoding(hidden_size, max_length=max_frames)
            layer = TransformerEncoderLayer(
                hidden_size,
                nhead,
                dim_feedforward=dim_feedforward or 4 * hidden_size,
                dropout=dropout,
                batch_first=True,
                norm_first=True,
            )
            self.temporal = TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(hidden_size))
            self.output_size = hidden_size
        else:
            self.temporal = recurrent_layer(
                kind,
                feature_size,
                hidden_size,
                num_layers=num_layers,
                dropout=dropout,
                bidirectional=bidirectional,
                merge_mode=merge_mode,
                **cell_options,
            )
            self.output_size = self.temporal.output_size

    def _cnn(self, clips: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The CNN on every real frame: regions (N, F, R, C) and vectors (N, F, C), zero at
        padding frames (which the CNN never sees)."""
        expected = (self.in_channels, self.frames.image_size, self.frames.image_size)
        if clips.dim() != 5 or tuple(clips.shape[2:]) != expected:
            raise ValueError(
                f"clips should be (N, F, {', '.join(map(str, expected))}) (frames channels first, "
                f"resized to image_size={self.frames.image_size}), got shape {tuple(clips.shape)}"
            )
        if self.frame_differences:
            previous = torch.cat([clips[:, :1], clips[:, :-1]], dim=1)  # x_{f-1}; x_0 for f = 1
            clips = torch.cat([clips, clips - previous], dim=2)  # (N, F, 2 C_in, P, P)
        regions, vectors = self.frames(clips[mask])  # (sum of lengths, R, C), (sum of lengths, C)
        region_features = regions.new_zeros(*mask.shape, *regions.shape[1:])  # (N, F, R, C)
        region_features[mask] = regions
        features = vectors.new_zeros(*mask.shape, vectors.size(-1))  # (N, F, C)
        features[mask] = vectors
        return region_features, features

    def frame_features(self, clips: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The CNN's vector of every real frame: clips (N, F, C_in, P, P) -> (N, F, C), zero
        at padding frames."""
        return self._cnn(clips, mask)[1]

    def _over_time(self, x: torch.Tensor, lengths: torch.Tensor):
        """The temporal encoder on sequences x (B, F, C) of `lengths` (B,): outputs (B, F, He)
        and the final state (recurrent) or the mean over real steps, (1, B, He)."""
        if self.kind != "transformer":
            return self.temporal(x, lengths=lengths)  # (B, F, He), h_n
        mask = torch.arange(x.size(1), device=x.device) < lengths[:, None]  # (B, F)
        x = self.positions(self.input_projection(x))  # (B, F, He)
        outputs, _ = self.temporal(x, src_key_padding_mask=~mask)  # (B, F, He)
        outputs = outputs * mask[..., None]  # zero past each length
        pooled = outputs.sum(1) / lengths[:, None].to(outputs.dtype)  # (B, He)
        return outputs, pooled.unsqueeze(0)  # (B, F, He), (1, B, He)

    def _top_summary(self, final_state) -> torch.Tensor:
        """(L * D, B, h) final states -> (B, He): the top layer's, directions merged."""
        h = final_state[0] if isinstance(final_state, tuple) else final_state
        if self.kind == "transformer":
            return h[-1]  # (B, He)
        directions = 2 if self.bidirectional else 1
        top = h.view(-1, directions, h.size(1), h.size(2))[-1]  # (D, B, h)
        return top[0] if directions == 1 else _merge(top[0], top[1], self.merge_mode)

    def forward(self, clips: torch.Tensor, lengths: torch.Tensor):
        mask = torch.arange(clips.size(1), device=clips.device) < lengths[:, None]  # (N, F)
        regions, features = self._cnn(clips, mask)  # (N, F, R, C), (N, F, C)
        if self.memory == "frames":
            return self._over_time(features, lengths)  # (N, F, He), h_n
        # Every grid cell's history: the same encoder runs over time at each of the R cells.
        batch, frames, cells, size = regions.shape
        histories = regions.transpose(1, 2).reshape(batch * cells, frames, size)  # (N R, F, C)
        _, final_state = self._over_time(histories, lengths.repeat_interleave(cells))
        summaries = self._top_summary(final_state).view(batch, cells, -1)  # (N, R, He)

        def clip_mean(state: torch.Tensor) -> torch.Tensor:
            # (L * D, N R, h) -> (L * D, N, h): the clip's state is its cells' mean.
            return state.view(state.size(0), batch, cells, -1).mean(2)

        if isinstance(final_state, tuple):
            return summaries, tuple(clip_mean(part) for part in final_state)
        return summaries, clip_mean(final_state)


@register_model
class VideoCaptioner(RecurrentStepMixin, nn.Module):
    r"""Frame CNN + temporal encoder + recurrent decoder attending over frames, teacher-forced.

    .. math::
        o_{1..F}, h_n = \mathrm{VideoEncoder}(x_{1..F}), \qquad s_0 = \tanh(W_s h_n + b_s),
        \qquad p(y_1..y_T \mid x) = \prod_t p(y_t \mid y_{<t}, o_{1..F}, s_0)

    with loss the mean cross-entropy over non-padding caption tokens. The decoder is seq2seq's
    :class:`~seqlab.models.seq2seq.Decoder` with the encoded frames o_f as its annotations
    (``attention`` ``"bahdanau"``, ``"dot"``, ``"general"`` or ``"none"``) and the bridge is
    seq2seq's :class:`~seqlab.models.seq2seq.Bridge` (``"projection"``) from the encoder's
    summary h_n. ``encoder`` names the temporal encoder (see :class:`VideoEncoder`); ``cell``
    is the decoder's, and also the encoder's when that is recurrent and ``encoder`` is None.
    ``memory="regions"`` has the decoder attend over the R grid cells' encoded histories
    instead of the F encoded frames (then attentions are (N, T-1, R)).

    Step API (see :class:`seqlab.decode.greedy.StepModel`): ``encode(clips, lengths)``,
    ``init_state``, ``step``, ``reorder_state``, ``reorder_memory``.

    ============= ==============================================================
    clips         (N, F, C_in, P, P) float in [0, 1], right padded
    lengths       (N,) long, frames per clip
    tgt           (N, T) long: BOS y_1 .. y_m EOS, then `pad_id`
    logits        (N, T-1, V)
    attentions    (N, T-1, F), zero at padding frames; memory="regions": (N, T-1, R)
    prev_tokens   (N,) long; log_probs (N, V); attention (N, F) or (N, R)
    ============= ==============================================================
    """

    def __init__(
        self,
        vocab_size: int,
        image_size: int = 32,
        channels: tuple[int, ...] = (32, 64, 64),
        in_channels: int = 3,
        encoder: str | None = None,
        encoder_hidden_size: int | None = None,
        encoder_layers: int = 1,
        bidirectional: bool = False,
        merge_mode: str = "concat",
        nhead: int = 4,
        dim_feedforward: int | None = None,
        max_frames: int = 256,
        frame_differences: bool = True,
        memory: str = "frames",
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
        kind = encoder or cell
        _check_choice("encoder", kind, TEMPORAL_ENCODERS)
        # The cell's variant options (see seqlab.models.recurrent_layer), for every recurrent part.
        cell_options = {
            "nonlinearity": nonlinearity,
            "init": init,
            "peephole": peephole,
            "coupled": coupled,
            "reset_after": reset_after,
        }
        encoder_hidden_size = encoder_hidden_size or hidden_size
        if kind not in ("transformer", cell):
            # The bridge turns a recurrent final state into the decoder's; an LSTM's (h, c)
            # cannot start a GRU, so the two recurrent parts use the same cell.
            raise ValueError(
                f"a recurrent encoder uses the decoder's cell, got encoder={kind!r} and "
                f"cell={cell!r}; set encoder={cell!r} (or 'transformer')"
            )
        self.encoder = VideoEncoder(
            kind,
            image_size=image_size,
            channels=tuple(channels),
            in_channels=in_channels,
            hidden_size=encoder_hidden_size,
            num_layers=encoder_layers,
            dropout=dropout,
            bidirectional=bidirectional,
            merge_mode=merge_mode,
            nhead=nhead,
            dim_feedforward=dim_feedforward,
            max_frames=max_frames,
            frame_differences=frame_differences,
            memory=memory,
            **(cell_options if kind != "transformer" else {}),
        )
        recurrent = kind != "transformer"
        # A Transformer's summary plays the role of a one-layer, one-direction final state.
        self.bridge = Bridge(
            "projection",
            cell,
            encoder_hidden_size=encoder_hidden_size,
            encoder_layers=encoder_layers if recurrent else 1,
            bidirectional=bidirectional,
            merge_mode=merge_mode,
            decoder_hidden_size=hidden_size,
            decoder_layers=num_layers,
        )
        self.decoder = Decoder(
            vocab_size,
            embedding_dim,
            hidden_size,
            encoder_size=self.encoder.output_size,
            cell=cell,
            num_layers=num_layers,
            dropout=dropout,
            attention=attention,
            attention_size=attention_size,
            input_feeding=input_feeding,
            padding_idx=pad_id,
            **cell_options,
        )
        self.is_lstm = cell == "lstm"
        self.recurrent_encoder = recurrent
        self.label_smoothing = label_smoothing
        self.pad_id = pad_id

    def encode(self, clips: torch.Tensor, lengths: torch.Tensor) -> EncoderMemory:
        """Run the encoder: clips (N, F, C_in, P, P), lengths (N,) -> :class:`EncoderMemory`."""
        lengths = lengths.to(device=clips.device, dtype=torch.long)
        if lengths.shape != (clips.size(0),) or int(lengths.min()) < 1 or int(
            lengths.max()
        ) > clips.size(1):
            raise ValueError(
                f"lengths should hold one frame count in [1, {clips.size(1)}] (the padded clip "
                f"length) per clip, got {lengths.tolist()} for {clips.size(0)} clips"
            )
        outputs, final_state = self.encoder(clips, lengths)  # (N, F, He), h_n
        if not self.recurrent_encoder and self.is_lstm:
            final_state = (final_state, final_state)  # c_0 gets its own projection of h_n
        if self.encoder.memory == "regions":
            lengths = torch.full_like(lengths, outputs.size(1))  # R cells, all real
        mask = torch.arange(outputs.size(1), device=clips.device) < lengths[:, None]  # (N, F|R)
        return self.decoder.prepare(EncoderMemory(outputs, mask, lengths, final_state))

    def init_state(self, memory: EncoderMemory) -> DecoderState:
        """The decoder's first state, s_0 = tanh(W_s h_n + b_s) (and c_0 likewise for an LSTM)."""
        return self.decoder.initial_state(self.bridge(memory.final_state), memory.outputs.size(0))

    def forward(
        self,
        clips: torch.Tensor,
        lengths: torch.Tensor,
        tgt: torch.Tensor,
        return_attentions: bool = False,
    ) -> Seq2SeqOutput:
        if tgt.dim() != 2 or tgt.size(1) < 2:
            raise ValueError(
                f"tgt should be (N, T) with T >= 2 (BOS ... EOS), got shape {tuple(tgt.shape)}"
            )
        if tgt.size(0) != clips.size(0):
            raise ValueError(
                f"need one caption per clip, got {clips.size(0)} clips and {tgt.size(0)} "
                f"captions (repeat a clip's row for each of its captions)"
            )
        memory = self.encode(clips, lengths)
        state = self.init_state(memory)
        inputs, targets = tgt[:, :-1], tgt[:, 1:]  # (N, T-1) each
        logits, attentions = self.decoder(inputs, state, memory)  # (N, T-1, V), (N, T-1, F)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)),  # (N * (T-1), V)
            targets.reshape(-1),
            ignore_index=self.pad_id,
            label_smoothing=self.label_smoothing,
        )
        return Seq2SeqOutput(
            logits=logits, loss=loss, attentions=attentions if return_attentions else None
        )
