"""Seq2Seq: teacher forcing equals stepping, equations by hand, padding invariance, overfitting."""

import pytest
import torch
import torch.nn.functional as F

from seqlab.data import pad_sequences, reversal
from seqlab.decode import beam_search, greedy_decode
from seqlab.models import Seq2Seq

PAD, BOS, EOS = 0, 2, 3
V_SRC, V_TGT = 9, 11


def _model(seed=0, **options):
    torch.manual_seed(seed)
    options = {"embedding_dim": 6, "hidden_size": 8, **options}
    return Seq2Seq(V_SRC, V_TGT, **options).eval()


def _batch():
    generator = torch.Generator().manual_seed(1)
    src_lengths = torch.tensor([5, 2, 4])
    src = torch.randint(4, V_SRC, (3, 6), generator=generator)  # one extra padding column
    src[torch.arange(6)[None, :] >= src_lengths[:, None]] = PAD
    tgt_lengths = torch.tensor([6, 3, 5])  # BOS + tokens + EOS
    tgt = torch.randint(4, V_TGT, (3, 6), generator=generator)
    tgt[:, 0] = BOS
    tgt[torch.arange(3), tgt_lengths - 1] = EOS
    tgt[torch.arange(6)[None, :] >= tgt_lengths[:, None]] = PAD
    return src, src_lengths, tgt


CONFIGS = [
    {"cell": "gru", "attention": "bahdanau", "bridge": "projection"},
    {"cell": "lstm", "attention": "bahdanau", "bridge": "zeros", "num_layers": 2},
    {"cell": "lstm", "attention": "general", "input_feeding": True, "bridge": "projection"},
    {"cell": "gru", "attention": "dot", "bidirectional": False, "bridge": "last"},
    {"cell": "lstm", "attention": "general", "merge_mode": "sum", "bridge": "last"},
    {"cell": "rnn", "attention": "none", "bidirectional": False, "num_layers": 2},
    {"cell": "lstm", "attention": "general", "peephole": True, "coupled": True},
    {"cell": "gru", "attention": "bahdanau", "reset_after": False},
]


@pytest.mark.parametrize("options", CONFIGS, ids=lambda o: "-".join(map(str, o.values())))
def test_teacher_forced_logits_equal_step_by_step(options):
    model = _model(**options)
    src, src_lengths, tgt = _batch()
    with torch.no_grad():
        output = model(src, src_lengths, tgt, return_attentions=True)
        memory = model.encode(src, src_lengths)
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
        assert output.attentions is None
    else:
        torch.testing.assert_close(output.attentions, torch.stack(attentions, 1))
        # Padding in the source gets no attention at all.
        assert torch.all(output.attentions.masked_select(~memory.mask[:, None, :]) == 0.0)


def test_loss_ignores_padding():
    model = _model()
    src, src_lengths, tgt = _batch()
    with torch.no_grad():
        output = model(src, src_lengths, tgt)
    targets = tgt[:, 1:]
    total, count = 0.0, 0
    for n in range(3):
        valid = targets[n] != PAD
        total += F.cross_entropy(output.logits[n][valid], targets[n][valid], reduction="sum")
        count += int(valid.sum())
    torch.testing.assert_close(output.loss, total / count)


@pytest.mark.parametrize("options", CONFIGS[:3], ids=["gru", "lstm-2layers", "lstm-luong"])
def test_padding_does_not_change_anything(options):
    model = _model(**options)
    src, src_lengths, tgt = _batch()
    with torch.no_grad():
        batched = model(src, src_lengths, tgt, return_attentions=True)
        memory = model.encode(src, src_lengths)
        for n in range(3):
            s, t = int(src_lengths[n]), int((tgt[n] != PAD).sum())
            alone = model(src[n : n + 1, :s], src_lengths[n : n + 1], tgt[n : n + 1, :t], True)
            torch.testing.assert_close(batched.logits[n, : t - 1], alone.logits[0])
            torch.testing.assert_close(batched.attentions[n, : t - 1, :s], alone.attentions[0])
            own = model.encode(src[n : n + 1, :s], src_lengths[n : n + 1])
            torch.testing.assert_close(memory.outputs[n, :s], own.outputs[0])
            assert torch.all(memory.outputs[n, s:] == 0.0)


def test_bahdanau_step_by_hand():
    """c = attention(s_{t-1}); s_t = GRU([e; c], s_{t-1}); o = tanh(W_o [s_t; c; e])."""
    model = _model(cell="gru", attention="bahdanau", bridge="projection")
    decoder = model.decoder
    src, src_lengths, tgt = _batch()
    with torch.no_grad():
        memory = model.encode(src, src_lengths)
        outputs, h_n = memory.outputs, memory.final_state
        # Bridge: s_0 = tanh(W [h_fwd; h_bwd] + b).
        s = torch.tanh(model.bridge.proj_h(torch.cat([h_n[0], h_n[1]], dim=-1)))  # (N, H)
        cell = torch.nn.GRUCell(6 + 16, 8)
        cell.load_state_dict({k.replace("_l0", ""): v for k, v in decoder.rnn.state_dict().items()})
        attention = decoder.attention
        e = decoder.embedding(tgt[:, 0])
        scores = (
            torch.tanh(attention.query_proj(s)[:, None] + attention.key_proj(outputs)) @ attention.v
        )  # (N, S)
        scores = scores.masked_fill(~memory.mask, float("-inf"))
        weights = scores.softmax(-1)
        context = (weights[:, :, None] * outputs).sum(1)
        s_new = cell(torch.cat([e, context], -1), s)
        logits = decoder.out(torch.tanh(decoder.combine(torch.cat([s_new, context, e], -1))))
        step_log_probs, _, step_weights = model.step(tgt[:, 0], model.init_state(memory), memory)
    torch.testing.assert_close(step_weights, weights)
    torch.testing.assert_close(step_log_probs, logits.log_softmax(-1))


def test_luong_input_feeding_by_hand():
    """s_t = LSTM([e; o_{t-1}]); c = attention(s_t); o_t = tanh(W_c [c; s_t]) fed to t+1."""
    model = _model(
        cell="lstm", attention="general", input_feeding=True, bidirectional=False, bridge="last"
    )
    decoder = model.decoder
    src, src_lengths, tgt = _batch()
    with torch.no_grad():
        memory = model.encode(src, src_lengths)
        h, c = (part[0] for part in memory.final_state)  # bridge "last": the encoder's state
        cell = torch.nn.LSTMCell(6 + 8, 8)
        cell.load_state_dict({k.replace("_l0", ""): v for k, v in decoder.rnn.state_dict().items()})
        feed = torch.zeros(3, 8)
        expected = []
        for t in range(3):
            e = decoder.embedding(tgt[:, t])
            h, c = cell(torch.cat([e, feed], -1), (h, c))
            scores = torch.einsum("nh,hk,nsk->ns", h, decoder.attention.weight, memory.outputs)
            weights = scores.masked_fill(~memory.mask, float("-inf")).softmax(-1)
            context = torch.einsum("ns,nsk->nk", weights, memory.outputs)
            feed = torch.tanh(decoder.combine(torch.cat([context, h], -1)))
            expected.append(decoder.out(feed))
        logits = model(src, src_lengths, tgt[:, :4]).logits
    torch.testing.assert_close(logits, torch.stack(expected, 1))


def test_bridge_last_copies_merged_encoder_states():
    model = _model(
        cell="lstm",
        attention="none",
        bridge="last",
        hidden_size=8,
        encoder_hidden_size=4,
        num_layers=2,
    )  # bidirectional concat: 2 * 4 = 8
    src, src_lengths, _ = _batch()
    with torch.no_grad():
        memory = model.encode(src, src_lengths)
        h, c = model.init_state(memory).hidden
    encoder_h, encoder_c = memory.final_state  # (L * D, N, 4), layer-major
    for layer in range(2):
        forward, backward = 2 * layer, 2 * layer + 1
        torch.testing.assert_close(
            h[layer], torch.cat([encoder_h[forward], encoder_h[backward]], -1)
        )
        torch.testing.assert_close(
            c[layer], torch.cat([encoder_c[forward], encoder_c[backward]], -1)
        )
    zeros = _model(bridge="zeros")
    assert torch.all(zeros.init_state(zeros.encode(src, src_lengths)).hidden == 0)


def test_scheduled_sampling_feeds_own_predictions():
    model = _model(cell="gru", attention="general", teacher_forcing_ratio=0.0)
    src, src_lengths, tgt = _batch()
    model.train()  # no dropout configured, so train mode only switches on scheduled sampling
    with torch.no_grad():
        sampled = model(src, src_lengths, tgt).logits
        memory = model.encode(src, src_lengths)
        state, prev, expected = model.init_state(memory), tgt[:, 0], []
        for _ in range(tgt.size(1) - 1):
            log_probs, state, _ = model.step(prev, state, memory)
            expected.append(log_probs)
            prev = log_probs.argmax(-1)
        model.eval()
        forced = model(src, src_lengths, tgt).logits
    torch.testing.assert_close(sampled.log_softmax(-1), torch.stack(expected, 1))
    assert not torch.allclose(sampled, forced)  # eval mode always feeds the true tokens


def test_errors_name_the_bad_values():
    src, src_lengths, tgt = _batch()
    with pytest.raises(ValueError, match="source length 5 is longer than max_source_length=4"):
        _model(max_source_length=4)(src, src_lengths, tgt)
    with pytest.raises(ValueError, match="attention should be one of 'none', 'bahdanau', 'dot'"):
        _model(attention="luong")
    with pytest.raises(ValueError, match="bridge should be one of 'last', 'projection', 'zeros'"):
        _model(bridge="mean")
    with pytest.raises(ValueError, match="hidden_size=8 and encoder output size 16"):
        _model(attention="dot")
    with pytest.raises(ValueError, match=r"decoder \(8, 1 layers\) and encoder \(16, 1 layers\)"):
        _model(bridge="last")
    with pytest.raises(ValueError, match="input_feeding=True .* got attention='bahdanau'"):
        _model(input_feeding=True)
    with pytest.raises(ValueError, match=r"teacher_forcing_ratio should be .* got 1.5"):
        _model(teacher_forcing_ratio=1.5)


def _reversal_batch(pairs, symbols):
    def ids(text):
        return [5 + symbols.index(token) for token in text.split()]

    src, src_lengths = pad_sequences([ids(source) for source, _ in pairs], pad_value=PAD)
    tgt, _ = pad_sequences([[BOS, *ids(target), EOS] for _, target in pairs], pad_value=PAD)
    return src, src_lengths, tgt


def test_tiny_model_overfits_reversal():
    symbols = "abcdef"
    pairs = reversal(48, min_length=2, max_length=6, num_symbols=len(symbols), seed=0)
    src, src_lengths, tgt = _reversal_batch(pairs, symbols)
    torch.manual_seed(0)
    model = Seq2Seq(
        5 + len(symbols),
        5 + len(symbols),
        embedding_dim=16,
        hidden_size=32,
        cell="gru",
        bidirectional=False,
        attention="dot",
        bridge="last",
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(40):
        optimizer.zero_grad()
        loss = model(src, src_lengths, tgt).loss
        loss.backward()
        optimizer.step()
    model.eval()
    expected = [[t for t in row.tolist() if t not in (PAD, BOS, EOS)] for row in tgt]
    greedy = greedy_decode(model, src, src_lengths, BOS, EOS)
    assert [tokens for tokens, _ in greedy] == expected
    beam = beam_search(model, src, src_lengths, BOS, EOS, beam_size=3)
    assert [nbest[0][0] for nbest in beam] == expected


def test_docs_example_runs():
    """The Python example in docs/seq2seq.md runs as written."""
    from pathlib import Path

    page = Path(__file__).resolve().parents[2] / "docs" / "seq2seq.md"
    if not page.is_file():
        pytest.skip("docs/seq2seq.md is not in this checkout")
    code = page.read_text(encoding="utf-8").split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, str(page), "exec"), namespace)  # noqa: S102 (our own docs)
    assert namespace["out"].logits.shape == (2, 5, 20)
    assert namespace["out"].attentions.shape == (2, 5, 4)
    assert len(namespace["nbest"]) == 2 and len(namespace["nbest"][0]) == 2
