"""Adapter files: save -> load on a fresh base gives the same outputs; a different base, a
missing file, an unknown method are clear errors that change nothing."""

import json

import pytest
import torch

from seqlab.models import SequenceClassifier, TransformerClassifier, TransformerEncoderModel
from seqlab.tune import (
    apply_tuning,
    load_adapter,
    read_adapter_config,
    save_adapter,
    tuning_of,
)

IDS = torch.tensor([[5, 9, 2, 14, 6], [8, 1, 13, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])

SETTINGS = {
    "lora": {"r": 2, "alpha": 4, "targets": ["in_proj_weight", "linear1"]},
    "adapter": {"reduction_factor": 4, "placement": "houlsby"},
    "prefix": {"num_virtual_tokens": 3, "reparameterize": True, "hidden_size": 8},
    "prompt": {"num_virtual_tokens": 2, "init": "vocab"},
    "full": {},
}


def _base(seed=0):
    torch.manual_seed(seed)
    encoder = TransformerEncoderModel(20, d_model=16, nhead=2, num_layers=2, dropout=0.0)
    return TransformerClassifier(encoder, 3, dropout=0.0).eval()


def _train_a_little(model):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        model(IDS, attention_mask=MASK, targets=torch.tensor([0, 2])).loss.backward()
        optimizer.step()


@pytest.mark.parametrize("method", list(SETTINGS))
def test_save_load_gives_the_same_outputs(method, tmp_path):
    model = _base()
    apply_tuning(model, method, **SETTINGS[method])
    _train_a_little(model)
    expected = model(IDS, attention_mask=MASK).logits
    save_adapter(model, tmp_path / "adapter", base_info={"run": "runs/pretrain"})
    config = read_adapter_config(tmp_path / "adapter")
    assert config["method"] == method and config["base"] == {"run": "runs/pretrain"}
    fresh = _base()
    with torch.no_grad():  # a new head starts elsewhere: the adapter carries the trained one
        fresh.head.weight.normal_()
    report = load_adapter(fresh, tmp_path / "adapter")
    assert report.method == method
    torch.testing.assert_close(fresh(IDS, attention_mask=MASK).logits, expected, atol=1e-6,
                               rtol=0)


def test_adapter_file_holds_only_what_was_trained(tmp_path):
    model = _base()
    report = apply_tuning(model, "lora", r=2)
    save_adapter(model, tmp_path)
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "adapter.safetensors"))
    assert sum(t.numel() for t in tensors.values()) == report.trainable
    assert all("lora_" in n or n.startswith(("head.", "pooler.")) for n in tensors)
    # default targets W_q, W_v of 2 layers, each A (r x 16) + B (16 x r); plus the heads
    heads = sum(p.numel() for n, p in _base().named_parameters()
                if n.split(".")[0] in report.heads)
    assert report.heads and report.trainable == 2 * 2 * 2 * (16 + 16) + heads


def test_a_different_base_is_refused_and_nothing_changes(tmp_path):
    model = _base()
    apply_tuning(model, "lora", r=2)
    save_adapter(model, tmp_path, base_info={"run": "runs/pretrain"})
    other = _base(seed=1)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match="other base weights.*run=runs/pretrain"):
        load_adapter(other, tmp_path)
    assert tuning_of(other) is None
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())


def test_missing_or_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no adapter.json"):
        load_adapter(_base(), tmp_path)
    (tmp_path / "adapter.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a seqlab-adapter file"):
        load_adapter(_base(), tmp_path)
    (tmp_path / "adapter.json").write_text("{\"format\": ")
    with pytest.raises(ValueError, match="adapter.json' is not valid JSON"):
        load_adapter(_base(), tmp_path)
    model = _base()
    apply_tuning(model, "lora", r=2)
    save_adapter(model, tmp_path)
    (tmp_path / "adapter.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="adapter.safetensors is missing"):
        load_adapter(_base(), tmp_path)


def test_loading_into_a_model_tuned_otherwise_is_refused(tmp_path):
    model = _base()
    apply_tuning(model, "lora", r=2)
    save_adapter(model, tmp_path)
    other = _base()
    apply_tuning(other, "lora", r=4)
    with pytest.raises(ValueError, match="the model is tuned with 'lora'"):
        load_adapter(other, tmp_path)


def test_unknown_method_and_twice_tuned():
    with pytest.raises(ValueError, match="one of 'full', 'lora', 'adapter', 'prefix', 'prompt'"):
        apply_tuning(_base(), "dora")
    model = _base()
    apply_tuning(model, "prompt")
    with pytest.raises(ValueError, match="tuned already"):
        apply_tuning(model, "lora")
    with pytest.raises(ValueError, match="head 'classifier' is not a child"):
        apply_tuning(_base(), "lora", heads=["classifier"])


def test_recurrent_lora_adapter_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SequenceClassifier(3, 8, cell="lstm", vocab_size=20, embedding_dim=6,
                               peephole=True, bidirectional=True)
    torch.manual_seed(0)
    fresh = SequenceClassifier(3, 8, cell="lstm", vocab_size=20, embedding_dim=6,
                               peephole=True, bidirectional=True)
    apply_tuning(model, "lora", r=2)
    lengths = MASK.sum(1)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        model(IDS, lengths, targets=torch.tensor([0, 2])).loss.backward()
        optimizer.step()
    save_adapter(model, tmp_path)
    load_adapter(fresh, tmp_path)
    torch.testing.assert_close(fresh(IDS, lengths).logits, model(IDS, lengths).logits,
                               atol=1e-6, rtol=0)
