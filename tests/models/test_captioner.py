"""Captioner: encoder by hand, teacher forcing equals stepping, attention over regions, learning."""

import pytest
import torch
import torch.nn.functional as F

from seqlab.data import coloured_shapes
from seqlab.data.tokenizers import Tokenizer
from seqlab.decode import beam_search, greedy_decode
from seqlab.models import Captioner, ImageEncoder

PAD, BOS, EOS = 0, 2, 3
V = 11


def _model(seed=0, **options):
    torch.manual_seed(seed)
    options = {
        "image_size": 16,
        "channels": (4, 6),
        "embedding_dim": 5,
        "hidden_size": 6,
        **options,
    }
    return Captioner(V, **options).eval()


def _batch():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, 16, 16, generator=generator)
    lengths = torch.tensor([6, 3, 5])  # BOS + words + EOS
    tgt = torch.randint(4, V, (3, 6), generator=generator)
    tgt[:, 0] = BOS
    tgt[torch.arange(3), lengths - 1] = EOS
    tgt[torch.arange(6)[None, :] >= lengths[:, None]] = PAD
    return images, tgt


def test_encoder_equals_the_convolutions_written_out():
    torch.manual_seed(0)
    encoder = ImageEncoder(image_size=16, channels=(4, 6))
    images = torch.rand(2, 3, 16, 16)
    regions, vector = encoder(images)
    x = images
    for conv in (encoder.convs[0], encoder.convs[3]):
        x = F.max_pool2d(torch.relu(F.conv2d(x, conv.weight, conv.bias, padding=1)), 2)
    assert x.shape == (2, 6, 4, 4)
    # Region r = (row, column) of the 4 x 4 grid, row-major, plus its position embedding.
    for row in range(4):
        for column in range(4):
            r = row * 4 + column
            torch.testing.assert_close(regions[:, r], x[:, :, row, column] + encoder.position[r])
    fc = x.reshape(2, -1) @ encoder.fc.weight.T + encoder.fc.bias  # (N, C)
    mean, var = fc.mean(-1, keepdim=True), fc.var(-1, unbiased=False, keepdim=True)
    torch.testing.assert_close(vector, (fc - mean) / torch.sqrt(var + 1e-5))


def test_first_state_is_tanh_of_the_projected_image_vector():
    model = _model(cell="lstm", num_layers=2)
    images, _ = _batch()
    memory = model.encode(images)
    h, c = model.init_state(memory).hidden
    expected_h = torch.tanh(model.bridge.proj_h(memory.vector)).view(3, 2, 6).transpose(0, 1)
    expected_c = torch.tanh(model.bridge.proj_c(memory.vector)).view(3, 2, 6).transpose(0, 1)
    torch.testing.assert_close(h, expected_h)
    torch.testing.assert_close(c, expected_c)


CONFIGS = [
    {"cell": "gru", "attention": "bahdanau"},
    {"cell": "lstm", "attention": "bahdanau", "num_layers": 2},
    {"cell": "lstm", "attention": "general", "input_feeding": True},
    {"cell": "gru", "attention": "dot"},
    {"cell": "rnn", "attention": "none"},
    {"cell": "gru", "attention": "general", "reset_after": False},
]


@pytest.mark.parametrize("options", CONFIGS, ids=lambda o: "-".join(map(str, o.values())))
def test_teacher_forced_logits_equal_step_by_step(options):
    model = _model(**options)
    images, tgt = _batch()
    with torch.no_grad():
        output = model(images, tgt, return_attentions=True)
        memory = model.encode(images)
        state = model.init_state(memory)
        log_probs, attentions = [], []
        for t in range(tgt.size(1) - 1):
            step_log_probs, state, weights = model.step(tgt[:, t], state, memory)
            log_probs.append(step_log_probs)
            attentions.append(weights)
    torch.testing.assert_close(
        output.logits.log_softmax(-1), torch.stack(log_probs, 1), rtol=1e-5, atol=1e-5
    )
    if options["attention"] == "none":
        assert output.attentions is None and attentions[0] is None
    else:
        torch.testing.assert_close(
            output.attentions, torch.stack(attentions, 1), rtol=1e-5, atol=1e-6
        )
    # The loss is the mean cross-entropy over real (non-padding) target tokens.
    targets = tgt[:, 1:]
    real = targets != PAD
    picked = output.logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(output.loss, -picked[real].mean())


@pytest.mark.parametrize("attention", ["bahdanau", "dot", "general"])
def test_attention_weights_over_regions_sum_to_one(attention):
    model = _model(attention=attention)
    images, tgt = _batch()
    with torch.no_grad():
        weights = model(images, tgt, return_attentions=True).attentions
    assert weights.shape == (3, 5, 16)  # 16 = 4 x 4 regions
    assert bool((weights >= 0).all())
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 5))


def test_beam_of_one_equals_greedy_and_beams_stay_apart():
    model = _model(attention="bahdanau")
    images, _ = _batch()
    placeholder = torch.ones(3, dtype=torch.long)
    greedy = greedy_decode(model, images, placeholder, BOS, EOS, max_length=7)
    beam = beam_search(
        model, images, placeholder, BOS, EOS, beam_size=1, length_penalty=0.0, max_length=7
    )
    for (tokens, score), nbest in zip(greedy, beam):
        assert nbest[0][0] == tokens
        assert nbest[0][1] == pytest.approx(score, abs=1e-5)
    # Each image decoded alone gives the same caption as in the batch.
    for n in range(3):
        alone = greedy_decode(model, images[n : n + 1], placeholder[:1], BOS, EOS, max_length=7)
        assert alone[0][0] == greedy[n][0]


def test_gradients_match_finite_differences():
    model = _model(attention="bahdanau", cell="lstm").double()
    images, tgt = _batch()
    images = images.double()

    def loss_of(position):
        # The region position embeddings reach the loss through attention alone.
        return torch.func.functional_call(model, {"encoder.position": position}, (images, tgt)).loss

    position = model.encoder.position.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(loss_of, (position,), eps=1e-6, atol=1e-6, fast_mode=True)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="attention should be one of"):
        _model(attention="luong")
    with pytest.raises(ValueError, match="hidden_size equal to the region feature size"):
        _model(attention="dot", hidden_size=5)
    with pytest.raises(ValueError, match="multiple of 2"):
        _model(image_size=18)
    model = _model()
    with pytest.raises(ValueError, match=r"images should be \(N, 3, 16, 16\)"):
        model(torch.rand(2, 3, 32, 32), torch.full((2, 3), BOS))
    with pytest.raises(ValueError, match="one caption per image"):
        model(torch.rand(2, 3, 16, 16), torch.full((3, 3), BOS))


@pytest.fixture
def one_thread():
    # Several threads on a busy 2-core machine mostly wait for each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_model_learns_generated_captions(one_thread):
    train = coloured_shapes(3000, max_shapes=1, seed=0)
    test = coloured_shapes(50, max_shapes=1, seed=1)
    tokenizer = Tokenizer.train([c[0] for c in train.captions], kind="word")

    def tensors(data):
        images = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255  # (N, 3, P, P)
        ids = [tokenizer.encode(c[0], add_bos=True, add_eos=True) for c in data.captions]
        return images, torch.tensor(ids)  # one shape: every caption has 7 tokens

    images, tgt = tensors(train)
    torch.manual_seed(0)
    model = Captioner(
        tokenizer.vocab_size,
        image_size=32,
        channels=(16, 32, 32),
        embedding_dim=16,
        hidden_size=64,
        attention="bahdanau",
        pad_id=tokenizer.pad_id,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        index = torch.randint(0, len(train), (32,), generator=generator)
        loss = model(images[index], tgt[index]).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()
    test_images, _ = tensors(test)
    placeholder = torch.ones(len(test), dtype=torch.long)
    decoded = greedy_decode(
        model, test_images, placeholder, tokenizer.bos_id, tokenizer.eos_id, max_length=10
    )
    hits = sum(
        tokenizer.decode(tokens) == caps[0] for (tokens, _), caps in zip(decoded, test.captions)
    )
    assert hits / len(test) >= 0.9
