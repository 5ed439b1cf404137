"""The course's check helpers: a right answer passes, each classic mistake is named."""

import re

import pytest
import torch
import torch.nn.functional as F

from seqlab import course


def rnn_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh):
    return torch.tanh(x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh)


def lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh, order="ifgo", biases=True):
    gates = x @ weight_ih.T + h @ weight_hh.T + ((bias_ih + bias_hh) if biases else 0)
    blocks = dict(zip(order, gates.chunk(4, dim=1)))
    i, f, g, o = (blocks[k] for k in "ifgo")
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_next), c_next


def gru_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh, order="rzn", bias_hh_used=True):
    gi = dict(zip(order, (x @ weight_ih.T + bias_ih).chunk(3, dim=1)))
    gh = dict(zip(order, (h @ weight_hh.T + (bias_hh if bias_hh_used else 0)).chunk(3, dim=1)))
    r = torch.sigmoid(gi["r"] + gh["r"])
    z = torch.sigmoid(gi["z"] + gh["z"])
    n = torch.tanh(gi["n"] + r * gh["n"])
    return (1 - z) * n + z * h


def failure(check, fn) -> str:
    with pytest.raises(AssertionError) as info:
        check(fn)
    return str(info.value)


def test_right_cells_pass_and_say_so(capsys):
    course.check_rnn_cell(rnn_cell)
    course.check_lstm_cell(lstm_cell)
    course.check_gru_cell(gru_cell)
    lines = capsys.readouterr().out.splitlines()
    assert [line[:2] for line in lines] == ["✓ "] * 3
    assert "torch.nn.LSTMCell" in lines[1]


def test_a_stub_is_reported_as_not_implemented():
    def stub(*args):
        raise NotImplementedError("TODO: h' = tanh(W_ih x + b_ih + W_hh h + b_hh)")

    message = failure(course.check_rnn_cell, stub)
    assert message.startswith("rnn_cell is not implemented yet (TODO: h' = tanh")


def test_rnn_cell_mistakes_are_named():
    def no_bias(x, h, w_ih, w_hh, b_ih, b_hh):
        return torch.tanh(x @ w_ih.T + h @ w_hh.T + b_ih)

    def no_recurrence(x, h, w_ih, w_hh, b_ih, b_hh):
        return torch.tanh(x @ w_ih.T + b_ih + b_hh)

    def wrong_shape(x, h, w_ih, w_hh, b_ih, b_hh):
        return rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh).T

    assert "missing bias b_hh" in failure(course.check_rnn_cell, no_bias)
    assert "missing term W_hh h" in failure(course.check_rnn_cell, no_recurrence)
    assert failure(course.check_rnn_cell, wrong_shape) == (
        "rnn_cell: wrong shape of h': got (5, 3), expected (3, 5)")


def test_lstm_gate_order_is_found_among_the_permutations():
    message = failure(course.check_lstm_cell, lambda *a: lstm_cell(*a, order="ifog"))
    assert message == ("lstm_cell: wrong gate order: your cell reads the weight blocks as "
                       "i, f, o, g; torch.nn.LSTMCell stores them as i, f, g, o")
    message = failure(course.check_lstm_cell, lambda *a: lstm_cell(*a, order="fgoi"))
    assert "reads the weight blocks as f, g, o, i" in message


def test_lstm_missing_bias_alone_and_with_a_wrong_order():
    assert failure(course.check_lstm_cell, lambda *a: lstm_cell(*a, biases=False)) == (
        "lstm_cell: missing biases b_ih and b_hh (neither bias is added)")
    message = failure(course.check_lstm_cell,
                      lambda *a: lstm_cell(*a, order="oigf", biases=False))
    assert "as o, i, g, f" in message and message.endswith("and missing biases b_ih and b_hh "
                                                           "(neither bias is added)")


def test_lstm_other_mistakes():
    def swapped(*args):
        h, c = lstm_cell(*args)
        return c, h

    def one_output(*args):
        return lstm_cell(*args)[0]

    assert "returned (c', h')" in failure(course.check_lstm_cell, swapped)
    assert failure(course.check_lstm_cell, one_output) == (
        "lstm_cell should return the pair (h', c'); got Tensor")


def test_gru_gate_order_missing_bias_and_the_update_mix():
    assert "as z, r, n; torch.nn.GRUCell stores them as r, z, n" in failure(
        course.check_gru_cell, lambda *a: gru_cell(*a, order="zrn"))
    assert failure(course.check_gru_cell, lambda *a: gru_cell(*a, bias_hh_used=False)) == (
        "gru_cell: missing bias b_hh (bias_hh is never added)")

    def swapped_mix(x, h, *weights):
        h_next = gru_cell(x, h, *weights)
        # (1 - z) n + z h  ->  z n + (1 - z) h  is  n + h - h_next
        w_ih, w_hh, b_ih, b_hh = weights
        r = torch.sigmoid((x @ w_ih.T + b_ih).chunk(3, 1)[0] + (h @ w_hh.T + b_hh).chunk(3, 1)[0])
        n = torch.tanh((x @ w_ih.T + b_ih).chunk(3, 1)[2] + r * (h @ w_hh.T + b_hh).chunk(3, 1)[2])
        return n + h - h_next

    assert "z is the share of the OLD state" in failure(course.check_gru_cell, swapped_mix)


def test_an_unknown_mistake_gives_the_difference():
    message = failure(course.check_rnn_cell, lambda *a: rnn_cell(*a) + 0.25)
    assert re.fullmatch(r"rnn_cell: numbers differ by 0\.25 \(largest absolute difference\) "
                        r"from torch\.nn\.RNNCell", message)


def test_bptt_by_hand_is_autograd_and_the_check_names_a_truncated_gradient():
    course.check_bptt(course.bptt_by_hand)
    message = failure(course.check_bptt,
                      lambda *a: course.bptt_by_hand(*a, through_time=False))
    assert message.startswith("bptt: the gradient does not flow back through time")
    assert "missing tanh derivative" in failure(
        course.check_bptt, lambda *a: course.bptt_by_hand(*a, tanh_derivative=False))


def test_clip_grad_norm_check():
    def right(grads, max_norm):
        total = torch.sqrt(sum((g ** 2).sum() for g in grads))
        scale = min(1.0, max_norm / float(total))
        return [g * scale for g in grads], total

    def per_tensor(grads, max_norm):
        norms = [g.norm() for g in grads]
        return [g * min(1.0, max_norm / float(n)) for g, n in zip(grads, norms)], norms[0]

    course.check_clip_grad_norm(right)
    assert "over all tensors together" in failure(course.check_clip_grad_norm, per_tensor)


def test_merge_check():
    def right(forward, backward, mode):
        return {"concat": lambda: torch.cat([forward, backward], -1),
                "sum": lambda: forward + backward, "mean": lambda: (forward + backward) / 2,
                "max": lambda: torch.maximum(forward, backward)}[mode]()

    course.check_merge(right)
    assert "joined along time" in failure(
        course.check_merge, lambda f, b, m: torch.cat([f, b]) if m == "concat" else right(f, b, m))
    assert failure(course.check_merge,
                   lambda f, b, m: f + b if m == "mean" else right(f, b, m)) == (
        "merge(mode='mean'): that is the sum; the mean divides by 2")


class Additive(torch.nn.Module):
    def __init__(self, query_size, key_size, attention_size, use_mask=True):
        super().__init__()
        self.query_proj = torch.nn.Linear(query_size, attention_size, bias=False)
        self.key_proj = torch.nn.Linear(key_size, attention_size, bias=False)
        self.v = torch.nn.Parameter(torch.randn(attention_size))
        self.use_mask = use_mask

    def forward(self, query, keys, values, mask):
        scores = torch.tanh(self.query_proj(query)[:, None] + self.key_proj(keys)) @ self.v
        if self.use_mask:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (N, S)
        return (weights[:, :, None] * values).sum(1), weights


def test_attention_check():
    course.check_attention(Additive)
    assert "padding positions (mask False) get weight > 0" in failure(
        course.check_attention, lambda *a: Additive(*a, use_mask=False))

    class WithBias(Additive):
        def __init__(self, query_size, key_size, attention_size):
            super().__init__(query_size, key_size, attention_size)
            self.query_proj = torch.nn.Linear(query_size, attention_size)

    assert "the module's parameters are" in failure(course.check_attention, WithBias)

    class NoTanh(Additive):
        def forward(self, query, keys, values, mask):
            scores = (self.query_proj(query)[:, None] + self.key_proj(keys)) @ self.v
            weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
            return (weights[:, :, None] * values).sum(1), weights

    assert failure(course.check_attention, NoTanh) == (
        "attention (weights): missing tanh: e_s = vᵀ tanh(W_q q + W_k k_s)")


def greedy(model, src, src_lengths, bos_id, eos_id, max_length):
    memory = model.encode(src, src_lengths)
    state = model.init_state(memory)
    outputs = []
    for row in range(src.size(0)):
        row_state = model.reorder_state(state, torch.tensor([row]))
        row_memory = model.reorder_memory(memory, torch.tensor([row]))
        prev, tokens = torch.tensor([bos_id]), []
        for _ in range(max_length):
            log_probs, row_state, _ = model.step(prev, row_state, row_memory)
            prev = log_probs.argmax(-1)
            if int(prev) == eos_id:
                break
            tokens.append(int(prev))
        outputs.append(tokens)
    return outputs


def test_greedy_and_beam_checks():
    course.check_greedy_decode(greedy)
    course.check_beam_search(_beam)


def _beam(model, src, src_lengths, bos_id, eos_id, beam_size, max_length):
    memory = model.encode(src, src_lengths)
    beams = [([], 0.0, model.init_state(memory))]
    finished = []
    for _ in range(max_length):
        candidates = []
        for tokens, score, state in beams:
            prev = torch.tensor([tokens[-1] if tokens else bos_id])
            log_probs, new_state, _ = model.step(prev, state, memory)
            top = log_probs[0].topk(beam_size)
            for value, token in zip(top.values.tolist(), top.indices.tolist()):
                candidates.append((tokens + [token], score + value, new_state))
        candidates.sort(key=lambda item: -item[1])
        beams = []
        for tokens, score, state in candidates[:beam_size]:
            (finished if tokens[-1] == eos_id else beams).append((tokens, score, state))
        if not beams:
            break
    finished += beams
    best = max(finished, key=lambda item: item[1])[0]
    return best[:-1] if best and best[-1] == eos_id else best


def test_beam_check_names_the_greedy_answer():
    message = failure(course.check_beam_search,
                      lambda m, s, n, b, e, k, L: greedy(m, s, n, b, e, L)[0])
    assert message.startswith("beam: sentence")


def test_lora_and_dpo_checks():
    def lora_linear(x, weight, bias, lora_A, lora_B, alpha, r):
        return F.linear(x, weight, bias) + (alpha / r) * (x @ lora_A.T @ lora_B.T)

    course.check_lora_linear(lora_linear)
    assert failure(course.check_lora_linear,
                   lambda x, w, b, A, B, alpha, r: F.linear(x, w, b) + x @ A.T @ B.T) == (
        "lora_linear: missing scale alpha / r on the update")

    def dpo(pc, pr, rc, rr, beta):
        return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))

    course.check_dpo_loss(dpo)
    assert "chosen and rejected swapped" in failure(
        course.check_dpo_loss, lambda pc, pr, rc, rr, beta: dpo(pr, pc, rr, rc, beta))


def test_shared_data_is_found_beside_the_project_or_is_none(tmp_path, monkeypatch):
    from pathlib import Path

    root = Path(course.__file__).resolve().parents[2]
    expected = root.parent / "shared" / "data" / "multi30k"
    assert course.shared_data("multi30k") == (expected if expected.exists() else None)
    assert course.shared_data("no-such-corpus") is None
    monkeypatch.chdir(tmp_path)  # outside the project: found from the installed package
    assert course.shared_data("multi30k") == (expected if expected.exists() else None)


def test_a_check_leaves_the_global_random_state_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    course.check_attention(Additive)
    course.check_greedy_decode(greedy)
    assert torch.equal(torch.rand(3), expected)
