"""Hugging Face export: transformers loads the directory and gives seqlab's logits (≤ 1e-4)."""

import pytest
import torch

from seqlab.cli import main
from seqlab.export import ExportError
from seqlab.export.hf import save_hf
from seqlab.models import (
    TransformerClassifier,
    TransformerEncoderModel,
    TransformerMaskedLM,
    from_pretrained_hf,
)
from seqlab.train.run import open_run

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")

TOLERANCE = 1e-4


def bert_encoder(type_vocab_size=2):
    torch.manual_seed(0)
    return TransformerEncoderModel(60, d_model=16, nhead=2, num_layers=2, dim_feedforward=32,
                                   dropout=0.0, norm_first=False, embedding_norm=True,
                                   type_vocab_size=type_vocab_size, max_length=24,
                                   layer_norm_eps=1e-12)


def padded_batch():
    ids = torch.randint(5, 60, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    return ids, mask


def test_gpt_run_exports_with_its_tokenizer(runs, tmp_path, capsys):
    run_dir, _ = runs["lm-transformer"]
    out = tmp_path / "hf"
    assert main(["export", str(run_dir), "--format", "hf", "--out", str(out)]) == 0
    assert "GPT2LMHeadModel" in capsys.readouterr().out
    _, task, model, _ = open_run(run_dir, ["trainer.device=cpu"])
    theirs = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    text = "def f(x):\n  x"  # within the 16 positions
    ids = torch.tensor([task.tokenizer.encode(text)])
    with torch.no_grad():
        difference = (theirs(input_ids=ids).logits - model(ids).logits).abs().max()
    assert difference <= TOLERANCE
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert tokenizer(text)["input_ids"] == task.tokenizer.encode(text)
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 3
    # And back: seqlab's own importer reads the directory to the same model.
    again = from_pretrained_hf(out)
    with torch.no_grad():
        assert (again(ids).logits - model(ids).logits).abs().max() <= TOLERANCE


def test_bert_classifier_round_trip(tmp_path):
    model = TransformerClassifier(bert_encoder(), 3, pooling="cls", dropout=0.0).eval()
    save_hf(model, tmp_path, labels=["neg", "neutral", "pos"])
    theirs = transformers.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert theirs.config.id2label == {0: "neg", 1: "neutral", 2: "pos"}
    ids, mask = padded_batch()
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
        got = theirs(input_ids=ids, attention_mask=mask).logits
    assert (got - expected).abs().max() <= TOLERANCE


def test_bert_masked_lm_without_token_types(tmp_path):
    model = TransformerMaskedLM(bert_encoder(type_vocab_size=0), layer_norm_eps=1e-12).eval()
    save_hf(model, tmp_path)
    theirs = transformers.BertForMaskedLM.from_pretrained(tmp_path).eval()
    ids, mask = padded_batch()
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
        got = theirs(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    assert (got[real] - expected[real]).abs().max() <= TOLERANCE


def test_layouts_without_a_hugging_face_form_are_refused(runs, tmp_path, capsys):
    pre_norm = TransformerEncoderModel(60, d_model=16, nhead=2, num_layers=1, norm_first=True)
    with pytest.raises(ExportError, match="pre-norm.*no LayerNorm"):
        save_hf(TransformerClassifier(pre_norm, 2, pooling="cls"), tmp_path / "a")
    with pytest.raises(ExportError, match="pools with 'mean'"):
        save_hf(TransformerClassifier(bert_encoder(), 2, pooling="mean"), tmp_path / "b")
    run_dir, _ = runs["classifier"]
    assert main(["export", str(run_dir), "--format", "hf", "--out", str(tmp_path / "c")]) == 2
    assert "--format onnx" in capsys.readouterr().err
