"""LoRA: step 0 is the base model, the forward is W x + (alpha / r) B A x written out, merge /
unmerge round-trips, only A and B (and the head) learn, recurrent weights of every variant."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seqlab.models import LanguageModel, SequenceClassifier, TransformerLM
from seqlab.nn import GRU, LSTM, RNN, MultiheadAttention
from seqlab.tune import (
    LoraLinear,
    apply_tuning,
    base_state_dict,
    disable_adapters,
    merge,
    tuned_state_dict,
    unmerge,
)


def _tiny_lm():
    torch.manual_seed(0)
    return TransformerLM(40, d_model=16, nhead=2, num_layers=2, dropout=0.0, max_length=32).eval()


def _randomise_lora(model, std=0.3):
    """Give every B a non-zero value so the update shows (B starts at zero)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


def test_step_zero_equals_base_exactly():
    model = _tiny_lm()
    ids = torch.randint(40, (2, 9))
    expected = model(ids).logits
    apply_tuning(model, "lora", r=4, alpha=8, targets=["in_proj_weight", "linear1", "out_proj"])
    assert torch.equal(model(ids).logits, expected)


def test_linear_forward_is_the_formula_written_out():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    layer = LoraLinear(base, r=3, alpha=6.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 6)
    W, b, A, B = base.weight, base.bias, layer.lora_A, layer.lora_B
    expected = x @ W.T + b + (6.0 / 3) * (x @ A.T) @ B.T
    torch.testing.assert_close(layer(x), expected, atol=1e-6, rtol=0)


def test_rslora_scales_by_alpha_over_sqrt_r():
    layer = LoraLinear(nn.Linear(4, 4), r=4, alpha=8.0, rslora=True)
    assert layer.scaling == pytest.approx(8.0 / math.sqrt(4))


def test_a_is_kaiming_uniform_and_b_zero_as_in_peft():
    torch.manual_seed(0)
    layer = LoraLinear(nn.Linear(64, 32), r=16, alpha=16.0)
    # kaiming_uniform_(a=sqrt(5)) draws from U(-1/sqrt(in), 1/sqrt(in)).
    bound = 1 / math.sqrt(64)
    assert layer.lora_A.abs().max() <= bound
    assert layer.lora_A.abs().max() > 0.9 * bound
    assert torch.count_nonzero(layer.lora_B) == 0


def test_fused_qkv_parts_equal_attention_with_updated_weight():
    """in_proj_weight:q and :v: W' = W + s [B_q A_q; 0; B_v A_v], checked on a plain copy."""
    torch.manual_seed(0)
    attention = MultiheadAttention(8, 2, batch_first=True).eval()
    reference = MultiheadAttention(8, 2, batch_first=True).eval()
    reference.load_state_dict(attention.state_dict())
    holder = nn.Module()
    holder.attention = attention
    apply_tuning(holder, "lora", r=2, alpha=4, targets=["in_proj_weight:q", "in_proj_weight:v"])
    _randomise_lora(holder)
    lora = attention.parametrizations.in_proj_weight[0]
    (A_q, B_q), (A_v, B_v) = lora.pair("q"), lora.pair("v")
    zero = torch.zeros(8, 8)
    with torch.no_grad():
        reference.in_proj_weight += 2.0 * torch.cat([B_q @ A_q, zero, B_v @ A_v])
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(attention(x, x, x)[0], reference(x, x, x)[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("targets", [["in_proj_weight"], ["in_proj_weight:q", "in_proj_weight:v"]])
def test_attention_takes_the_update_on_its_activations_with_the_formed_weight_gradients(targets):
    """Self- and cross-attention project through W and the branch s x A^T B^T: outputs and
    gradients (A, B, inputs) equal those through W' = W + s B A formed as one matrix (float64)."""
    torch.manual_seed(0)
    attention = MultiheadAttention(8, 2, batch_first=True).double()
    plain = MultiheadAttention(8, 2, batch_first=True).double()
    plain.load_state_dict(attention.state_dict())
    holder = nn.Module()
    holder.attention = attention
    apply_tuning(holder, "lora", r=2, alpha=4, targets=targets)
    _randomise_lora(holder)
    lora = attention.parametrizations.in_proj_weight[0]
    weight = attention.parametrizations.in_proj_weight.original
    pairs = [p for n, p in lora.named_parameters()]
    x = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(3, 4, 8, dtype=torch.float64, requires_grad=True)

    def formed(query, source):
        formed_weight = weight + lora.delta()  # (3E, E)
        return torch.func.functional_call(plain, {"in_proj_weight": formed_weight},
                                          (query, source, source))[0]

    for source in (x, memory):  # self-attention, then cross-attention
        out = attention(x, source, source)[0]
        expected = formed(x, source)
        torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
        grads = torch.autograd.grad(out.square().sum(), [x, source, *pairs])
        expected_grads = torch.autograd.grad(expected.square().sum(), [x, source, *pairs])
        for got, want in zip(grads, expected_grads):
            torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    assert weight.grad is None and not weight.requires_grad  # the frozen W takes no gradient


def test_merge_unmerge_round_trip():
    model = _tiny_lm()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    apply_tuning(model, "lora", r=4, alpha=8, targets=["in_proj_weight", "linear1", "linear2"])
    _randomise_lora(model)
    ids = torch.randint(40, (2, 9))
    tuned = model(ids).logits
    merge(model)
    torch.testing.assert_close(model(ids).logits, tuned, atol=1e-5, rtol=0)
    assert any(not torch.equal(v, original[k]) for k, v in base_state_dict(model).items())
    with disable_adapters(model):
        torch.testing.assert_close(model(ids).logits, _tiny_lm()(ids).logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(model(ids).logits, tuned, atol=1e-5, rtol=0)  # merged again
    unmerge(model)
    for name, tensor in base_state_dict(model).items():
        torch.testing.assert_close(tensor, original[name], atol=1e-5, rtol=0)


def test_merged_weights_load_into_a_plain_model():
    model = _tiny_lm()
    apply_tuning(model, "lora", r=4, targets=["in_proj_weight", "linear2"])
    _randomise_lora(model)
    ids = torch.randint(40, (2, 9))
    tuned = model(ids).logits
    merge(model)
    plain = _tiny_lm()
    plain.load_state_dict(base_state_dict(model))
    torch.testing.assert_close(plain(ids).logits, tuned, atol=1e-5, rtol=0)


def test_gradients_reach_only_lora_and_the_head():
    torch.manual_seed(0)
    model = SequenceClassifier(3, 8, cell="gru", vocab_size=30, embedding_dim=6, num_layers=2)
    report = apply_tuning(model, "lora", r=2)
    assert report.heads == ("head",)
    ids, lengths = torch.randint(1, 30, (4, 6)), torch.tensor([6, 4, 3, 1])
    model(ids, lengths, targets=torch.tensor([0, 1, 2, 1])).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {n for n in with_grad if "lora_" in n or n.startswith("head.")}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == with_grad
    assert any("lora_A" in n for n in with_grad) and "head.weight" in with_grad
    expected = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    assert report.trainable == expected
    assert report.total == sum(p.numel() for p in model.parameters())
    assert set(tuned_state_dict(model)) == with_grad


VARIANTS = [
    (RNN, {"nonlinearity": "tanh"}), (RNN, {"nonlinearity": "relu"}),
    (LSTM, {}), (LSTM, {"peephole": True}), (LSTM, {"coupled": True}),
    (LSTM, {"peephole": True, "coupled": True}),
    (GRU, {}), (GRU, {"reset_after": False}),
]


@pytest.mark.parametrize("layer_class, options", VARIANTS)
@pytest.mark.parametrize("merge_mode", ["concat", "sum"])
def test_recurrent_lora_equals_layer_with_updated_weights(layer_class, options, merge_mode):
    """Every cell variant, 2 layers, both directions, under lengths: the tuned layer equals a
    plain layer holding W + s B A (so the fused kernel / compiled loop run on W')."""
    torch.manual_seed(0)
    layer = layer_class(5, 4, num_layers=2, batch_first=True, bidirectional=True,
                        merge_mode=merge_mode, **options)
    reference = layer_class(5, 4, num_layers=2, batch_first=True, bidirectional=True,
                            merge_mode=merge_mode, **options)
    reference.load_state_dict(layer.state_dict())
    holder = nn.Module()
    holder.rnn = layer
    apply_tuning(holder, "lora", r=2, alpha=3)
    _randomise_lora(holder)
    with torch.no_grad():
        for name in dict(reference.named_parameters()):
            if name.startswith(("weight_ih", "weight_hh")):
                lora = layer.parametrizations[name][0]
                getattr(reference, name).add_(1.5 * lora.lora_B @ lora.lora_A)
    x, lengths = torch.randn(3, 6, 5), torch.tensor([6, 2, 4])
    output, state = layer(x, lengths=lengths)
    expected, expected_state = reference(x, lengths=lengths)
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=0)
    for got, want in zip(state if isinstance(state, tuple) else (state,),
                         expected_state if isinstance(state, tuple) else (expected_state,)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert torch.all(output[1, 2:] == 0)  # past its length
    output.sum().backward()
    lora = layer.parametrizations["weight_hh_l1_reverse"][0]
    assert lora.lora_A.grad is not None and lora.lora_A.grad.abs().sum() > 0
    assert layer.parametrizations["weight_hh_l1_reverse"].original.grad is None


def test_lora_on_recurrent_language_model_generates():
    torch.manual_seed(0)
    model = LanguageModel(20, 8, cell="lstm", num_layers=2)
    apply_tuning(model, "lora", r=2)
    _randomise_lora(model)
    tokens = model.generate([1, 2, 3], 5, temperature=0)
    assert tokens.shape == (1, 8)
    full = model(tokens[:, :-1]).logits.argmax(-1)[0, 2:]
    assert torch.equal(full, tokens[0, 3:])  # greedy step by step = one full pass


def test_bad_targets_list_what_exists():
    model = _tiny_lm()
    with pytest.raises(ValueError, match="matches no weight.*blocks.layers.0.linear1.weight"):
        apply_tuning(model, "lora", targets=["query"])
    with pytest.raises(ValueError, match="tied embedding"):
        apply_tuning(_tiny_lm(), "lora", targets=["head"])
    with pytest.raises(ValueError, match="part after ':'"):
        apply_tuning(_tiny_lm(), "lora", targets=["in_proj_weight:x"])
    with pytest.raises(ValueError, match="positive integer"):
        apply_tuning(_tiny_lm(), "lora", r=0)


def test_dropout_acts_on_the_branch_input_only():
    torch.manual_seed(0)
    layer = LoraLinear(nn.Linear(6, 5), r=2, alpha=2.0, dropout=0.5).train()
    x = torch.randn(50, 6)
    assert torch.equal(layer(x), layer.base_layer(x))  # B = 0: dropout changes nothing yet
    with torch.no_grad():
        layer.lora_B.normal_()
    torch.manual_seed(3)
    out = layer(x)
    torch.manual_seed(3)
    dropped = F.dropout(x, 0.5, training=True)
    expected = layer.base_layer(x) + dropped @ layer.lora_A.T @ layer.lora_B.T
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_minimal_recurrent_layers_take_lora_on_their_input_matrices():
    from seqlab.nn import MinGRU

    torch.manual_seed(0)
    holder = nn.Module()
    holder.rnn = MinGRU(4, 6, num_layers=2, batch_first=True)
    x = torch.randn(2, 5, 4)
    expected = holder.rnn(x)[0]
    report = apply_tuning(holder, "lora", r=2)
    assert report.targets == ("rnn.weight_ih_l0", "rnn.weight_ih_l1")  # no weight_hh in minGRU
    torch.testing.assert_close(holder.rnn(x)[0], expected, atol=0, rtol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_merge_and_unload_gives_a_plain_model(cell):
    from seqlab.tune import merge_and_unload, tuning_of

    torch.manual_seed(0)
    model = SequenceClassifier(3, 8, cell=cell, vocab_size=20, embedding_dim=6,
                               bidirectional=True).eval()
    plain_names = set(model.state_dict())
    apply_tuning(model, "lora", r=2, targets=["weight_ih_l*", "weight_hh_l*", "head"])
    _randomise_lora(model)
    ids, lengths = torch.randint(1, 20, (2, 5)), torch.tensor([5, 3])
    tuned = model(ids, lengths).logits
    merge_and_unload(model)
    assert tuning_of(model) is None and type(model) is SequenceClassifier
    assert type(model.rnn) in (LSTM, GRU) and set(model.state_dict()) == plain_names
    torch.testing.assert_close(model(ids, lengths).logits, tuned, atol=1e-5, rtol=0)


def test_embedding_lora_is_a_low_rank_update_of_every_token_vector():
    """Named explicitly, an embedding table takes W' = W + s · B A (B: vocabulary × r,
    A: r × dim): step 0 is the base model, the forward equals the model run on W' written out,
    only A, B and the head learn, and merge / unmerge round-trips."""
    torch.manual_seed(0)
    model = SequenceClassifier(3, 8, cell="lstm", vocab_size=30, embedding_dim=6)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    ids, lengths = torch.randint(1, 30, (4, 7)), torch.tensor([7, 5, 2, 1])
    expected = model(ids, lengths).logits
    report = apply_tuning(model, "lora", r=2, alpha=4, targets=["embedding", "weight_hh_l0"])
    assert torch.equal(model(ids, lengths).logits, expected)
    assert report.trainable == 2 * (30 + 6) + 2 * (32 + 8) + 3 * 8 + 3
    _randomise_lora(model)
    lora = model.embedding.parametrizations.weight[0]
    assert lora.lora_B.shape == (30, 2) and lora.lora_A.shape == (2, 6)
    reference = SequenceClassifier(3, 8, cell="lstm", vocab_size=30, embedding_dim=6)
    reference.load_state_dict(base)
    with torch.no_grad():
        reference.embedding.weight += (4 / 2) * lora.lora_B @ lora.lora_A
        hh = model.rnn.parametrizations.weight_hh_l0[0]
        reference.rnn.weight_hh_l0 += (4 / 2) * hh.lora_B @ hh.lora_A
    tuned = model(ids, lengths, targets=torch.tensor([0, 1, 2, 1]))
    torch.testing.assert_close(tuned.logits, reference(ids, lengths).logits, atol=1e-6, rtol=0)
    tuned.loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {"embedding.parametrizations.weight.0.lora_A",
                         "embedding.parametrizations.weight.0.lora_B",
                         "rnn.parametrizations.weight_hh_l0.0.lora_A",
                         "rnn.parametrizations.weight_hh_l0.0.lora_B", "head.weight", "head.bias"}
    # only the rows of the tokens in the batch move B
    unseen = sorted(set(range(30)) - set(ids.flatten().tolist()))
    assert unseen and torch.all(lora.lora_B.grad[unseen] == 0)
    merge(model)
    torch.testing.assert_close(model(ids, lengths).logits, tuned.logits, atol=1e-6, rtol=0)
    unmerge(model)
    for name, tensor in base_state_dict(model).items():
        torch.testing.assert_close(tensor, base[name], atol=1e-6, rtol=0)


def test_report_names_the_weights_a_pattern_caught():
    """`embedding` on a Transformer classifier catches the position table, not the token one:
    the printed report says so, and counts what it does not name."""
    from seqlab.models import TransformerClassifier
    from seqlab.models.transformer import TransformerEncoderModel

    def classifier():
        torch.manual_seed(0)
        return TransformerClassifier(TransformerEncoderModel(50, d_model=16, nhead=2,
                                                             num_layers=6), 2)

    report = str(apply_tuning(classifier(), "lora", r=2, targets=["embedding"]))
    assert "; on encoder.embedding.position.embedding.weight;" in report
    report = str(apply_tuning(classifier(), "lora", r=2, targets=["embedding.token", "linear1"]))
    assert "on encoder.embedding.token.weight, encoder.encoder.layers.0.linear1.weight," in report
    assert "and 3 more; heads trained: pooler, head" in report  # 7 weights, 4 named
