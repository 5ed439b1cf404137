"""Prefix tuning: a prefix equal to a prompt's keys / values is that prompt; masks and the
key/value cache agree with the full pass; recurrent models learn their initial state."""

import pytest
import torch

from seqlab.decode import beam_search
from seqlab.models import (
    LanguageModel,
    SequenceTagger,
    TransformerClassifier,
    TransformerEncoderModel,
    TransformerLM,
    TransformerSeq2Seq,
)
from seqlab.tune import apply_tuning, disable_adapters, prefix_from_prompt

PROMPT = torch.tensor([[7, 3, 11]])
IDS = torch.tensor([[5, 9, 2, 14, 6], [8, 1, 13, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


def _lm_without_positions():
    """A causal LM whose learned positions are zero, so a token's meaning does not depend on
    where it stands: then "prefix = the prompt's keys and values" is exactly "prompt first"."""
    torch.manual_seed(0)
    model = TransformerLM(20, d_model=16, nhead=2, num_layers=3, dropout=0.0, max_length=32)
    with torch.no_grad():
        model.embedding.position.embedding.weight.zero_()
    return model.eval()


def test_prefix_of_a_prompts_keys_and_values_is_that_prompt():
    model = _lm_without_positions()
    full = model(torch.cat([PROMPT.expand(2, -1), IDS], dim=1),
                 attention_mask=torch.cat([torch.ones(2, 3, dtype=torch.long), MASK], dim=1))
    apply_tuning(model, "prefix", num_virtual_tokens=3)
    prefix_from_prompt(model, PROMPT[0])
    tuned = model(IDS, attention_mask=MASK).logits
    valid = MASK.bool()
    torch.testing.assert_close(tuned[valid], full.logits[:, 3:][valid], atol=1e-5, rtol=0)


def test_prefix_with_kv_cache_equals_the_full_pass():
    model = _lm_without_positions()
    apply_tuning(model, "prefix", num_virtual_tokens=4)
    ids = IDS[:1]
    full = model(ids).logits  # (1, 5, V)
    cache = model.new_cache()
    steps = [model(ids[:, :2], state=cache).logits]
    for t in range(2, 5):
        steps.append(model(ids[:, t:t + 1], state=cache).logits)
    assert cache.length == 5  # the cache keeps the real tokens only
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    cached = model.generate(ids, 6, temperature=0)
    assert torch.equal(cached, model.generate(ids, 6, temperature=0, use_cache=False))
    with disable_adapters(model):
        assert not torch.equal(model(ids).logits, full)


def test_reparameterised_prefix_is_the_mlp_of_its_embedding():
    model = _lm_without_positions()
    report = apply_tuning(model, "prefix", num_virtual_tokens=2, reparameterize=True,
                          hidden_size=8)
    encoder = model.prefix_tuning
    out = encoder.mlp(encoder.embedding)  # (P, layers · 2 · E)
    out = out.view(2, 3, 2, 2, 8).permute(1, 2, 3, 0, 4)  # (layers, 2, h, P, d)
    for layer in range(3):
        key, value = encoder.layer(layer)
        torch.testing.assert_close(key, out[layer, 0], atol=1e-6, rtol=0)
        torch.testing.assert_close(value, out[layer, 1], atol=1e-6, rtol=0)
    model(IDS, targets=IDS).loss.backward()
    assert encoder.embedding.grad is not None and encoder.mlp[0].weight.grad is not None
    assert report.trainable == 2 * 16 + (16 * 8 + 8) + (8 * 96 + 96)


def test_encoder_prefix_padding_changes_no_real_position():
    torch.manual_seed(0)
    encoder = TransformerEncoderModel(20, d_model=16, nhead=2, num_layers=2, dropout=0.0)
    model = TransformerClassifier(encoder, 3, dropout=0.0).eval()
    apply_tuning(model, "prefix", num_virtual_tokens=3)
    short = model(IDS[1:, :3]).logits
    padded = model(IDS[1:], attention_mask=MASK[1:]).logits
    torch.testing.assert_close(padded, short, atol=1e-5, rtol=0)


def test_prefix_through_beam_search():
    torch.manual_seed(0)
    model = TransformerSeq2Seq(20, 20, d_model=16, nhead=2, num_encoder_layers=1,
                               num_decoder_layers=2, dropout=0.0).eval()
    apply_tuning(model, "prefix", num_virtual_tokens=2)
    src, lengths = torch.randint(3, 20, (2, 5)), torch.tensor([5, 3])
    greedy = beam_search(model, src, lengths, bos_id=1, eos_id=2, beam_size=1, max_length=6)
    # beam size 1 is greedy: each step's argmax of a full teacher-forced pass over its prefix
    tokens = greedy[0][0][0]
    if tokens:
        tgt = torch.tensor([[1] + tokens])
        logits = model(src[:1], lengths[:1], torch.cat([tgt, tgt[:, :1]], 1)).logits
        assert logits[0, :len(tokens)].argmax(-1).tolist() == tokens


def test_recurrent_prefix_is_a_learned_initial_state():
    torch.manual_seed(0)
    model = LanguageModel(20, 8, cell="lstm", num_layers=2).eval()
    prompt_then_ids = model(torch.cat([PROMPT.expand(2, -1), IDS], dim=1))
    base = model(IDS).logits
    _, state = model.rnn(model.embedding(PROMPT))  # the state after reading the prompt
    report = apply_tuning(model, "prefix")
    assert report.trainable == 2 * 2 * 8  # h0 and c0, (layers, H) each
    torch.testing.assert_close(model(IDS).logits, base, atol=1e-6, rtol=0)  # zero start
    with torch.no_grad():
        model.rnn.prefix_state.h0.copy_(state[0][:, 0])
        model.rnn.prefix_state.c0.copy_(state[1][:, 0])
    torch.testing.assert_close(model(IDS).logits, prompt_then_ids.logits[:, 3:], atol=1e-5,
                               rtol=0)
    carried = model(IDS[:, 2:], state=model(IDS[:, :2]).state).logits
    torch.testing.assert_close(carried, prompt_then_ids.logits[:, 5:], atol=1e-5, rtol=0)


def test_bidirectional_recurrent_prefix_under_lengths():
    torch.manual_seed(0)
    model = SequenceTagger(4, 6, cell="gru", vocab_size=20, embedding_dim=5, num_layers=2,
                           bidirectional=True).eval()
    apply_tuning(model, "prefix")
    with torch.no_grad():
        model.rnn.prefix_state.h0.normal_()
    lengths = MASK.sum(1)
    padded = model(IDS, lengths).logits
    alone = model(IDS[1:, :3], lengths[1:]).logits
    torch.testing.assert_close(padded[1:, :3], alone, atol=1e-5, rtol=0)
    assert model.rnn.prefix_state.h0.shape == (4, 6)


def test_bad_prefix_settings():
    with pytest.raises(ValueError, match="num_virtual_tokens should be a positive integer"):
        apply_tuning(_lm_without_positions(), "prefix", num_virtual_tokens=0)
    model = _lm_without_positions()
    apply_tuning(model, "prefix", num_virtual_tokens=2)
    with pytest.raises(ValueError, match="num_virtual_tokens=2 ids"):
        prefix_from_prompt(model, [1, 2, 3])
