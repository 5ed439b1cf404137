"""`model.init_from`: exact tensors loaded, the report, the architecture taken, clear errors."""

import json

import pytest
import torch

from seqlab.cli import main
from seqlab.models.pretrained import load_matching, read_pretrained
from seqlab.models.registry import read_weights
from seqlab.train.config import ConfigError, load_config
from seqlab.train.run import open_run, train

from .conftest import TINY_TRAINER

CLASSIFY = ["data.text_column=sentence", "trainer.batch_size=8", "trainer.progress=false",
            "trainer.max_steps=1", "trainer.eval_every=1", "trainer.warmup_steps=0",
            "trainer.lr=1e-12"]


def _classify(tmp_path, corpus, recipe, run, *extra, name="classify"):
    config = load_config(recipe, [f"data.train={corpus / 'labelled.tsv'}", *CLASSIFY,
                                  f"model.init_from={run}", *extra])
    return config, train(config, tmp_path / name)


@pytest.mark.parametrize("recipe,family", [("bert-classify", "mlm_run"),
                                           ("classify-bilstm", "mlm_recurrent_run")])
def test_the_body_loads_bitwise_and_the_head_is_new(tmp_path, corpus, recipe, family, request):
    source = request.getfixturevalue(family)
    _, result = _classify(tmp_path, corpus, recipe, source)
    # The architecture and the tokenizer are the pre-trained run's, whatever the recipe says.
    saved, _ = read_weights(source / "model.safetensors")
    _, task, model, _ = open_run(result.run_dir)
    assert task.tokenizer.to_dict() == json.loads((source / "tokenizer.json").read_text())
    report = json.loads((result.run_dir / "init_from.json").read_text())
    assert sorted(report["new"]) == ["head.bias", "head.weight"]
    assert {"decoder.bias", "transform.weight"} <= set(report["unused"])
    assert len(report["loaded"]) == len(model.state_dict()) - 2
    # With the body frozen, a training step leaves the loaded tensors as they were, to the bit.
    fresh = train(load_config(recipe, [f"data.train={corpus / 'labelled.tsv'}", *CLASSIFY,
                                       f"model.init_from={source}", "trainer.max_steps=1",
                                       "trainer.lr=1e-3", "trainer.freeze=body"]),
                  tmp_path / "frozen")
    _, _, frozen_model, _ = open_run(fresh.run_dir)
    for name in report["loaded"]:
        assert torch.equal(frozen_model.state_dict()[name], saved[name]), name


def test_loaded_tensors_equal_the_saved_ones_before_training(mlm_run):
    source = read_pretrained(mlm_run)
    from seqlab.models.registry import load

    model = load(mlm_run)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    report = load_matching(model, source.state)
    assert not report.new and not report.unused
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, source.state[name]), name


def test_recipe_sizes_give_way_and_explicit_contradictions_are_errors(tmp_path, corpus, mlm_run):
    import yaml

    _, result = _classify(tmp_path, corpus, "bert-classify", mlm_run)
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    model = saved["model"]
    assert model["d_model"] == 16 and model["num_layers"] == 1 and model["max_length"] == 16
    assert model["init_from"] == str(mlm_run)
    assert saved["data"]["max_length"] == 16  # shrunk to the encoder's positions
    with pytest.raises(ConfigError, match=r"model.d_model=32 contradicts .* whose d_model is 16"):
        _classify(tmp_path, corpus, "bert-classify", mlm_run, "model.d_model=32", name="bad")
    # the same value given explicitly is fine
    _classify(tmp_path, corpus, "bert-classify", mlm_run, "model.d_model=16", name="same")


def test_a_shape_mismatch_names_the_key_and_both_shapes(mlm_run):
    from seqlab.models import TransformerClassifier, TransformerEncoderModel

    source = read_pretrained(mlm_run)
    wider = TransformerClassifier(TransformerEncoderModel(
        source.state["encoder.embedding.token.weight"].shape[0] + 3, d_model=16, nhead=2,
        num_layers=1, max_length=16), 2)
    with pytest.raises(ValueError, match=r"encoder.embedding.token.weight has shape \(\d+, 16\) "
                                         r"in the pre-trained model but \(\d+, 16\) here"):
        load_matching(wider, source.state)
    deeper = TransformerClassifier(TransformerEncoderModel(
        source.state["encoder.embedding.token.weight"].shape[0], d_model=8, nhead=2,
        num_layers=1, max_length=16), 2)
    with pytest.raises(ValueError, match="architectures differ"):
        load_matching(deeper, source.state)


def test_another_family_or_a_missing_directory_is_a_one_line_error(tmp_path, corpus, mlm_run,
                                                                  capsys):
    code = main(["train", "classify-bilstm", f"data.train={corpus / 'labelled.tsv'}",
                 *CLASSIFY, f"model.init_from={mlm_run}", "--run-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "is a transformer model" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
    code = main(["train", "bert-classify", f"data.train={corpus / 'labelled.tsv'}",
                 *CLASSIFY, f"model.init_from={tmp_path / 'nowhere'}"])
    assert code == 2 and "no such directory" in capsys.readouterr().err


def test_a_classifier_fine_tunes_from_another_classifier_with_other_labels(tmp_path, corpus,
                                                                          mlm_run):
    _, first = _classify(tmp_path, corpus, "bert-classify", mlm_run, name="first")
    labels = tmp_path / "three.tsv"
    rows = (corpus / "labelled.tsv").read_text().splitlines()
    labels.write_text("\n".join([rows[0]] + [r.rsplit("\t", 1)[0] + f"\tc{i % 3}"
                                             for i, r in enumerate(rows[1:])]) + "\n")
    config = load_config("bert-classify", [f"data.train={labels}", *CLASSIFY,
                                           f"model.init_from={first.run_dir}"])
    result = train(config, tmp_path / "second")
    report = json.loads((result.run_dir / "init_from.json").read_text())
    assert sorted(report["reinitialised"]) == ["head.bias", "head.weight"]


def test_freeze_patterns(tmp_path, corpus, mlm_run, capsys):
    code = main(["train", "bert-classify", f"data.train={corpus / 'labelled.tsv'}", *CLASSIFY,
                 f"model.init_from={mlm_run}", "trainer.freeze=nothing.*",
                 "--run-dir", str(tmp_path / "f")])
    err = capsys.readouterr().err
    assert code == 2 and "matches no parameter" in err and "encoder.embedding" in err


def test_freezing_the_body_of_a_tied_language_model_is_refused_with_the_reason():
    from seqlab.models import TransformerLM
    from seqlab.models.pretrained import freeze_parameters

    tied = TransformerLM(30, d_model=8, nhead=2, num_layers=1, max_length=8)
    with pytest.raises(ValueError, match="nothing to train: its head has no weights of its own"):
        freeze_parameters(tied, ["body"])
    assert all(p.requires_grad for p in tied.parameters())  # nothing changed
    untied = TransformerLM(30, d_model=8, nhead=2, num_layers=1, max_length=8, tie_weights=False)
    frozen = freeze_parameters(untied, ["body"])
    trainable = {n for n, p in untied.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in untied.named_parameters() if n.startswith("head.")}
    assert trainable and not trainable & set(frozen)
    with pytest.raises(ValueError, match="every parameter matches"):
        freeze_parameters(untied, ["*"])


def test_init_from_continues_pre_training_and_causal_lm(tmp_path, corpus, mlm_run):
    from .conftest import pretrain

    again = pretrain(tmp_path / "again", corpus, f"model.init_from={mlm_run}")
    report = json.loads((again.run_dir / "init_from.json").read_text())
    assert not report["new"] and not report["unused"]
    clm_options = [f"data.train={corpus / 'text.txt'}", "data.bpe_vocab_size=80",
                   "data.bptt=8", "model.transformer.d_model=16", "model.transformer.nhead=2",
                   "model.transformer.num_layers=1", "model.transformer.max_length=8",
                   "model.recurrent.hidden_size=8", "model.recurrent.embedding_dim=8",
                   *TINY_TRAINER]
    for family in ("transformer", "recurrent"):
        first = train(load_config("pretrain-clm", [*clm_options, f"model.family={family}"]),
                      tmp_path / f"clm-{family}")
        second = train(load_config("pretrain-clm", [*clm_options,
                                                    f"model.init_from={first.run_dir}"]),
                       tmp_path / f"clm-{family}-2")
        assert second.summary["run"]["num_parameters"] == first.summary["run"]["num_parameters"]
        assert json.loads((second.run_dir / "init_from.json").read_text())["new"] == []
        assert "family: " + family in (second.run_dir / "config.yaml").read_text()


def test_a_tagger_reads_each_token_as_its_first_sub_word_piece(tmp_path, corpus,
                                                               mlm_recurrent_run):
    from .conftest import sentences

    conll = tmp_path / "train.conll"
    blocks = ["\n".join(f"{word}\t{'N' if len(word) > 4 else 'X'}" for word in text.split())
              for text in sentences(40, seed=5)]
    conll.write_text("\n\n".join(blocks) + "\n")
    config = load_config("tag-bilstm", [f"data.train={conll}", "trainer.max_steps=2",
                                        "trainer.batch_size=8", "trainer.progress=false",
                                        f"model.init_from={mlm_recurrent_run}"])
    result = train(config, tmp_path / "tagger")
    _, task, _, _ = open_run(result.run_dir)
    tokenizer = task.tokenizer
    assert tokenizer.kind == "wordpiece"
    words = ["the", "boring", "queenly"]
    assert task._token_ids(words) == [tokenizer.encode(word)[0] for word in words]
    assert len(task._token_ids(words)) == len(words)
