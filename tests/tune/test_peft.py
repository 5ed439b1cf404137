"""PEFT interop: a LoRA adapter saved by peft gives the same logits in seqlab, and seqlab's LoRA
saved in PEFT's format gives the same logits in peft (tiny random GPT-2 and BERT)."""

import copy
import json

import pytest
import torch

from seqlab.models import from_pretrained_hf
from seqlab.tune import apply_tuning, load_peft, save_peft

transformers = pytest.importorskip("transformers", reason="PEFT parity needs transformers")
peft = pytest.importorskip("peft", reason="PEFT parity needs peft (pip install seqlab[hf])")

IDS = torch.tensor([[5, 17, 3, 42, 8, 11, 2], [9, 1, 33, 7, 20, 4, 6]])


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50, n_positions=32, n_embd=32, n_layer=2,
                                     n_head=4, bos_token_id=0, eos_token_id=2)
    model = transformers.GPT2LMHeadModel(config).eval()
    path = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(path, safe_serialization=True)
    return model, path


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=32, num_labels=3)
    model = transformers.BertForSequenceClassification(config).eval()
    path = tmp_path_factory.mktemp("bert")
    model.save_pretrained(path, safe_serialization=True)
    return model, path


def _randomise(model, words=("lora_B", "modules_to_save")):
    """Non-zero B (and heads) so the adapter changes the logits."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if any(word in name for word in words):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)


def _peft_logits(hf_model, adapter_dir):
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(hf_model), adapter_dir).eval()
    with torch.no_grad():
        return loaded(input_ids=IDS).logits


def test_gpt2_peft_adapter_loads_with_the_same_logits(gpt2, tmp_path):
    hf_model, path = gpt2
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"],
                             fan_in_fan_out=True, use_rslora=True)
    tuned = peft.get_peft_model(copy.deepcopy(hf_model), config)
    _randomise(tuned)
    tuned.save_pretrained(tmp_path)
    with torch.no_grad():
        expected = tuned.eval()(input_ids=IDS).logits
    model = from_pretrained_hf(path)
    report = load_peft(model, tmp_path)
    assert report.settings["rslora"] and len(report.targets) == 8  # 4 modules x 2 layers
    assert not torch.allclose(model(IDS).logits, _base_logits(path))
    torch.testing.assert_close(model(IDS).logits, expected, atol=1e-4, rtol=0)


def _base_logits(path):
    with torch.no_grad():
        return from_pretrained_hf(path)(IDS).logits


def test_gpt2_seqlab_lora_saves_for_peft(gpt2, tmp_path):
    hf_model, path = gpt2
    model = from_pretrained_hf(path)
    apply_tuning(model, "lora", r=4, alpha=16, targets=["in_proj_weight", "linear2"])
    _randomise(model)
    save_peft(model, tmp_path, base_model_name_or_path=str(path))
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] and config["task_type"] == "CAUSAL_LM"
    with torch.no_grad():
        expected = model(IDS).logits
    torch.testing.assert_close(_peft_logits(hf_model, tmp_path), expected, atol=1e-4, rtol=0)


def test_bert_peft_adapter_with_classifier_head_loads(bert, tmp_path):
    hf_model, path = bert
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value", "dense"],
                             task_type="SEQ_CLS")
    tuned = peft.get_peft_model(copy.deepcopy(hf_model), config)
    _randomise(tuned)
    tuned.save_pretrained(tmp_path)
    with torch.no_grad():
        expected = tuned.eval()(input_ids=IDS).logits
    model = from_pretrained_hf(path)
    report = load_peft(model, tmp_path)
    assert report.heads == ("head",)
    torch.testing.assert_close(model(IDS).logits, expected, atol=1e-4, rtol=0)


def test_bert_fused_seqlab_lora_and_heads_save_for_peft(bert, tmp_path):
    """A fused q/k/v update becomes query, key, value with one A; pooler and head go to
    modules_to_save."""
    hf_model, path = bert
    model = from_pretrained_hf(path)
    apply_tuning(model, "lora", r=2, alpha=4, targets=["in_proj_weight", "linear1"])
    _randomise(model, words=("lora_B", "head.", "pooler."))
    save_peft(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert sorted(config["modules_to_save"]) == ["classifier", "pooler"]
    with torch.no_grad():
        expected = model(IDS).logits
    torch.testing.assert_close(_peft_logits(hf_model, tmp_path), expected, atol=1e-4, rtol=0)


def test_unsupported_peft_files_are_named(bert, tmp_path):
    hf_model, path = bert
    config = peft.LoraConfig(r=2, target_modules=["query"], use_dora=True)
    peft.get_peft_model(copy.deepcopy(hf_model), config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="use_dora=True"):
        load_peft(from_pretrained_hf(path), tmp_path)
    model = from_pretrained_hf(path)
    apply_tuning(model, "prompt")
    with pytest.raises(ValueError, match="save_peft writes LoRA adapters"):
        save_peft(model, tmp_path / "out")
