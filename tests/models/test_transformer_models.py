"""Transformer models: KV-cache generation, padding invariance, attention maps, seq2seq stepping."""

import pytest
import torch
import torch.nn.functional as F

from seqlab.decode import beam_search, greedy_decode
from seqlab.models import (
    TransformerClassifier,
    TransformerEncoderModel,
    TransformerLM,
    TransformerMaskedLM,
    TransformerSeq2Seq,
    TransformerTagger,
)

V = 23
SMALL = {"d_model": 16, "nhead": 2, "num_layers": 2, "dim_feedforward": 32, "dropout": 0.0}


def _lm(positional="learned"):
    torch.manual_seed(0)
    model = TransformerLM(V, positional=positional, max_length=64, **SMALL).eval()
    with torch.no_grad():  # GPT-2's 0.02 init gives near-uniform logits: widen to test argmax
        for parameter in model.parameters():
            parameter.mul_(15.0 if parameter.dim() > 1 else 1.0)
    return model


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "rotary"])
def test_cached_logits_equal_full_recomputation(positional):
    model = _lm(positional)
    ids = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(1))
    full = model(ids).logits
    cache = model.new_cache()
    pieces = [model(ids[:, :4], state=cache).logits]
    for t in range(4, 9):
        pieces.append(model(ids[:, t : t + 1], state=cache).logits)
    assert cache.length == 9
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-4, rtol=1e-4)


def test_kv_cache_generation_is_token_for_token_the_same():
    model = _lm()
    prompt = torch.randint(0, V, (3, 4), generator=torch.Generator().manual_seed(2))
    cached = model.generate(prompt, 30, temperature=0)
    recomputed = model.generate(prompt, 30, temperature=0, use_cache=False)
    assert torch.equal(cached, recomputed)
    assert len(set(cached[:, 4:].flatten().tolist())) > 3  # not a constant stream
    sampled = [
        model.generate(prompt, 12, temperature=0.8, top_k=5, top_p=0.9, use_cache=use_cache,
                       generator=torch.Generator().manual_seed(3))
        for use_cache in (True, False)
    ]
    assert torch.equal(sampled[0], sampled[1])
    assert torch.equal(sampled[0][:, :4], prompt)


def test_lm_loss_and_attentions():
    model = _lm()
    ids = torch.randint(0, V, (2, 6), generator=torch.Generator().manual_seed(4))
    targets = ids.roll(-1, dims=1)
    targets[:, -1] = -100
    out = model(ids, targets=targets, output_attentions=True)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    assert out.state is None  # no cache while training: a carried state stays None
    torch.testing.assert_close(out.logits, model(ids).logits, atol=1e-5, rtol=1e-5)  # both paths
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 2, 6, 6)
    assert torch.count_nonzero(out.attentions[1].triu(diagonal=1)) == 0
    with pytest.raises(ValueError, match="max_length=64"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_lm_initialisation():
    torch.manual_seed(0)
    lm = TransformerLM(vocab_size=500, d_model=256, nhead=4, num_layers=8, bias=False)
    block = lm.blocks.layers[3]
    # N(0, 0.02) for linear layers and embeddings; q/k/v Xavier-uniform: U(±sqrt(6 / (E + 3E))).
    for weight in (block.linear1.weight, block.linear2.weight, block.self_attn.out_proj.weight,
                   lm.embedding.token.weight):
        assert float(weight.detach().std()) == pytest.approx(0.02, rel=0.03)
    bound = (6 / (256 + 3 * 256)) ** 0.5
    in_proj = block.self_attn.in_proj_weight.detach()
    assert float(in_proj.abs().max()) <= bound and float(in_proj.std()) == pytest.approx(bound / 3**0.5, rel=0.03)
    assert not [name for name, _ in lm.named_parameters() if name.endswith("bias")]


def test_lm_right_padding_leaves_real_positions_alone():
    model = _lm()
    ids = torch.randint(0, V, (2, 7), generator=torch.Generator().manual_seed(13))
    lengths = torch.tensor([7, 4])
    batched = model(ids, lengths=lengths).logits
    torch.testing.assert_close(batched[1, :4], model(ids[1:, :4]).logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[0], model(ids[:1]).logits[0], atol=1e-5, rtol=1e-5)


def test_generation_past_max_length_slides_a_window():
    model = _lm()
    prompt = torch.randint(0, V, (2, 60), generator=torch.Generator().manual_seed(12))
    cached = model.generate(prompt, 10, temperature=0)
    window = model.generate(prompt, 10, temperature=0, use_cache=False)
    assert torch.equal(cached, window)
    expected = prompt
    for _ in range(10):  # by hand: the next token from the last 64 tokens
        logits = model(expected[:, -64:]).logits[:, -1]
        expected = torch.cat([expected, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, expected)


@pytest.mark.parametrize("model_class", [TransformerClassifier, TransformerTagger])
def test_encoder_padding_does_not_change_real_positions(model_class):
    torch.manual_seed(5)
    num_outputs = 3 if model_class is TransformerClassifier else 4
    model = model_class(TransformerEncoderModel(V, **SMALL), num_outputs).eval()
    ids = torch.randint(1, V, (2, 7), generator=torch.Generator().manual_seed(6))
    lengths = torch.tensor([7, 4])
    base = model(ids, lengths=lengths).logits
    other = ids.clone()
    other[1, 4:] = torch.tensor([5, 9, 2])  # different junk in the padding
    longer = torch.cat([other, torch.full((2, 3), 7)], dim=1)  # and more of it
    for padded in (other, longer):
        logits = model(padded, lengths=lengths).logits
        if model_class is TransformerClassifier:
            torch.testing.assert_close(logits, base, atol=1e-5, rtol=1e-5)
        else:
            torch.testing.assert_close(logits[0, :7], base[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(logits[1, :4], base[1, :4], atol=1e-5, rtol=1e-5)
    alone = model(ids[1:, :4]).logits
    expected = base[1:] if model_class is TransformerClassifier else base[1:, :4]
    torch.testing.assert_close(alone, expected, atol=1e-5, rtol=1e-5)
    mask = (torch.arange(7)[None] < lengths[:, None]).long()
    torch.testing.assert_close(model(ids, attention_mask=mask).logits, base)


def test_mean_pooling_and_losses_by_formula():
    torch.manual_seed(7)
    model = TransformerClassifier(TransformerEncoderModel(V, **SMALL), 3, pooling="mean").eval()
    ids = torch.randint(1, V, (2, 5))
    lengths = torch.tensor([5, 2])
    hidden, _ = model.encoder(ids, torch.arange(5)[None] >= lengths[:, None])
    features = torch.stack([hidden[0].mean(0), hidden[1, :2].mean(0)])
    out = model(ids, lengths=lengths, targets=torch.tensor([0, 2]))
    torch.testing.assert_close(out.logits, model.head(features))
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, torch.tensor([0, 2])))

    tagger = TransformerTagger(TransformerEncoderModel(V, **SMALL), 4).eval()
    tags = torch.randint(0, 4, (2, 5))
    out = tagger(ids, lengths=lengths, targets=tags)
    valid = torch.cat([out.logits[0], out.logits[1, :2]])
    torch.testing.assert_close(out.loss, F.cross_entropy(valid, torch.cat([tags[0], tags[1, :2]])))


def test_masked_lm_ties_weights_and_ignores_unmasked_positions():
    torch.manual_seed(8)
    encoder = TransformerEncoderModel(
        V, norm_first=False, embedding_norm=True, type_vocab_size=2, **SMALL
    )
    model = TransformerMaskedLM(encoder).eval()
    assert model.decoder.weight is model.encoder.embedding.token.weight
    ids = torch.randint(1, V, (2, 6))
    targets = torch.full_like(ids, -100)
    targets[0, 2], targets[1, 4] = 3, 11
    out = model(ids, targets=targets, output_attentions=True)
    picked = torch.stack([out.logits[0, 2], out.logits[1, 4]])
    torch.testing.assert_close(out.loss, F.cross_entropy(picked, torch.tensor([3, 11])))
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 2, 6))


def _seq2seq(**options):
    torch.manual_seed(9)
    args = {"d_model": 16, "nhead": 2, "num_encoder_layers": 2, "num_decoder_layers": 2,
            "dim_feedforward": 32, "dropout": 0.0}
    args.update(options)
    return TransformerSeq2Seq(19, 21, **args).eval()


@pytest.mark.parametrize(
    ("norm_first", "positional"), [(True, "sinusoidal"), (False, "sinusoidal"), (True, "rotary")]
)
def test_seq2seq_steps_equal_the_teacher_forced_pass(norm_first, positional):
    model = _seq2seq(norm_first=norm_first, positional=positional)
    src = torch.randint(3, 19, (3, 6))
    lengths = torch.tensor([6, 4, 2])
    tgt = torch.randint(3, 21, (3, 5))
    tgt[:, 0] = 1
    out = model(src, lengths, tgt, return_attentions=True)
    memory = model.encode(src, lengths)
    state = model.init_state(memory)
    steps = []
    for t in range(4):
        log_probs, state, _ = model.step(tgt[:, t], state, memory)
        steps.append(log_probs)
    torch.testing.assert_close(
        torch.stack(steps, dim=1), out.logits.log_softmax(-1), atol=1e-5, rtol=1e-5
    )
    assert out.attentions.shape == (3, 4, 6)
    assert torch.count_nonzero(out.attentions[2, :, 2:]) == 0  # padding gets no attention
    maps = model.attention_maps(src, lengths, tgt)
    assert len(maps.encoder) == 2 and maps.decoder_cross[1].shape == (3, 2, 4, 6)
    torch.testing.assert_close(maps.decoder_cross[-1].mean(1), out.attentions)


def test_seq2seq_source_padding_invariance_and_search():
    model = _seq2seq()
    src = torch.randint(3, 19, (2, 5))
    lengths = torch.tensor([5, 3])
    tgt = torch.randint(3, 21, (2, 4))
    tgt[:, 0] = 1
    padded = torch.cat([src, torch.full((2, 2), 4)], dim=1)
    padded[1, 3:] = 8
    torch.testing.assert_close(
        model(padded, lengths, tgt).logits, model(src, lengths, tgt).logits, atol=1e-5, rtol=1e-5
    )
    greedy = greedy_decode(model, src, lengths, bos_id=1, eos_id=2, max_length=6)
    beams = beam_search(model, src, lengths, bos_id=1, eos_id=2, beam_size=1, length_penalty=0.0,
                        max_length=6)
    for (tokens, score), [(beam_tokens, beam_score)] in zip(greedy, beams):
        assert tokens == beam_tokens and abs(score - beam_score) < 1e-4
    # The greedy score is the teacher-forced log-probability of the tokens it chose.
    tokens, score = greedy[0]
    forced = torch.tensor([[1, *tokens, 2]]) if len(tokens) < 6 else torch.tensor([[1, *tokens]])
    with torch.no_grad():
        log_probs = model(src[:1], lengths[:1], forced).logits.log_softmax(-1)[0]
    expected = log_probs.gather(1, forced[0, 1:, None]).sum()
    assert abs(float(expected) - score) < 1e-4


@pytest.mark.slow
def test_seq2seq_learns_to_reverse():
    torch.manual_seed(10)
    model = TransformerSeq2Seq(12, 12, d_model=32, nhead=2, num_encoder_layers=2,
                               num_decoder_layers=2, dim_feedforward=64, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(11)
    for _ in range(400):
        src = torch.randint(3, 12, (32, 5), generator=generator)
        tgt = torch.cat([torch.ones(32, 1, dtype=torch.long), src.flip(1),
                         torch.full((32, 1), 2)], dim=1)
        loss = model(src, torch.full((32,), 5), tgt).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    src = torch.randint(3, 12, (8, 5), generator=generator)
    decoded = greedy_decode(model, src, torch.full((8,), 5), bos_id=1, eos_id=2, max_length=7)
    correct = sum(tokens == row.flip(0).tolist() for (tokens, _), row in zip(decoded, src))
    assert correct >= 7


def test_bad_choices_are_named():
    with pytest.raises(ValueError, match="'learned', 'sinusoidal', 'rotary'"):
        TransformerLM(V, positional="alibi")
    with pytest.raises(ValueError, match="'cls', 'mean'"):
        TransformerClassifier(TransformerEncoderModel(V, **SMALL), 2, pooling="max")
    with pytest.raises(ValueError, match="share_embeddings"):
        TransformerSeq2Seq(10, 11, share_embeddings=True)


def test_attention_maps_plot(tmp_path):
    from seqlab.viz.attention import plot_attention

    model = _lm()
    out = model(torch.tensor([[3, 4, 5]]), output_attentions=True)
    path = plot_attention(out.attentions[0][0], tmp_path / "maps" / "layer0.png", list("abc"),
                          list("abc"), title="layer 0")
    assert path.is_file() and path.stat().st_size > 1000
    with pytest.raises(ValueError, match="key_tokens should have 3 labels, got 2"):
        plot_attention(out.attentions[0][0], tmp_path / "x.png", key_tokens=["a", "b"])


def test_docs_example_runs():
    """The first Python example in docs/transformers.md runs as written."""
    from pathlib import Path

    page = Path(__file__).resolve().parents[2] / "docs" / "transformers.md"
    if not page.is_file():
        pytest.skip("docs/transformers.md is not in this checkout")
    code = page.read_text(encoding="utf-8").split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, str(page), "exec"), namespace)  # noqa: S102 (our own docs)
    assert namespace["tokens"].shape == (1, 13)
    assert len(namespace["maps"]) == 2 and namespace["maps"][0].shape == (1, 4, 13, 13)
    assert torch.isfinite(namespace["loss"])
    assert all(len(hypotheses) == 2 for hypotheses in namespace["nbest"])
