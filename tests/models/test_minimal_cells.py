"""cell=mingru / minlstm in every recurrent model: stepping equals the whole sequence, recipes train."""

import json
import math

import pytest
import torch

from seqlab.decode import greedy_decode
from seqlab.models import (
    Captioner,
    LanguageModel,
    Seq2Seq,
    SequenceClassifier,
    SequenceTagger,
    recurrent_layer,
)
from seqlab.nn import MinGRU, MinLSTM
from seqlab.train.config import load_config
from seqlab.train.run import evaluate_run, predict_run, train

MINIMAL = ["mingru", "minlstm"]
PAD, BOS, EOS = 0, 2, 3


@pytest.mark.parametrize("cell, layer_type", [("mingru", MinGRU), ("minlstm", MinLSTM)])
def test_recurrent_layer_builds_the_minimal_layers(cell, layer_type):
    layer = recurrent_layer(cell, 3, 5, num_layers=2, dropout=0.1, bidirectional=True,
                            merge_mode="sum")
    assert isinstance(layer, layer_type) and layer.batch_first and layer.output_size == 5
    assert (layer.num_layers, layer.dropout, layer.merge_mode) == (2, 0.1, "sum")
    with pytest.raises(ValueError, match="peephole=True only applies to cell='lstm'"):
        recurrent_layer(cell, 3, 5, peephole=True)


@pytest.mark.parametrize("cell", MINIMAL)
def test_language_model_generation_carries_the_state(cell):
    torch.manual_seed(0)
    model = LanguageModel(10, 6, cell=cell, num_layers=2).double().eval()
    prompt = torch.randint(0, 10, (2, 4), generator=torch.Generator().manual_seed(1))
    generated = model.generate(prompt, max_new_tokens=6, temperature=0)
    # Greedy by hand, reading the whole prefix again at every step: the same tokens.
    tokens = prompt
    for _ in range(6):
        logits = model(tokens).logits[:, -1]  # (N, V)
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, tokens)

    # Truncated BPTT: two chunks with the carried state equal one pass.
    ids = torch.randint(0, 10, (2, 9), generator=torch.Generator().manual_seed(2))
    whole = model(ids)
    first = model(ids[:, :5])
    assert isinstance(first.state, torch.Tensor)  # h_n only: no cell state
    second = model(ids[:, 5:], model.detach_state(first.state))
    torch.testing.assert_close(torch.cat([first.logits, second.logits], 1), whole.logits)
    torch.testing.assert_close(second.state, whole.state)


@pytest.mark.parametrize("cell", MINIMAL)
def test_classifier_and_tagger_ignore_padding(cell):
    torch.manual_seed(0)
    classifier = SequenceClassifier(num_classes=3, vocab_size=12, embedding_dim=4, hidden_size=5,
                                    cell=cell, bidirectional=True, pooling="last").double().eval()
    tagger = SequenceTagger(num_tags=4, vocab_size=12, embedding_dim=4, hidden_size=5, cell=cell,
                            bidirectional=True, num_layers=2).double().eval()
    ids = torch.randint(1, 12, (2, 7), generator=torch.Generator().manual_seed(3))
    lengths = torch.tensor([7, 4])
    ids[1, 4:] = PAD
    classified = classifier(ids, lengths).logits
    tagged = tagger(ids, lengths).logits
    alone = ids[1:, :4]
    torch.testing.assert_close(classified[1:], classifier(alone, torch.tensor([4])).logits)
    torch.testing.assert_close(tagged[1:, :4], tagger(alone, torch.tensor([4])).logits)

    targets = torch.tensor([0, 2])
    loss = classifier(ids, lengths, targets=targets).loss
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(torch.isfinite(p.grad).all() for p in classifier.parameters() if p.grad is not None)


def _seq2seq_batch():
    generator = torch.Generator().manual_seed(1)
    src_lengths = torch.tensor([5, 2, 4])
    src = torch.randint(4, 9, (3, 6), generator=generator)
    src[torch.arange(6)[None, :] >= src_lengths[:, None]] = PAD
    tgt_lengths = torch.tensor([6, 3, 5])
    tgt = torch.randint(4, 11, (3, 6), generator=generator)
    tgt[:, 0] = BOS
    tgt[torch.arange(3), tgt_lengths - 1] = EOS
    tgt[torch.arange(6)[None, :] >= tgt_lengths[:, None]] = PAD
    return src, src_lengths, tgt


@pytest.mark.parametrize("cell", MINIMAL)
@pytest.mark.parametrize("bridge", ["projection", "last"])
def test_seq2seq_teacher_forcing_equals_stepping(cell, bridge):
    torch.manual_seed(0)
    # The projection bridge gives the decoder a first state of either sign (tanh).
    model = Seq2Seq(9, 11, embedding_dim=6, hidden_size=8, cell=cell, bridge=bridge,
                    num_layers=2, merge_mode="sum", attention="general").double().eval()
    src, src_lengths, tgt = _seq2seq_batch()
    with torch.no_grad():
        output = model(src, src_lengths, tgt)
        memory = model.encode(src, src_lengths)
        state = model.init_state(memory)
        log_probs = []
        for t in range(tgt.size(1) - 1):
            step_log_probs, state, _ = model.step(tgt[:, t], state, memory)
            log_probs.append(step_log_probs)
        decoded = greedy_decode(model, src, src_lengths, bos_id=BOS, eos_id=EOS, max_length=8)
    torch.testing.assert_close(output.logits.log_softmax(-1), torch.stack(log_probs, 1))
    assert len(decoded) == 3


@pytest.mark.parametrize("cell", MINIMAL)
def test_captioner_teacher_forcing_equals_stepping(cell):
    torch.manual_seed(0)
    model = Captioner(11, image_size=16, channels=(4, 6), embedding_dim=5, hidden_size=6,
                      cell=cell).double().eval()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)).double()
    tgt = torch.tensor([[BOS, 5, 6, 7, EOS], [BOS, 8, EOS, PAD, PAD]])
    with torch.no_grad():
        output = model(images, tgt)
        memory = model.encode(images)
        state = model.init_state(memory)
        log_probs = []
        for t in range(tgt.size(1) - 1):
            step_log_probs, state, _ = model.step(tgt[:, t], state, memory)
            log_probs.append(step_log_probs)
    torch.testing.assert_close(output.logits.log_softmax(-1), torch.stack(log_probs, 1))


def test_adding_recipe_trains_with_mingru(tmp_path):
    overrides = ["model.cell=mingru", "trainer.max_steps=20", "model.hidden_size=8",
                 "data.length=20", "data.train_size=64", "data.valid_size=16", "data.test_size=16",
                 "trainer.batch_size=8", "trainer.progress=false"]
    config = load_config("adding-lstm", overrides)
    result = train(config, tmp_path / "run")
    assert result.fit.step == 20
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert math.isfinite(summary["valid"]["loss"])
    assert evaluate_run(tmp_path / "run")["valid"] == pytest.approx(summary["valid"], rel=1e-6)


def test_charlm_recipe_trains_and_generates_with_mingru(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat. " * 40, encoding="utf-8")
    overrides = [f"data.train={text}", "model.cell=mingru", "model.hidden_size=16",
                 "model.embedding_dim=8", "data.bptt=16", "trainer.max_steps=5",
                 "trainer.batch_size=4", "trainer.eval_every=5", "trainer.progress=false",
                 "predict.max_new_tokens=12", "predict.num_samples=1"]
    train(load_config("charlm-lstm", overrides), tmp_path / "run")
    outputs = predict_run(tmp_path / "run", ["the "])
    assert len(outputs) == 1 and str(outputs[0]).startswith("the ")
