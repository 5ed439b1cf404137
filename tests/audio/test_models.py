"""Speech models: frame stacking, padding invariance, the step API, CTC, rebuilding from a spec."""

import pytest
import torch

from seqlab.decode import beam_search, greedy_decode
from seqlab.models import ListenAttendSpell, SpeechTransformer, build_model, model_spec
from seqlab.models.speech import stack_frames

VOCAB, MELS = 12, 8


def _batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([37, 20, 9])
    features = torch.randn(3, 37, MELS, generator=generator)
    features = features * (torch.arange(37)[None, :, None] < lengths[:, None, None])
    tgt = torch.tensor([[2, 5, 6, 7, 8, 3], [2, 9, 10, 3, 0, 0], [2, 11, 3, 0, 0, 0]])
    return features, lengths, tgt


def _models():
    torch.manual_seed(0)
    las = ListenAttendSpell(VOCAB, n_mels=MELS, frame_stack=3, encoder_hidden_size=6,
                            encoder_layers=3, embedding_dim=5, hidden_size=7, ctc_weight=0.3)
    transformer = SpeechTransformer(VOCAB, n_mels=MELS, d_model=16, nhead=2, num_encoder_layers=2,
                                    num_decoder_layers=2, conv_strides=(2, 2), ctc_weight=0.3)
    return [las.eval(), transformer.eval()]


def test_stack_frames_by_hand():
    features = torch.arange(1, 11, dtype=torch.float32).view(1, 5, 2)  # frames [1,2] .. [9,10]
    stacked, lengths = stack_frames(features, torch.tensor([4]), 2)
    # Frame 5 lies past the length: zeroed before stacking; 5 frames -> 3 (padded with a zero frame).
    assert stacked.tolist() == [[[1, 2, 3, 4], [5, 6, 7, 8], [0, 0, 0, 0]]]
    assert lengths.tolist() == [2]
    assert stack_frames(features, torch.tensor([5]), 3)[1].tolist() == [2]


@pytest.mark.parametrize("index", [0, 1])
def test_padded_batch_equals_each_utterance_alone(index):
    model = _models()[index]
    features, lengths, tgt = _batch()
    with torch.no_grad():
        memory = model.encode(features, lengths)
        batch_logits = model(features, lengths, tgt).logits
        for n in range(3):
            alone = model.encode(features[n : n + 1, : lengths[n]], lengths[n : n + 1])
            steps = int(alone.lengths[0])
            assert int(memory.lengths[n]) == steps
            torch.testing.assert_close(memory.outputs[n, :steps], alone.outputs[0], atol=1e-5, rtol=1e-4)
            real = int((tgt[n] != 0).sum()) - 1
            single = model(features[n : n + 1, : lengths[n]], lengths[n : n + 1], tgt[n : n + 1, : real + 1])
            torch.testing.assert_close(batch_logits[n, :real], single.logits[0], atol=1e-5, rtol=1e-4)


def test_encoder_lengths_follow_the_downsampling():
    las, transformer = _models()
    _, lengths, _ = _batch()
    features = torch.randn(3, 37, MELS)
    # LAS: ceil(ceil(ceil(L / 3) / 2) / 2); two stride-2 convolutions: ceil(ceil(L / 2) / 2).
    assert las.encode(features, lengths).lengths.tolist() == [4, 2, 1]
    assert transformer.encode(features, lengths).lengths.tolist() == [10, 5, 3]


@pytest.mark.parametrize("index", [0, 1])
def test_loss_mixes_cross_entropy_and_ctc(index):
    model = _models()[index]
    features, lengths, tgt = _batch()
    out = model(features, lengths, tgt)
    logits, targets = out.logits, tgt[:, 1:]
    cross_entropy = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=0)
    torch.testing.assert_close(out.loss, 0.7 * cross_entropy + 0.3 * out.ctc_loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("index", [0, 1])
def test_greedy_is_beam_one_and_steps_match_teacher_forcing(index):
    model = _models()[index]
    features, lengths, tgt = _batch()
    greedy = greedy_decode(model, features, lengths, 2, 3, max_length=6)
    beam = beam_search(model, features, lengths, 2, 3, beam_size=1, length_penalty=0.0, max_length=6)
    assert [tokens for tokens, _ in greedy] == [nbest[0][0] for nbest in beam]
    # Stepping through the reference gives the teacher-forced log-probabilities.
    with torch.no_grad():
        forced = torch.log_softmax(model(features, lengths, tgt).logits, dim=-1)
        memory = model.encode(features, lengths)
        state = model.init_state(memory)
        for t in range(3):
            log_probs, state, _ = model.step(tgt[:, t], state, memory)
            torch.testing.assert_close(log_probs[0], forced[0, t], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("index", [0, 1])
def test_model_rebuilds_from_its_spec(index):
    model = _models()[index]
    rebuilt = build_model(model_spec(model))
    rebuilt.load_state_dict(model.state_dict())
    features, lengths, tgt = _batch()
    torch.testing.assert_close(rebuilt.eval()(features, lengths, tgt).logits, model(features, lengths, tgt).logits)


def test_bad_inputs_are_named():
    las = _models()[0]
    features, lengths, tgt = _batch()
    with pytest.raises(ValueError, match=r"features should be \(N, F, M=8\)"):
        las(features[..., :4], lengths, tgt)
    with pytest.raises(ValueError, match=r"lengths should lie in \[1, 37\]"):
        las(features, torch.tensor([38, 1, 1]), tgt)
    with pytest.raises(ValueError, match="one transcript per utterance"):
        las(features, lengths, tgt[:2])
    with pytest.raises(ValueError, match="needs attention"):
        ListenAttendSpell(VOCAB, attention="none")
