"""Every model family rebuilds from its stored spec and gives the same outputs."""

import json

import pytest
import torch
from safetensors import safe_open

from seqlab import models
from seqlab.models.registry import SPEC_METADATA_KEY
from seqlab.train.checkpoint import save_weights


def _encoder():
    return models.TransformerEncoderModel(30, d_model=16, nhead=2, num_layers=1, max_length=12)


FAMILIES = {
    "classifier": (lambda: models.SequenceClassifier(3, 8, vocab_size=30, embedding_dim=6,
                                                     bidirectional=True, pooling="mean"),
                   lambda m, x, n: m(x, lengths=n).logits),
    "encoder": (lambda: models.SequenceClassifier(0, 8, cell="gru", vocab_size=30, pooling="max"),
                lambda m, x, n: m(x, lengths=n).pooled),
    "tagger": (lambda: models.SequenceTagger(4, 8, vocab_size=30, embedding_dim=6),
               lambda m, x, n: m(x, lengths=n).logits),
    "language_model": (lambda: models.LanguageModel(30, 8, embedding_dim=6, cell="gru"),
                       lambda m, x, n: m(x).logits),
    "recurrent_mlm": (lambda: models.RecurrentMaskedLM(30, hidden_size=8, embedding_dim=6),
                      lambda m, x, n: m(x, lengths=n).logits),
    "seq2seq": (lambda: models.Seq2Seq(30, 30, embedding_dim=6, hidden_size=8),
                lambda m, x, n: m(x, n, x).logits),
    "transformer_classifier": (lambda: models.TransformerClassifier(_encoder(), 3, pooling="cls"),
                               lambda m, x, n: m(x, lengths=n).logits),
    "transformer_tagger": (lambda: models.TransformerTagger(_encoder(), 5),
                           lambda m, x, n: m(x, lengths=n).logits),
    "transformer_mlm": (lambda: models.TransformerMaskedLM(_encoder()),
                        lambda m, x, n: m(x, lengths=n).logits),
    "transformer_lm": (lambda: models.TransformerLM(30, d_model=16, nhead=2, num_layers=1,
                                                    max_length=12),
                       lambda m, x, n: m(x).logits),
    "transformer_seq2seq": (lambda: models.TransformerSeq2Seq(30, 30, d_model=16, nhead=2,
                                                              num_encoder_layers=1,
                                                              num_decoder_layers=1),
                            lambda m, x, n: m(x, n, x).logits),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_load_rebuilds_every_family_from_its_weights_file(tmp_path, family):
    build, run = FAMILIES[family]
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randint(5, 30, (3, 7))
    lengths = torch.tensor([7, 4, 2])
    x[1, 4:] = 0
    x[2, 2:] = 0
    path = tmp_path / "model.safetensors"
    save_weights(path, model)
    loaded = models.load(path)
    assert type(loaded) is type(model) and not loaded.training
    with torch.no_grad():
        assert torch.equal(run(loaded, x, lengths), run(model, x, lengths))
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_the_captioner_round_trips(tmp_path):
    torch.manual_seed(0)
    model = models.Captioner(20, image_size=16, channels=(4, 8), embedding_dim=6, hidden_size=8)
    model.eval()
    save_weights(tmp_path / "model.safetensors", model)
    loaded = models.load(tmp_path)
    images = torch.randn(2, 3, 16, 16)
    captions = torch.randint(5, 20, (2, 5))
    with torch.no_grad():
        assert torch.equal(loaded(images, captions).logits, model(images, captions).logits)


def test_the_spec_is_plain_json_in_the_metadata(tmp_path):
    model = models.TransformerClassifier(_encoder(), 2)
    save_weights(tmp_path / "model.safetensors", model)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as handle:
        spec = json.loads(handle.metadata()[SPEC_METADATA_KEY])
    assert spec["class"] == "TransformerClassifier"
    assert spec["args"]["encoder"]["class"] == "TransformerEncoderModel"
    assert spec["args"]["encoder"]["args"]["d_model"] == 16
    assert spec == models.model_spec(model)


def test_unknown_classes_and_files_without_a_spec_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not a registered seqlab model"):
        models.build_model({"class": "os.system", "args": {}})
    with pytest.raises(TypeError, match="register_model"):
        models.model_spec(torch.nn.Linear(2, 2))
    save_weights(tmp_path / "plain.safetensors", torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="does not store its model's spec"):
        models.load(tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="no model.safetensors"):
        models.load(tmp_path / "missing")


def test_a_damaged_weights_file_is_named(tmp_path):
    save_weights(tmp_path / "model.safetensors", models.TransformerClassifier(_encoder(), 2))
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt weights file .*model.safetensors"):
        models.load(tmp_path)
