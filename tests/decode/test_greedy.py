"""Greedy decoding: argmax at every step, EOS and length caps, batching."""

import math

import pytest
import torch

from seqlab.decode import greedy_decode, max_output_lengths
from seqlab.models import Seq2Seq

PAD, BOS, EOS, A, B, C = range(6)


class TableModel:
    """A decoder whose next-token distribution depends only on the previous token."""

    def __init__(self, probabilities: dict[int, dict[int, float]], vocab_size: int = 6):
        table = torch.full((vocab_size, vocab_size), float("-inf"))
        for prev, row in probabilities.items():
            for token, p in row.items():
                table[prev, token] = math.log(p)
        self.table = table
        self.calls = 0

    def encode(self, src, src_lengths):
        return src

    def init_state(self, memory):
        return torch.zeros(memory.size(0))

    def step(self, prev_tokens, state, memory):
        self.calls += 1
        return self.table[prev_tokens], state + 1, None

    def reorder_state(self, state, index):
        return state[index]

    def reorder_memory(self, memory, index):
        return memory[index]


TABLE = {
    BOS: {A: 0.6, B: 0.4},
    A: {EOS: 0.4, C: 0.35, B: 0.25},
    B: {EOS: 0.9, C: 0.1},
    C: {EOS: 1.0},
    EOS: {EOS: 1.0},
}


def _model(seed=0, **options):
    torch.manual_seed(seed)
    model = Seq2Seq(9, 11, embedding_dim=8, hidden_size=12, **options).eval()
    with torch.no_grad():
        model.decoder.out.bias[EOS] += 1.5  # stop at varied steps instead of always at the cap
    return model


def _batch():
    generator = torch.Generator().manual_seed(3)
    lengths = torch.tensor([5, 2, 4, 1])
    src = torch.randint(3, 9, (4, 5), generator=generator)
    src[torch.arange(5)[None, :] >= lengths[:, None]] = PAD
    return src, lengths


def test_greedy_takes_the_locally_best_token():
    src, lengths = torch.ones(1, 3, dtype=torch.long), torch.tensor([3])
    [(tokens, score)] = greedy_decode(TableModel(TABLE), src, lengths, BOS, EOS)
    assert tokens == [A]  # the best sequence is [B] (0.36), greedy finds [A] (0.6 * 0.4)
    assert score == pytest.approx(math.log(0.6) + math.log(0.4))


def test_greedy_stops_at_the_length_cap_without_eos():
    looping = TableModel({BOS: {A: 1.0}, A: {A: 0.7, EOS: 0.3}})
    src, lengths = torch.ones(2, 3, dtype=torch.long), torch.tensor([3, 1])
    results = greedy_decode(looping, src, lengths, BOS, EOS, max_length_ratio=2.0)
    assert [tokens for tokens, _ in results] == [[A] * 6, [A] * 2]
    assert results[1][1] == pytest.approx(2 * math.log(1.0) + math.log(0.7))
    assert looping.calls == 6
    fixed = greedy_decode(looping, src, lengths, BOS, EOS, max_length=4)
    assert [tokens for tokens, _ in fixed] == [[A] * 4, [A] * 4]


def test_max_output_lengths():
    lengths = torch.tensor([1, 4, 7])
    assert max_output_lengths(lengths, None, 1.5).tolist() == [2, 6, 11]
    assert max_output_lengths(lengths, 9).tolist() == [9, 9, 9]
    with pytest.raises(ValueError, match="max_length should be a positive integer or None, got 0"):
        max_output_lengths(lengths, 0)


@pytest.mark.parametrize(
    "options",
    [{"attention": "bahdanau"}, {"cell": "lstm", "attention": "general", "input_feeding": True}],
    ids=["gru-bahdanau", "lstm-luong-feed"],
)
def test_greedy_tokens_are_the_argmax_of_the_teacher_forced_model(options):
    model = _model(**options)
    src, lengths = _batch()
    results = greedy_decode(model, src, lengths, BOS, EOS, max_length=8)
    assert any(len(tokens) < 7 for tokens, _ in results)  # some sentences ended with EOS
    for n, (tokens, score) in enumerate(results):
        ended = len(tokens) < 8
        tgt = torch.tensor([[BOS, *tokens] + ([EOS] if ended else [])])
        with torch.no_grad():
            log_probs = model(src[n : n + 1, : lengths[n]], lengths[n : n + 1], tgt).logits
            log_probs = log_probs.log_softmax(-1)[0]  # (T-1, V)
        assert log_probs.argmax(-1).tolist() == tgt[0, 1:].tolist()
        expected = log_probs.gather(1, tgt[0, 1:, None]).sum()
        assert score == pytest.approx(float(expected), abs=1e-4)


def test_batched_greedy_equals_one_sentence_at_a_time():
    model = _model(cell="lstm", attention="dot", bidirectional=False)
    src, lengths = _batch()
    batched = greedy_decode(model, src, lengths, BOS, EOS)
    for n in range(src.size(0)):
        [(tokens, score)] = greedy_decode(
            model, src[n : n + 1, : lengths[n]], lengths[n : n + 1], BOS, EOS
        )
        assert batched[n][0] == tokens
        assert batched[n][1] == pytest.approx(score, abs=1e-5)
