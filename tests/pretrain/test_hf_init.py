"""A tiny random BERT saved by transformers fine-tunes through `model.init_from`."""

import json

import pytest
import torch

from seqlab.train.config import load_config
from seqlab.train.run import open_run, train

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is needed")

WORDS = ["the", "a", "film", "good", "bad", "great", "boring", "movie", "story", "plot",
         "##s", "##ly", "is", "was", "very", "not"]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    config = transformers.BertConfig(vocab_size=len(WORDS) + 5, hidden_size=16,
                                     num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.BertForMaskedLM(config).eval().save_pretrained(folder, safe_serialization=True)
    table = {token: i for i, token in enumerate(vocab.read_text().split())}
    transformers.BertTokenizerFast(vocab=table).save_pretrained(folder)
    return folder


def test_bert_classifier_starts_from_the_hf_weights(tmp_path, bert_dir, corpus):
    config = load_config("bert-classify", [
        f"data.train={corpus / 'labelled.tsv'}", "data.text_column=sentence",
        f"model.init_from={bert_dir}", "trainer.max_steps=1", "trainer.eval_every=1",
        "trainer.lr=1e-12", "trainer.warmup_steps=0", "trainer.progress=false"])
    result = train(config, tmp_path / "run")
    report = json.loads((result.run_dir / "init_from.json").read_text())
    assert sorted(report["new"]) == ["head.bias", "head.weight"]
    assert len(report["loaded"]) == 5 + 2 * 12  # embeddings + 12 tensors per layer
    _, task, model, _ = open_run(result.run_dir)
    text = "the good film is not boring"
    ids = task.tokenizer.encode(text)
    reference = transformers.BertModel.from_pretrained(bert_dir).eval()
    expected = transformers.BertTokenizerFast.from_pretrained(bert_dir)(
        text, add_special_tokens=False)["input_ids"]
    assert ids == expected
    with torch.no_grad():
        ours, _ = model.encoder(torch.tensor([ids]))
        theirs = reference(torch.tensor([ids])).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    saved = (result.run_dir / "config.yaml").read_text()
    assert "embedding_norm: true" in saved and "norm_first: false" in saved
