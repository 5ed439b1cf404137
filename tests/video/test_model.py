"""VideoCaptioner: frame features by hand, padding and batch companions change nothing, the
Transformer summary is the mean over real frames, teacher forcing equals stepping, decoders."""

import pytest
import torch

from seqlab.decode import beam_search, greedy_decode
from seqlab.models.registry import build_model, model_spec
from seqlab.models.video import VideoCaptioner, VideoEncoder

PAD, BOS, EOS = 0, 2, 3
V = 11

ENCODERS = [
    {"encoder": "gru", "cell": "gru"},
    {"encoder": "lstm", "cell": "lstm", "bidirectional": True, "encoder_layers": 2},
    {"encoder": "transformer", "cell": "gru", "encoder_layers": 2, "nhead": 2},
    {"encoder": "transformer", "cell": "lstm", "nhead": 2},
    {"encoder": "gru", "cell": "gru", "memory": "regions", "bidirectional": True},
    {"encoder": "transformer", "cell": "gru", "nhead": 2, "memory": "regions"},
]


def _model(seed=0, **options):
    torch.manual_seed(seed)
    options = {
        "image_size": 16,
        "channels": (4, 6),
        "embedding_dim": 5,
        "hidden_size": 6,
        "encoder_hidden_size": 4,
        **options,
    }
    return VideoCaptioner(V, **options).eval()


def _clips(frames=5, batch=3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frames, 3, 16, 16, generator=generator)


def _captions(batch=3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([6, 3, 5, 4][:batch])  # BOS + words + EOS
    tgt = torch.randint(4, V, (batch, 6), generator=generator)
    tgt[:, 0] = BOS
    tgt[torch.arange(batch), lengths - 1] = EOS
    tgt[torch.arange(6)[None, :] >= lengths[:, None]] = PAD
    return tgt


def test_frame_features_are_the_image_encoders_vector_of_each_real_frame():
    torch.manual_seed(0)
    encoder = VideoEncoder("gru", image_size=16, channels=(4, 6), hidden_size=5)
    clips, lengths = _clips(), torch.tensor([5, 2, 4])
    mask = torch.arange(5) < lengths[:, None]
    features = encoder.frame_features(clips, mask)  # (N, F, C)
    for n in range(3):
        for f in range(5):
            if f < lengths[n]:
                # The CNN reads the frame and its difference from the previous one (none at f = 0).
                previous = clips[n, max(f - 1, 0)]
                frame = torch.cat([clips[n, f], clips[n, f] - previous])  # (6, P, P)
                _, vector = encoder.frames(frame[None])  # (1, C)
                torch.testing.assert_close(features[n, f], vector[0])
            else:
                assert bool((features[n, f] == 0).all())
    plain = VideoEncoder("gru", image_size=16, channels=(4, 6), frame_differences=False)
    _, vector = plain.frames(clips[1, 1:2])
    torch.testing.assert_close(plain.frame_features(clips, mask)[1, 1], vector[0])
    # The recurrent encoder reads them in order: its outputs are the GRU's, stopped at lengths.
    outputs, h_n = encoder(clips, lengths)
    gru = torch.nn.GRU(6, 5, batch_first=True)
    gru.load_state_dict(encoder.temporal.state_dict())
    for n in range(3):
        expected, h = gru(features[n : n + 1, : lengths[n]])
        torch.testing.assert_close(outputs[n, : lengths[n]], expected[0])
        torch.testing.assert_close(h_n[:, n], h[:, 0])
        assert bool((outputs[n, lengths[n] :] == 0).all())


def test_region_memory_is_each_cells_history_through_the_encoder():
    torch.manual_seed(0)
    encoder = VideoEncoder(
        "gru", image_size=16, channels=(4, 6), hidden_size=5, bidirectional=True,
        merge_mode="sum", memory="regions",
    )
    clips, lengths = _clips(), torch.tensor([5, 2, 4])
    summaries, h_n = encoder(clips, lengths)
    assert summaries.shape == (3, 16, 5) and h_n.shape == (2, 3, 5)
    gru = torch.nn.GRU(6, 5, batch_first=True, bidirectional=True)
    gru.load_state_dict(encoder.temporal.state_dict())
    for n in range(3):
        length = int(lengths[n])
        previous = clips[n, [0] + list(range(length - 1))]  # frame f - 1 (frame 0 for f = 0)
        frames = torch.cat([clips[n, :length], clips[n, :length] - previous], dim=1)
        regions, _ = encoder.frames(frames)  # (F, R, C): the CNN's regions of each frame
        _, h = gru(regions.transpose(0, 1))  # each of the 16 cells' history, (2, R, 5)
        torch.testing.assert_close(summaries[n], h[0] + h[1])  # directions summed
        torch.testing.assert_close(h_n[:, n], h.mean(1))  # the clip's state: the cells' mean


def test_transformer_summary_is_the_mean_of_the_real_frames_outputs():
    torch.manual_seed(0)
    encoder = VideoEncoder("transformer", image_size=16, channels=(4, 6), hidden_size=4, nhead=2)
    encoder.eval()
    clips, lengths = _clips(), torch.tensor([5, 2, 4])
    outputs, pooled = encoder(clips, lengths)
    assert pooled.shape == (1, 3, 4)
    for n in range(3):
        length = int(lengths[n])
        torch.testing.assert_close(pooled[0, n], outputs[n, :length].sum(0) / length)
        assert bool((outputs[n, length:] == 0).all())


@pytest.mark.parametrize("options", ENCODERS, ids=lambda o: "-".join(map(str, o.values())))
def test_a_clip_encodes_the_same_alone_padded_or_with_companions(options):
    model = _model(**options)
    clips, lengths = _clips(frames=5), torch.tensor([5, 2, 4])
    tgt = _captions()
    with torch.no_grad():
        together = model(clips, lengths, tgt, return_attentions=True)
        memory = model.encode(clips, lengths)
        for n in range(3):
            length = int(lengths[n])
            # Alone, with no padding at all; then padded with 3 extra frames of noise.
            alone = model.encode(clips[n : n + 1, :length], lengths[n : n + 1])
            noise = torch.rand(1, 3, 3, 16, 16)
            padded_clip = torch.cat([clips[n : n + 1, :length], noise], dim=1)
            padded = model.encode(padded_clip, lengths[n : n + 1])
            real = alone.outputs.size(1)  # the clip's frames, or the R cells
            close = {"atol": 1e-5, "rtol": 1e-5}
            torch.testing.assert_close(memory.outputs[n, :real], alone.outputs[0], **close)
            torch.testing.assert_close(padded.outputs[0, :real], alone.outputs[0], **close)
            one = model(
                clips[n : n + 1, :length], lengths[n : n + 1], tgt[n : n + 1], return_attentions=True
            )
            tokens = tgt[n, 1:] != PAD
            torch.testing.assert_close(together.logits[n, tokens], one.logits[0, tokens], **close)
            if options.get("memory") == "regions":
                # The decoder reads the 4 x 4 cells of the 16-pixel frames, every one real.
                torch.testing.assert_close(together.attentions[n], one.attentions[0], **close)
                continue
            # Attention never reads a padding frame.
            assert bool((together.attentions[n, :, length:] == 0).all())
            torch.testing.assert_close(together.attentions[n, :, :length], one.attentions[0], **close)


@pytest.mark.parametrize("options", ENCODERS, ids=lambda o: "-".join(map(str, o.values())))
def test_teacher_forced_logits_equal_step_by_step(options):
    model = _model(**options)
    clips, lengths, tgt = _clips(), torch.tensor([5, 2, 4]), _captions()
    with torch.no_grad():
        output = model(clips, lengths, tgt, return_attentions=True)
        memory = model.encode(clips, lengths)
        state = model.init_state(memory)
        log_probs = []
        for t in range(tgt.size(1) - 1):
            step_log_probs, state, _ = model.step(tgt[:, t], state, memory)
            log_probs.append(step_log_probs)
    torch.testing.assert_close(
        output.logits.log_softmax(-1), torch.stack(log_probs, 1), rtol=1e-5, atol=1e-5
    )
    # The loss is the mean cross-entropy over real (non-padding) caption tokens.
    targets = tgt[:, 1:]
    picked = output.logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(output.loss, -picked[targets != PAD].mean())


def test_first_state_is_tanh_of_the_projected_summary():
    model = _model(encoder="transformer", cell="lstm", nhead=2)
    clips, lengths = _clips(), torch.tensor([5, 2, 4])
    with torch.no_grad():
        memory = model.encode(clips, lengths)
        h, c = model.init_state(memory).hidden
        summary = memory.outputs.sum(1) / lengths[:, None]  # (N, He), mean of real frames
    torch.testing.assert_close(h[0], torch.tanh(model.bridge.proj_h(summary)))
    torch.testing.assert_close(c[0], torch.tanh(model.bridge.proj_c(summary)))


def test_searches_run_unchanged_and_a_beam_of_one_is_greedy():
    model = _model(encoder="transformer", nhead=2)
    clips, lengths = _clips(), torch.tensor([5, 2, 4])
    greedy = greedy_decode(model, clips, lengths, BOS, EOS, max_length=7)
    beams = beam_search(
        model, clips, lengths, BOS, EOS, beam_size=1, max_length=7, length_penalty=0.0
    )
    assert [tokens for tokens, _ in greedy] == [nbest[0][0] for nbest in beams]
    for (_, score), nbest in zip(greedy, beams):
        assert score == pytest.approx(nbest[0][1], abs=1e-4)


def test_spec_rebuilds_the_model():
    model = _model(encoder="lstm", cell="lstm", bidirectional=True)
    rebuilt = build_model(model_spec(model))
    rebuilt.load_state_dict(model.state_dict())
    clips, lengths, tgt = _clips(), torch.tensor([5, 2, 4]), _captions()
    with torch.no_grad():
        torch.testing.assert_close(
            rebuilt.eval()(clips, lengths, tgt).logits, model(clips, lengths, tgt).logits
        )


def test_bad_arguments_say_what_to_change():
    with pytest.raises(ValueError, match="set encoder='gru'"):
        _model(encoder="lstm", cell="gru")
    with pytest.raises(ValueError, match="bidirectional=True applies to a recurrent encoder"):
        _model(encoder="transformer", bidirectional=True)
    with pytest.raises(ValueError, match="divisible by nhead"):
        _model(encoder="transformer", nhead=3)
    with pytest.raises(ValueError, match="encoder should be one of"):
        _model(encoder="cnn")
    model = _model()
    with pytest.raises(ValueError, match=r"clips should be \(N, F, 3, 16, 16\)"):
        model.encode(torch.rand(2, 3, 16, 16), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match=r"one frame count in \[1, 5\]"):
        model.encode(_clips(), torch.tensor([5, 6, 1]))
