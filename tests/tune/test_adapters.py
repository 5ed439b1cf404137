"""Bottleneck adapters: the identity at step 0, and each one where its placement says."""

import copy

import pytest
import torch
import torch.nn.functional as F

from seqlab.models import (
    LanguageModel,
    SequenceClassifier,
    TransformerClassifier,
    TransformerEncoderModel,
    TransformerSeq2Seq,
)
from seqlab.tune import apply_tuning, disable_adapters


def _classifier():
    torch.manual_seed(0)
    encoder = TransformerEncoderModel(30, d_model=16, nhead=2, num_layers=2, dropout=0.0,
                                      norm_first=False, max_length=16)
    return TransformerClassifier(encoder, 3, dropout=0.0).eval()


def _randomise(adapter, generator):
    with torch.no_grad():
        for parameter in adapter.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


IDS = torch.tensor([[2, 5, 7, 9, 3], [4, 8, 1, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer"])
def test_zero_up_projection_gives_the_base_model(placement):
    model = _classifier()
    expected = model(IDS, attention_mask=MASK).logits
    report = apply_tuning(model, "adapter", reduction_factor=4, placement=placement)
    assert torch.equal(model(IDS, attention_mask=MASK).logits, expected)
    per_layer = {"houlsby": ["adapter_attention", "adapter_output"],
                 "pfeiffer": ["adapter_output"]}[placement]
    assert report.targets == tuple(f"encoder.encoder.layers.{i}.{name}"
                                   for i in range(2) for name in per_layer)
    assert set(report.heads) == {"head", "pooler"}
    # E = 16, m = 4: down 16·4 + 4, up 4·16 + 16 per adapter
    adapters = 2 * len(per_layer) * (16 * 4 + 4 + 4 * 16 + 16)
    heads = 16 * 16 + 16 + 16 * 3 + 3
    assert report.trainable == adapters + heads


def test_houlsby_adapters_sit_on_the_attention_and_feed_forward_outputs():
    """A post-norm layer with adapters, written out:
    h = LN1(x + A1(MHA(x))),  y = LN2(h + A2(W2 act(W1 h)))."""
    model = _classifier()
    apply_tuning(model, "adapter", reduction_factor=4, placement="houlsby")
    generator = torch.Generator().manual_seed(0)
    layer = model.encoder.encoder.layers[0]
    _randomise(layer.adapter_attention, generator)
    _randomise(layer.adapter_output, generator)
    x = torch.randn(2, 5, 16)

    def adapter(module, h):
        return h + module.up(F.relu(module.down(h)))

    with disable_adapters(model):  # the sub-layers alone, without their hooks' adapters
        attended = layer.self_attn(x, x, x, need_weights=False)[0]
        h = layer.norm1(x + adapter(layer.adapter_attention, attended))
        ffn = layer.linear2(layer.activation(layer.linear1(h)))
    expected = layer.norm2(h + adapter(layer.adapter_output, ffn))
    torch.testing.assert_close(layer(x)[0], expected, atol=1e-6, rtol=0)


def test_pfeiffer_changes_only_the_feed_forward_output():
    model = _classifier()
    apply_tuning(model, "adapter", reduction_factor=4, placement="pfeiffer")
    layer = model.encoder.encoder.layers[1]
    assert not hasattr(layer, "adapter_attention")
    _randomise(layer.adapter_output, torch.Generator().manual_seed(0))
    x = torch.randn(2, 5, 16)
    with disable_adapters(model):
        h = layer.norm1(x + layer.self_attn(x, x, x, need_weights=False)[0])
        ffn = layer.linear2(layer.activation(layer.linear1(h)))
    adapted = ffn + layer.adapter_output.up(F.relu(layer.adapter_output.down(ffn)))
    torch.testing.assert_close(layer(x)[0], layer.norm2(h + adapted), atol=1e-6, rtol=0)


def test_recurrent_adapter_reads_what_the_head_reads():
    torch.manual_seed(0)
    model = LanguageModel(20, 8, cell="gru", num_layers=2).eval()
    ids = torch.randint(20, (2, 6))
    expected = model(ids).logits
    report = apply_tuning(model, "adapter", reduction_factor=2)
    assert report.targets == ("adapter_output",)
    # h + 0 is h, but laid out afresh (the recurrent output is a transposed view), so the
    # head's matrix product may round differently in the last bit.
    torch.testing.assert_close(model(ids).logits, expected, atol=1e-6, rtol=0)
    _randomise(model.adapter_output, torch.Generator().manual_seed(0))
    hidden = model(ids).hidden  # (N, L, H), the recurrent outputs
    adapted = hidden + model.adapter_output.up(F.relu(model.adapter_output.down(hidden)))
    torch.testing.assert_close(
        model(ids).logits, F.linear(adapted, model.head.weight, model.head.bias),
        atol=1e-6, rtol=0)


def test_recurrent_classifier_adapter_zero_start_and_gradients():
    torch.manual_seed(0)
    model = SequenceClassifier(3, 8, cell="lstm", vocab_size=20, embedding_dim=6,
                               bidirectional=True)
    ids, lengths = torch.randint(1, 20, (3, 5)), torch.tensor([5, 2, 4])
    expected = model(ids, lengths).logits
    base = copy.deepcopy(model)
    apply_tuning(model, "adapter", reduction_factor=4)
    torch.testing.assert_close(model(ids, lengths).logits, expected, atol=1e-6, rtol=0)
    model(ids, lengths, targets=torch.tensor([0, 2, 1])).loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads == {n for n in grads if n.startswith(("adapter_output.", "head."))}
    assert "adapter_output.up.weight" in grads
    assert all(p.grad is None for p in base.parameters())


def test_encoder_decoder_houlsby_has_cross_attention_adapters():
    torch.manual_seed(0)
    model = TransformerSeq2Seq(20, 20, d_model=16, nhead=2, num_encoder_layers=1,
                               num_decoder_layers=1, dropout=0.0).eval()
    src, lengths = torch.randint(3, 20, (2, 5)), torch.tensor([5, 3])
    tgt = torch.randint(3, 20, (2, 4))
    expected = model(src, lengths, tgt).logits
    report = apply_tuning(model, "adapter", placement="houlsby", reduction_factor=4)
    assert "decoder.layers.0.adapter_cross_attention" in report.targets
    assert torch.equal(model(src, lengths, tgt).logits, expected)


def test_bad_adapter_settings():
    with pytest.raises(ValueError, match="placement should be one of 'houlsby', 'pfeiffer'"):
        apply_tuning(_classifier(), "adapter", placement="middle")
    with pytest.raises(ValueError, match="reduction_factor should be a positive number"):
        apply_tuning(_classifier(), "adapter", reduction_factor=0)
    with pytest.raises(ValueError, match="unknown setting.*'r'.*allowed: reduction_factor"):
        apply_tuning(_classifier(), "adapter", r=4)
