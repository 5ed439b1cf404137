"""Translation's vocabularies (joint or separate), the decoder's options that go with them, and
`seqlab predict`'s `predict.*` settings."""

import pytest
import torch
import yaml

from seqlab.models import Seq2Seq
from seqlab.train.checkpoint import save_weights
from seqlab.train.config import load_config
from seqlab.train.run import build_task, open_run, predict_run

# German-like sources, English-like targets: only "zwei" / "two" style pairs, plus one word
# ("berlin") on both sides and one ("xaver") that only the sources use.
PAIRS = [("ein hund läuft", "a dog runs"), ("zwei hunde laufen", "two dogs run"),
         ("ein mann in berlin", "a man in berlin"), ("xaver läuft", "someone runs")] * 6
SMALL = ["model.hidden_size=8", "model.embedding_dim=8", "data.min_frequency=1",
         "trainer.batch_size=4", "trainer.progress=false"]


def _write(path, pairs=PAIRS):
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return path


def _task(tmp_path, *overrides):
    config = load_config("translate-gru-attn", [f"data.train={_write(tmp_path / 'pairs.tsv')}",
                                                "data.valid_fraction=0.2", *SMALL, *overrides])
    task = build_task(config)
    task.prepare()
    return config, task


def _save_run(tmp_path, config, task, name="run"):
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    task.save_artifacts(run_dir)
    save_weights(run_dir / "model.safetensors", task.build_model())
    return run_dir


def _types(tokenizer):
    return {tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)}


def test_separate_output_layer_covers_exactly_the_target_types(tmp_path):
    _, task = _task(tmp_path, "data.vocab=separate")
    source, target = _types(task.source_tokenizer), _types(task.tokenizer)
    t = task.tokenizer
    specials = {t.id_to_token(i) for i in (t.pad_id, t.unk_id, t.bos_id, t.eos_id)}
    train_targets = {word for index in range(len(task.examples["train"]))
                     for word in task.tokenizer.decode(task.examples["train"][index][1]).split()}
    assert target - specials - {"<mask>"} == train_targets == {"a", "dog", "runs", "two", "dogs",
                                                                "run", "man", "in", "berlin",
                                                                "someone"}
    assert "xaver" in source and "xaver" not in target
    assert "dogs" in target and "dogs" not in source
    model = task.build_model()
    assert model.decoder.out.out_features == task.tokenizer.vocab_size
    assert model.encoder.embedding.num_embeddings == task.source_tokenizer.vocab_size


def test_joint_vocabulary_is_one_tokenizer_for_both_sides(tmp_path):
    _, task = _task(tmp_path, "data.vocab=joint")
    assert task.source_tokenizer is task.tokenizer
    assert {"xaver", "dogs"} <= _types(task.tokenizer)


def test_a_source_only_word_is_never_produced(tmp_path):
    _config, task = _task(tmp_path, "data.vocab=separate")
    model = task.build_model().eval()
    with torch.no_grad():
        # With separate vocabularies the output layer has no row for "xaver" at all.
        outputs = task.predict(model, ["xaver xaver xaver", "xaver läuft"], torch.device("cpu"))
    assert all("xaver" not in output.split() for output in outputs)
    # A joint vocabulary can: an output bias towards it is enough.
    _joint_config, joint = _task(tmp_path, "data.vocab=joint")
    joint_model = joint.build_model().eval()
    xaver = joint.tokenizer.encode("xaver")[0]
    with torch.no_grad():
        joint_model.decoder.out.bias.fill_(-10.0)
        joint_model.decoder.out.bias[xaver] = 10.0
        joint_model.decoder.out.bias[joint.tokenizer.eos_id] = 9.0
        produced = joint.predict(joint_model, ["xaver läuft"], torch.device("cpu"))
    assert "xaver" in produced[0].split()  # the same bias does reach it in a joint vocabulary


def test_separate_run_reloads_and_needs_its_source_tokenizer(tmp_path):
    config, task = _task(tmp_path, "data.vocab=separate")
    run_dir = _save_run(tmp_path, config, task)
    assert (run_dir / "source_tokenizer.json").is_file()
    _, loaded, _model, _ = open_run(run_dir)
    assert loaded.source_tokenizer.encode("xaver läuft") == task.source_tokenizer.encode("xaver läuft")
    assert loaded.tokenizer.encode("two dogs") == task.tokenizer.encode("two dogs")
    (run_dir / "source_tokenizer.json").unlink()
    with pytest.raises(Exception, match="source_tokenizer.json"):
        open_run(run_dir)


def test_run_saved_before_the_vocab_key_loads_as_joint(tmp_path):
    config, task = _task(tmp_path, "data.vocab=joint")
    run_dir = _save_run(tmp_path, config, task)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    del saved["data"]["vocab"]  # a config written before data.vocab existed
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    _, loaded, _model, _ = open_run(run_dir)
    assert loaded.source_tokenizer is loaded.tokenizer
    assert not (run_dir / "source_tokenizer.json").exists()
    assert len(predict_run(run_dir, ["ein hund läuft"])) == 1


def test_tied_output_layer_is_the_target_embedding(tmp_path):
    _, task = _task(tmp_path, "data.vocab=separate", "model.tie_embeddings=true")
    model = task.build_model()
    assert model.decoder.out.weight is model.decoder.embedding.weight
    task.model_config = task.model_config.model_copy(update={"tie_embeddings": False})
    difference = task.build_model().num_parameters() - model.num_parameters()
    assert difference == task.tokenizer.vocab_size * 8
    with pytest.raises(ValueError, match="embedding_dim == hidden_size"):
        Seq2Seq(10, 10, embedding_dim=4, hidden_size=8, tie_embeddings=True)


def test_concat_attention_reads_after_the_step_with_input_feeding():
    torch.manual_seed(0)
    model = Seq2Seq(12, 11, embedding_dim=6, hidden_size=8, attention="concat",
                    input_feeding=True).eval()
    src = torch.randint(4, 12, (3, 5))
    lengths = torch.tensor([5, 3, 4])
    tgt = torch.randint(4, 11, (3, 6))
    logits = model(src, lengths, tgt).logits  # the sequence path: advance per step, one output layer
    memory = model.encode(src, lengths)
    state = model.init_state(memory)
    decoder = model.decoder
    for t in range(5):
        # Written out: s_t = GRU([e_t; o_{t-1}], s_{t-1}); c_t = additive attention with query s_t;
        # o_t = tanh(W_c [c_t; s_t]); logits = W_out o_t + b.
        embedded = decoder.embedding(tgt[:, t])
        previous = state.hidden
        output, _hidden = decoder.rnn(torch.cat([embedded, state.feed], -1).unsqueeze(1), previous)
        query = output.squeeze(1)
        scores = torch.tanh(decoder.attention.query_proj(query)[:, None]
                            + decoder.attention.key_proj(memory.outputs)) @ decoder.attention.v
        scores = scores.masked_fill(~memory.mask, float("-inf"))
        context = (scores.softmax(-1)[:, :, None] * memory.outputs).sum(1)
        attentional = torch.tanh(decoder.combine(torch.cat([context, query], -1)))
        torch.testing.assert_close(decoder.out(attentional), logits[:, t], rtol=1e-5, atol=1e-6)
        step_logits, state, _ = decoder.step(tgt[:, t], state, memory)
        torch.testing.assert_close(step_logits, logits[:, t], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="'concat'"):
        Seq2Seq(12, 11, attention="bahdanau", input_feeding=True)


def test_predict_settings_are_parsed_like_eval(tmp_path, capsys):
    from seqlab.cli import _split_overrides, main
    from seqlab.schema import ConfigError

    assert _split_overrides(["predict.beam_size=1", "ein hund", "a.b=c"]) == (
        ["predict.beam_size=1"], ["ein hund", "a.b=c"])
    assert _split_overrides(["x=1 y"]) == ([], ["x=1 y"])
    config, task = _task(tmp_path, "data.vocab=separate")
    run_dir = _save_run(tmp_path, config, task)
    greedy = predict_run(run_dir, ["ein hund läuft"], ["predict.beam_size=1"])
    capped = predict_run(run_dir, ["ein hund läuft"], ["predict.beam_size=1", "predict.max_length=2"])
    assert len(capped[0].split()) <= 2  # two steps, the end token included
    assert capped[0].split() == greedy[0].split()[: len(capped[0].split())]
    assert main(["predict", str(run_dir), "predict.beam_size=2", "ein hund läuft"]) == 0
    assert capsys.readouterr().out.count("\n") == 1  # one line per input (may be empty)
    with pytest.raises(ConfigError, match="beam_sise"):
        predict_run(run_dir, ["ein hund"], ["predict.beam_sise=2"])
    with pytest.raises(ConfigError, match="beam_size"):
        predict_run(run_dir, ["ein hund"], ["predict.beam_size=0"])


@pytest.mark.parametrize("recipe", ["translate-gru-attn", "translate-transformer"])
def test_validation_loss_is_the_plain_likelihood_without_label_smoothing(tmp_path, recipe):
    sizes = (SMALL if recipe == "translate-gru-attn" else
             ["model.d_model=8", "model.nhead=2", "model.num_layers=1", "model.dim_feedforward=16",
              "data.min_frequency=1", "trainer.batch_size=4", "trainer.progress=false"])
    config = load_config(recipe, [f"data.train={_write(tmp_path / 'pairs.tsv')}",
                                  "data.valid_fraction=0.2", "model.label_smoothing=0.3", *sizes])
    task = build_task(config)
    task.prepare()
    torch.manual_seed(0)
    model = task.build_model().eval()
    metrics = task.evaluate(model, "valid", 4, torch.device("cpu"))
    batch = task._collate([task.examples["valid"][i] for i in range(len(task.examples["valid"]))])
    with torch.no_grad():
        out = model(batch["src"], batch["src_lengths"], batch["tgt"])
    targets = batch["tgt"][:, 1:]
    log_probs = out.logits.log_softmax(-1)
    nll, count = 0.0, 0
    for n in range(targets.size(0)):  # -log p(target token), padding left out
        for t in range(targets.size(1)):
            if targets[n, t] != task.tokenizer.pad_id:
                nll -= float(log_probs[n, t, targets[n, t]])
                count += 1
    assert metrics["loss"] == pytest.approx(nll / count, rel=1e-5)
    assert abs(float(out.loss) - nll / count) > 1e-3  # the smoothed training loss is another number
