"""Beam search: known best sequences on a transition table, EOS handling, parity with greedy."""

import math

import pytest
import torch

from seqlab.decode import beam_search, gnmt_length_penalty, greedy_decode
from seqlab.models import Seq2Seq

PAD, BOS, EOS, A, B, C = range(6)
VOCAB = 6


def _table(probabilities):
    table = torch.full((VOCAB, VOCAB), float("-inf"))
    for prev, row in probabilities.items():
        for token, p in row.items():
            table[prev, token] = math.log(p)
    return table


class TableModel:
    """Next-token log-probs read from a per-sentence transition table (the sentence's "memory").

    Records the batch size of every step call, to see sentences leave the batch.
    """

    def __init__(self, tables):
        self.tables = torch.stack(tables)  # (N, V, V)
        self.batch_sizes = []

    def encode(self, src, src_lengths):
        return self.tables[: src.size(0)]

    def init_state(self, memory):
        return torch.zeros(memory.size(0))

    def step(self, prev_tokens, state, memory):
        self.batch_sizes.append(prev_tokens.numel())
        log_probs = memory[torch.arange(prev_tokens.numel()), prev_tokens]  # (N, V)
        return log_probs, state + 1, None

    def reorder_state(self, state, index):
        return state[index]

    def reorder_memory(self, memory, index):
        return memory[index]


# Greedy takes A (0.6) then EOS (0.4): p = 0.24. The best sequence is B EOS: p = 0.4 * 0.9 = 0.36.
TABLE = _table(
    {
        BOS: {A: 0.6, B: 0.4},
        A: {EOS: 0.4, C: 0.35, B: 0.25},
        B: {EOS: 0.9, C: 0.1},
        C: {EOS: 1.0},
        EOS: {EOS: 1.0},
    }
)
# Every hypothesis ends within two steps.
SHORT = _table({BOS: {EOS: 0.5, A: 0.5}, A: {EOS: 1.0}, EOS: {EOS: 1.0}})
# Never emits EOS.
LOOP = _table({BOS: {A: 0.5, B: 0.5}, A: {A: 0.6, B: 0.4}, B: {A: 0.5, B: 0.5}})


def _source(n, length=4):
    return torch.ones(n, length, dtype=torch.long), torch.full((n,), length)


def test_finds_the_best_sequence_that_greedy_misses():
    src, lengths = _source(1)
    [(greedy_tokens, _)] = greedy_decode(TableModel([TABLE]), src, lengths, BOS, EOS)
    assert greedy_tokens == [A]
    [best] = beam_search(TableModel([TABLE]), src, lengths, BOS, EOS, beam_size=2, length_penalty=0)
    assert best == [([B], pytest.approx(math.log(0.36)))]


def test_nbest_is_ordered_by_score():
    src, lengths = _source(1)
    [nbest] = beam_search(
        TableModel([TABLE]), src, lengths, BOS, EOS, beam_size=3, length_penalty=0, nbest=3
    )
    # Enumerated by hand: B (0.36), A (0.24), A C (0.6 * 0.35 * 1.0 = 0.21).
    assert [tokens for tokens, _ in nbest] == [[B], [A], [A, C]]
    assert [score for _, score in nbest] == pytest.approx([math.log(p) for p in (0.36, 0.24, 0.21)])


def test_length_penalty_is_gnmt():
    assert gnmt_length_penalty(7, 0.0) == 1.0
    assert gnmt_length_penalty(7, 0.6) == pytest.approx((12 / 6) ** 0.6)
    src, lengths = _source(1)
    [nbest] = beam_search(
        TableModel([TABLE]), src, lengths, BOS, EOS, beam_size=3, length_penalty=1.0, nbest=3
    )
    # |Y| counts EOS: B EOS has 2 tokens, A C EOS has 3.
    expected = {
        (B,): math.log(0.36) / (7 / 6),
        (A,): math.log(0.24) / (7 / 6),
        (A, C): math.log(0.21) / (8 / 6),
    }
    ranked = sorted(expected.items(), key=lambda item: item[1], reverse=True)
    assert [tuple(tokens) for tokens, _ in nbest] == [tokens for tokens, _ in ranked]
    assert [score for _, score in nbest] == pytest.approx([score for _, score in ranked])


def test_a_sentence_whose_beams_all_end_stops_and_leaves_the_batch():
    alone = TableModel([SHORT])
    src, lengths = _source(1, length=10)  # length cap 20 steps
    [nbest] = beam_search(alone, src, lengths, BOS, EOS, beam_size=2, length_penalty=0, nbest=2)
    assert alone.batch_sizes == [2, 2]  # both beams ended by step 2: no further steps
    assert nbest == [([], pytest.approx(math.log(0.5))), ([A], pytest.approx(math.log(0.5)))]

    together = TableModel([SHORT, LOOP])
    src, lengths = _source(2, length=3)  # length cap 6 steps
    short, loop = beam_search(
        together, src, lengths, BOS, EOS, beam_size=2, length_penalty=0, nbest=2
    )
    assert short == nbest
    assert together.batch_sizes == [4, 4, 2, 2, 2, 2]  # the SHORT sentence left after step 2
    # At the cap the live beams are returned without EOS: A A A A A A (0.5 * 0.6^5) is best.
    assert loop[0] == ([A] * 6, pytest.approx(math.log(0.5 * 0.6**5)))
    assert all(len(tokens) == 6 for tokens, _ in loop)


def test_nbest_larger_than_beam_is_rejected():
    src, lengths = _source(1)
    with pytest.raises(ValueError, match=r"nbest should be in \[1, beam_size=2\], got 3"):
        beam_search(TableModel([TABLE]), src, lengths, BOS, EOS, beam_size=2, nbest=3)


def _model(**options):
    torch.manual_seed(0)
    model = Seq2Seq(9, 11, embedding_dim=8, hidden_size=12, **options).eval()
    with torch.no_grad():
        model.decoder.out.bias[EOS] += 1.5  # stop at varied steps instead of always at the cap
    return model


def _batch():
    generator = torch.Generator().manual_seed(3)
    lengths = torch.tensor([5, 2, 4, 1, 3])
    src = torch.randint(3, 9, (5, 5), generator=generator)
    src[torch.arange(5)[None, :] >= lengths[:, None]] = PAD
    return src, lengths


@pytest.mark.parametrize(
    "options",
    [{"attention": "bahdanau"}, {"cell": "lstm", "attention": "general", "input_feeding": True}],
    ids=["gru-bahdanau", "lstm-luong-feed"],
)
def test_beam_size_one_equals_greedy(options):
    model = _model(**options)
    src, lengths = _batch()
    greedy = greedy_decode(model, src, lengths, BOS, EOS)
    beam = beam_search(model, src, lengths, BOS, EOS, beam_size=1, length_penalty=0)
    assert [hypotheses[0][0] for hypotheses in beam] == [tokens for tokens, _ in greedy]
    assert [hypotheses[0][1] for hypotheses in beam] == pytest.approx(
        [score for _, score in greedy], abs=1e-5
    )


def test_batched_beam_equals_one_sentence_at_a_time():
    model = _model(cell="lstm", attention="bahdanau", num_layers=2)
    src, lengths = _batch()
    batched = beam_search(model, src, lengths, BOS, EOS, beam_size=3, nbest=3)
    for n in range(src.size(0)):
        [alone] = beam_search(
            model, src[n : n + 1, : lengths[n]], lengths[n : n + 1], BOS, EOS, beam_size=3, nbest=3
        )
        assert [tokens for tokens, _ in batched[n]] == [tokens for tokens, _ in alone]
        assert [s for _, s in batched[n]] == pytest.approx([s for _, s in alone], abs=1e-5)


def test_beam_scores_are_the_models_log_probabilities():
    model = _model(attention="dot", bidirectional=False)
    src, lengths = _batch()
    results = beam_search(model, src, lengths, BOS, EOS, beam_size=4, length_penalty=0, nbest=4)
    for n, nbest in enumerate(results):
        scores = [score for _, score in nbest]
        assert scores == sorted(scores, reverse=True)
        cap = 2 * int(lengths[n])
        for tokens, score in nbest:
            tgt = torch.tensor([[BOS, *tokens] + ([EOS] if len(tokens) < cap else [])])
            with torch.no_grad():
                logits = model(src[n : n + 1, : lengths[n]], lengths[n : n + 1], tgt).logits
            expected = logits.log_softmax(-1)[0].gather(1, tgt[0, 1:, None]).sum()
            assert score == pytest.approx(float(expected), abs=1e-4)
