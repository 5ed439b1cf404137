"""from_pretrained_hf: logits of tiny random GPT-2 / BERT checkpoints against transformers."""

import json

import pytest
import torch

from seqlab.models import TransformerClassifier, TransformerLM, TransformerMaskedLM
from seqlab.models.hf import from_pretrained_hf

transformers = pytest.importorskip("transformers")

INPUT_IDS = torch.tensor([[5, 17, 3, 42, 8, 11, 2], [9, 1, 33, 7, 0, 0, 0]])
ATTENTION_MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]])


def _save(model, path):
    model.save_pretrained(path, safe_serialization=True)
    return path


def _compare(reference, ours, **kwargs):
    with torch.no_grad():
        expected = reference(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK, **kwargs).logits
        logits = ours(INPUT_IDS, attention_mask=ATTENTION_MASK, **kwargs).logits
    assert expected.abs().max() > 0.1  # the logits say something
    if expected.dim() == 3:  # compare real positions only
        valid = ATTENTION_MASK.bool()
        expected, logits = expected[valid], logits[valid]
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=50, n_positions=32, n_embd=32, n_layer=2, n_head=4, initializer_range=0.2,
        bos_token_id=0, eos_token_id=2,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    return _save(model, tmp_path_factory.mktemp("gpt2")), model


def test_gpt2_logits_and_greedy_generation_match(gpt2_dir):
    path, reference = gpt2_dir
    ours = from_pretrained_hf(path)
    assert isinstance(ours, TransformerLM) and not ours.training
    _compare(reference, ours)
    prompt = INPUT_IDS[:1, :3]
    expected = reference.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False,
        min_new_tokens=12, pad_token_id=0,
    )
    assert torch.equal(ours.generate(prompt, 12, temperature=0), expected)


def test_bert_masked_lm_logits_match(tmp_path):
    torch.manual_seed(1)
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=32, initializer_range=0.2,
    )
    reference = transformers.BertForMaskedLM(config).eval()
    ours = from_pretrained_hf(_save(reference, tmp_path))
    assert isinstance(ours, TransformerMaskedLM)
    token_type_ids = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0, 0]])
    _compare(reference, ours, token_type_ids=token_type_ids)


def test_bert_classifier_logits_match(tmp_path):
    torch.manual_seed(2)
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=32, initializer_range=0.2, num_labels=3,
    )
    reference = transformers.BertForSequenceClassification(config).eval()
    ours = from_pretrained_hf(_save(reference, tmp_path))
    assert isinstance(ours, TransformerClassifier) and ours.head.out_features == 3
    _compare(reference, ours)


def test_clear_errors(tmp_path, gpt2_dir):
    with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
        from_pretrained_hf(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        from_pretrained_hf(tmp_path)
    config = {"architectures": ["T5ForConditionalGeneration"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        from_pretrained_hf(tmp_path)
    path, _ = gpt2_dir
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="T5ForConditional.*GPT2LMHeadModel, BertForMaskedLM"):
        from_pretrained_hf(tmp_path)
