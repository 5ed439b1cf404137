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


def test_a_bert_vocabulary_with_its_special_tokens_elsewhere_is_renumbered(tmp_path, corpus):
    """Published BERT vocabularies put [UNK] at 100; seqlab moves the five special tokens to ids
    0..4 and the embedding rows with them, so the encoder computes the same thing."""
    folder = tmp_path / "bert"
    folder.mkdir()
    tokens = ["[PAD]", *WORDS[:8], "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS[8:]]
    config = transformers.BertConfig(vocab_size=len(tokens), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=32)
    torch.manual_seed(1)
    transformers.BertModel(config).eval().save_pretrained(folder, safe_serialization=True)
    transformers.BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}).save_pretrained(folder)
    run = train(load_config("bert-classify", [
        f"data.train={corpus / 'labelled.tsv'}", "data.text_column=sentence",
        f"model.init_from={folder}", "trainer.max_steps=1", "trainer.eval_every=1",
        "trainer.lr=1e-12", "trainer.warmup_steps=0", "trainer.progress=false"]), tmp_path / "run")
    _, task, model, _ = open_run(run.run_dir)
    assert [task.tokenizer.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]",
                                                                 "[SEP]", "[MASK]"]
    text = "the good film is not boring"
    ours_ids = task.tokenizer.encode(text)
    theirs_ids = transformers.BertTokenizerFast.from_pretrained(folder)(
        text, add_special_tokens=False)["input_ids"]
    assert [task.tokenizer.id_to_token(i) for i in ours_ids] == [tokens[i] for i in theirs_ids]
    assert ours_ids != theirs_ids  # the ids moved
    reference = transformers.BertModel.from_pretrained(folder).eval()
    with torch.no_grad():
        ours, _ = model.encoder(torch.tensor([ours_ids]))
        theirs = reference(torch.tensor([theirs_ids])).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
