"""Prompt tuning: the prepended vectors are what the model sees; a prompt initialised from a
text is that text; outputs at the virtual positions are dropped, so targets stay aligned."""

import pytest
import torch
import torch.nn.functional as F

from seqlab.models import (
    LanguageModel,
    SequenceClassifier,
    TransformerEncoderModel,
    TransformerLM,
    TransformerTagger,
)
from seqlab.tune import apply_tuning, disable_adapters

TEXT = [7, 3, 11]
IDS = torch.tensor([[5, 9, 2, 14, 6], [8, 1, 13, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


def _lm(positional="learned"):
    torch.manual_seed(0)
    return TransformerLM(20, d_model=16, nhead=2, num_layers=2, dropout=0.0, max_length=32,
                         positional=positional).eval()


def _with_text(ids, mask=None):
    text = torch.tensor([TEXT]).expand(ids.size(0), -1)
    joined = torch.cat([text, ids], dim=1)
    if mask is None:
        return joined, None
    return joined, torch.cat([torch.ones_like(text), mask], dim=1)


@pytest.mark.parametrize("positional", ["learned", "rotary"])
def test_prompt_from_text_is_that_text(positional):
    model = _lm(positional)
    joined, joined_mask = _with_text(IDS, MASK)
    expected = model(joined, attention_mask=joined_mask).logits[:, 3:]
    apply_tuning(model, "prompt", num_virtual_tokens=3, init="text", init_text=TEXT)
    logits = model(IDS, attention_mask=MASK).logits
    assert logits.shape == (2, 5, 20)  # virtual positions dropped
    valid = MASK.bool()
    torch.testing.assert_close(logits[valid], expected[valid], atol=1e-5, rtol=0)


def test_prepended_vectors_are_what_the_stack_reads():
    model = _lm()
    apply_tuning(model, "prompt", num_virtual_tokens=4)  # random start
    prompt = model.prompt_tuning.embeddings  # (P, E)
    with disable_adapters(model):
        embedded = model.embedding(IDS, offset=4)  # real tokens at positions 4..
        hidden, _ = model.blocks(torch.cat([prompt.expand(2, -1, -1), embedded], dim=1),
                                 is_causal=True)
        expected = model.head(hidden[:, 4:])
    torch.testing.assert_close(model(IDS).logits, expected, atol=1e-6, rtol=0)


def test_targets_keep_their_alignment():
    model = _lm()
    apply_tuning(model, "prompt", num_virtual_tokens=2, init="vocab")
    targets = torch.tensor([[9, 2, 14, 6, -100], [1, 13, -100, -100, -100]])
    output = model(IDS, targets=targets)
    expected = F.cross_entropy(output.logits.reshape(-1, 20), targets.reshape(-1),
                               ignore_index=-100)
    torch.testing.assert_close(output.loss, expected)
    output.loss.backward()
    assert model.prompt_tuning.embeddings.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters() if "prompt_" not in n)


def test_prompt_generation_with_and_without_cache():
    model = _lm()
    apply_tuning(model, "prompt", num_virtual_tokens=3, init="text", init_text=TEXT)
    cached = model.generate(IDS[:1], 5, temperature=0)
    assert torch.equal(cached, model.generate(IDS[:1], 5, temperature=0, use_cache=False))
    with disable_adapters(model):
        with_text = model.generate(torch.tensor([TEXT + IDS[0].tolist()]), 5, temperature=0)
    assert torch.equal(cached[0, 5:], with_text[0, 8:])


def test_prompt_generation_past_the_positions_slides_over_what_is_left():
    model = _lm()  # 32 positions, of which the prompt takes 3: a window of 29 real tokens
    apply_tuning(model, "prompt", num_virtual_tokens=3, init="vocab")
    out = model.generate(IDS[:1], 40, temperature=0)
    assert out.shape == (1, 45)
    assert torch.equal(out, model.generate(IDS[:1], 40, temperature=0, use_cache=False))
    for end in (40, 44):  # a token chosen after the window slid: greedy over the 29 before it
        expected = model(out[:, end - 29:end]).logits[0, -1].argmax()
        assert out[0, end] == expected


def test_chat_and_server_streams_fit_in_the_positions_a_prompt_leaves():
    from seqlab.align import stream_reply
    from seqlab.serve.models import stream_tokens

    model = _lm()  # 32 positions
    apply_tuning(model, "prompt", num_virtual_tokens=3, init="vocab")
    assert model.context_length == 29
    with disable_adapters(model):
        assert model.context_length == 32
    prompt = [int(i) % 20 for i in range(27)]  # two real positions left
    reply = list(stream_reply(model, prompt, end_of_turn_id=-1, max_new_tokens=10,
                              temperature=0))
    assert len(reply) == 2
    assert reply == model.generate(prompt, 2, temperature=0)[0, 27:].tolist()
    streamed = torch.stack(list(stream_tokens(model, IDS[:1], 40, 0.0, None, None, None)), 1)
    assert torch.equal(streamed, model.generate(IDS[:1], 40, temperature=0)[:, 5:])


def test_encoder_tagger_prompt_from_text():
    torch.manual_seed(0)
    encoder = TransformerEncoderModel(20, d_model=16, nhead=2, num_layers=2, dropout=0.0,
                                      norm_first=False, embedding_norm=True, type_vocab_size=2)
    model = TransformerTagger(encoder, 4, dropout=0.0).eval()
    joined, joined_mask = _with_text(IDS, MASK)
    expected = model(joined, attention_mask=joined_mask).logits[:, 3:]
    apply_tuning(model, "prompt", num_virtual_tokens=5, init="text", init_text=TEXT)
    # a text shorter than the prompt is repeated: 7 3 11 7 3
    model2_text = (TEXT * 2)[:5]
    assert model.prompt_tuning.num_virtual_tokens == 5
    logits = model(IDS, attention_mask=MASK).logits
    with disable_adapters(model):
        text = torch.tensor([model2_text]).expand(2, -1)
        repeated = model(torch.cat([text, IDS], 1),
                         attention_mask=torch.cat([torch.ones_like(text), MASK], 1)).logits
    valid = MASK.bool()
    torch.testing.assert_close(logits[valid], repeated[:, 5:][valid], atol=1e-5, rtol=0)
    assert not torch.allclose(logits[valid], expected[valid])  # 5 virtual tokens, not 3


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_recurrent_classifier_prompt_from_text(cell):
    torch.manual_seed(0)
    model = SequenceClassifier(3, 8, cell=cell, vocab_size=20, embedding_dim=6, num_layers=2,
                               bidirectional=True).eval()
    lengths = MASK.sum(1)
    joined, _ = _with_text(IDS)
    # the text first, then each sequence: right padding moves to the end
    expected = model(joined, lengths + 3).logits
    apply_tuning(model, "prompt", num_virtual_tokens=3, init="text", init_text=TEXT)
    torch.testing.assert_close(model(IDS, lengths).logits, expected, atol=1e-5, rtol=0)
    assert model(IDS, lengths).hidden.shape[1] == 5


def test_recurrent_language_model_prompt_once_at_the_start():
    torch.manual_seed(0)
    model = LanguageModel(20, 8, cell="lstm").eval()
    joined, _ = _with_text(IDS)
    expected = model(joined).logits[:, 3:]
    apply_tuning(model, "prompt", num_virtual_tokens=3, init="text", init_text=TEXT)
    first = model(IDS[:, :2])
    second = model(IDS[:, 2:], state=first.state)
    torch.testing.assert_close(torch.cat([first.logits, second.logits], 1), expected,
                               atol=1e-5, rtol=0)


def test_bad_prompt_settings():
    with pytest.raises(ValueError, match="init should be one of 'random', 'vocab', 'text'"):
        apply_tuning(_lm(), "prompt", init="zeros")
    with pytest.raises(ValueError, match="needs init_text"):
        apply_tuning(_lm(), "prompt", init="text")
    with pytest.raises(ValueError, match=r"init_text ids should lie in \[0, 20\)"):
        apply_tuning(_lm(), "prompt", init="text", init_text=[3, 25])
    features = SequenceClassifier(2, 4, input_size=3)
    with pytest.raises(ValueError, match="reads features: use init='random'"):
        apply_tuning(features, "prompt", init="vocab")
