"""The chat template's ids and loss mask, and generation that stops at the end of turn."""

import pytest
import torch
from torch import nn

from seqlab.align import ChatTemplate, stream_reply
from seqlab.data.tokenizers import Tokenizer
from seqlab.models.outputs import LMOutput


@pytest.fixture(scope="module")
def template():
    tokenizer = Tokenizer.train(["system: user: assistant: hello there, how are you? fine thanks"],
                                kind="char")
    return ChatTemplate(tokenizer)


def test_mask_covers_exactly_the_assistant_tokens(template):
    tok = template.tokenizer
    messages = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "hi there"}, {"role": "user", "content": "how are you?"},
                {"role": "assistant", "content": "fine"}]
    ids, mask = template.encode(messages)
    expected_ids, expected_mask = [], []
    for message in messages:
        head = [tok.bos_id] + tok.encode(message["role"] + ":")
        body = tok.encode(" " + message["content"]) + [tok.eos_id]
        expected_ids += head + body
        expected_mask += [False] * len(head) + [message["role"] == "assistant"] * len(body)
    assert ids == expected_ids and mask == expected_mask
    scored = [i for i, m in zip(ids, mask) if m]
    assert scored == tok.encode(" hi there") + [tok.eos_id] + tok.encode(" fine") + [tok.eos_id]
    # every end-of-turn of an assistant turn is learned, no other turn's
    assert sum(1 for i, m in zip(ids, mask) if m and i == tok.eos_id) == 2


def test_generation_prompt_ends_with_the_assistant_header(template):
    tok = template.tokenizer
    ids, mask = template.encode([{"role": "user", "content": "hello"}], add_generation_prompt=True)
    header = [tok.bos_id] + tok.encode("assistant:")
    assert ids[-len(header):] == header and not any(mask)
    with pytest.raises(ValueError, match="one of: system, user, assistant"):
        template.encode([{"role": "bot", "content": "x"}])


def test_history_drops_the_oldest_turns_and_keeps_the_system_message(template):
    messages = [{"role": "system", "content": "be nice"}]
    for _ in range(5):
        messages += [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "fine thanks"}]
    messages.append({"role": "user", "content": "how are you?"})
    kept = template.fit_history(messages, 80)
    assert kept[0]["role"] == "system" and kept[-1] == messages[-1]
    assert len(template.encode(kept, add_generation_prompt=True)[0]) <= 80
    assert len(template.encode(kept[:1] + messages[-len(kept):], add_generation_prompt=True)[0]) > 80
    with pytest.raises(ValueError, match="longer than the 10 tokens"):
        template.fit_history(messages, 10)


class CountingLM(nn.Module):
    """Writes tokens 10, 11, 12, ... and then the end-of-turn token after `length` tokens."""

    def __init__(self, vocab_size, end_id, length):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.vocab_size, self.end_id, self.length = vocab_size, end_id, length

    def forward(self, ids, state=None):
        written = 0 if state is None else state + 1
        logits = torch.zeros(ids.size(0), ids.size(1), self.vocab_size)
        logits[:, -1, self.end_id if written >= self.length else 10 + written] = 5.0
        return LMOutput(logits=logits, state=written)


def test_stream_reply_stops_at_the_end_of_turn():
    model = CountingLM(30, end_id=3, length=4)
    assert list(stream_reply(model, [2, 5, 6], end_of_turn_id=3, max_new_tokens=20, temperature=0)) == [10, 11, 12, 13]
    assert list(stream_reply(model, [2, 5, 6], end_of_turn_id=3, max_new_tokens=2, temperature=0)) == [10, 11]


def test_streamed_reply_holds_a_character_back_until_its_bytes_are_drawn(monkeypatch):
    from types import SimpleNamespace

    from seqlab.train.config import load_config
    from seqlab.train.run import build_task

    task = build_task(load_config("sft", ["data.train=unused.jsonl"]))
    # Byte-level BPE that never saw "é": its two bytes are two tokens.
    task.tokenizer = Tokenizer.train(["the cafe is ok and the tea is hot"] * 20, kind="bpe",
                                     vocab_size=300)
    reply = task.template.content("café ok")
    assert "\ufffd" in task.tokenizer.decode(reply[:2])  # half a character after two tokens
    monkeypatch.setattr("seqlab.align.stream_reply", lambda *args, **kwargs: iter(reply))
    pieces = list(task.reply_pieces(SimpleNamespace(max_length=64),
                                    [{"role": "user", "content": "hi"}]))
    assert "".join(pieces) == "café ok" and len(pieces) > 1
    assert not any("\ufffd" in piece for piece in pieces)


def _replies_by_rereading(model, prompt, end, max_new_tokens, n, generator):
    """sample_replies written out without any cache: every step re-reads the n whole rows."""
    from seqlab.decode.sampling import sample_next_token

    rows, replies, ended = torch.tensor([prompt] * n), [[] for _ in range(n)], [False] * n
    for _ in range(max_new_tokens):
        tokens = sample_next_token(model(rows).logits[:, -1], generator=generator)
        for row in range(n):
            if not ended[row]:
                replies[row].append(int(tokens[row]))
                ended[row] = int(tokens[row]) == end
        if all(ended):
            break
        rows = torch.cat([rows, tokens[:, None]], dim=1)
    return replies


@pytest.mark.parametrize("family", ["transformer", "recurrent"])
def test_sample_replies_draws_n_rows_as_a_loop_without_cache_does(family):
    from seqlab.align import sample_replies
    from seqlab.models.language_model import LanguageModel
    from seqlab.models.transformer import TransformerLM

    torch.manual_seed(0)
    model = (TransformerLM(20, d_model=16, nhead=2, num_layers=1, dim_feedforward=32, max_length=32)
             if family == "transformer" else LanguageModel(20, 16, cell="gru")).double().eval()
    prompt = [1, 5, 6]
    replies = sample_replies(model, prompt, 2, 12, 8, generator=torch.Generator().manual_seed(4),
                             include_end=True)
    expected = _replies_by_rereading(model, prompt, 2, 12, 8, torch.Generator().manual_seed(4))
    assert replies == expected
    lengths = {len(reply) for reply in replies}
    assert len(lengths) > 1 and min(lengths) < 12  # rows end at different steps
    assert all(reply[-1] == 2 for reply in replies if len(reply) < 12)
    without_end = sample_replies(model, prompt, 2, 12, 8, generator=torch.Generator().manual_seed(4))
    assert without_end == [reply[:-1] if reply[-1] == 2 else reply for reply in replies]
    one = sample_replies(model, prompt, 2, 12, 1, generator=torch.Generator().manual_seed(4))
    assert one == [list(stream_reply(model, prompt, 2, 12, 1.0, generator=torch.Generator().manual_seed(4)))]
    with pytest.raises(ValueError, match="n >= 1"):
        sample_replies(model, prompt, 2, 12, 0)


def test_best_of_n_keeps_the_best_scored_of_the_replies_sample_replies_draws():
    from seqlab.align import best_of_n, sample_replies
    from seqlab.models.transformer import TransformerLM

    torch.manual_seed(0)
    model = TransformerLM(20, d_model=16, nhead=2, num_layers=1, dim_feedforward=32, max_length=32)
    prompt = [1, 5, 6]

    def count_sevens(prompt_ids, replies):  # a reward written out: how often token 7 appears
        assert prompt_ids == prompt
        return torch.tensor([float(reply.count(7)) - 0.01 * len(reply) for reply in replies])

    best, scores = best_of_n(model, prompt, end_of_turn_id=2, max_new_tokens=12, n=6,
                             score=count_sevens, generator=torch.Generator().manual_seed(3))
    drawn = sample_replies(model, prompt, 2, 12, 6, generator=torch.Generator().manual_seed(3),
                           include_end=True)  # the same six draws
    expected = count_sevens(prompt, drawn)
    assert torch.equal(scores, expected)
    assert best == drawn[int(expected.argmax())]
    assert len({tuple(reply) for reply in drawn}) > 1  # six different replies to choose from
    one, _ = best_of_n(model, prompt, 2, 12, 1, count_sevens, generator=torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    assert one == list(stream_reply(model, prompt, 2, 12, 1.0, generator=generator, include_end=True))
    with pytest.raises(ValueError, match="n >= 1"):
        best_of_n(model, prompt, 2, 12, 0, count_sevens)
    with pytest.raises(ValueError, match="one per reply"):
        best_of_n(model, prompt, 2, 12, 2, lambda p, r: torch.zeros(3))
