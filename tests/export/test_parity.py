"""ONNX parity: onnxruntime against torch for every family at three lengths, and greedy
decoding through the exported graphs token for token."""

import numpy as np
import onnxruntime
import pytest
import torch

from seqlab.decode import greedy_decode
from seqlab.export import open_export, read_manifest
from seqlab.train.run import open_run

TOLERANCE = 1e-4


_OPENED = {}


def opened(runs, name):
    """(task, torch model, exported model) of a family, opened once for all its lengths."""
    if name not in _OPENED:
        run_dir, onnx_dir = runs[name]
        _, _, model, _ = open_run(run_dir, ["trainer.device=cpu"])
        _, task, exported = open_export(onnx_dir)
        _OPENED[name] = task, model, exported
    return _OPENED[name]


def id_batch(vocab_size, batch, length, seed):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (batch, length), generator=generator)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length  # the longest row sets the padded length
    ids[torch.arange(length)[None, :] >= lengths[:, None]] = 0
    return ids, lengths


@pytest.mark.parametrize("name", ["classifier", "classifier-transformer", "tagger"])
@pytest.mark.parametrize("length", [1, 6, 16])
def test_classifier_and_tagger_logits_match_torch(runs, name, length):
    task, model, exported = opened(runs, name)
    ids, lengths = id_batch(task.tokenizer.vocab_size, 4, length, seed=length)
    with torch.no_grad():
        expected = model(ids, lengths=lengths).logits
    got = exported(ids, lengths=lengths).logits
    if expected.dim() == 3:  # taggers: the real tokens only
        valid = torch.arange(length)[None, :] < lengths[:, None]
        expected, got = expected[valid], got[valid]
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= TOLERANCE


@pytest.mark.parametrize("name", ["lm", "lm-transformer"])
@pytest.mark.parametrize("prompt_length", [1, 5, 11])
def test_language_model_step_graph_matches_torch(runs, name, prompt_length):
    """The prompt with an empty state, then three single-token steps with the carried state."""
    task, model, exported = opened(runs, name)
    ids, _ = id_batch(task.tokenizer.vocab_size, 2, prompt_length + 3, seed=prompt_length)
    ids = ids.clamp(min=5)
    with torch.no_grad():
        if name == "lm":
            expected = model(ids).logits  # a recurrent pass over everything at once
        else:
            cache = model.new_cache()
            expected = torch.cat([model(ids[:, :prompt_length], state=cache).logits] + [
                model(ids[:, t:t + 1], state=cache).logits
                for t in range(prompt_length, prompt_length + 3)], dim=1)
    state = exported._empty_state(2)
    out = exported(ids[:, :prompt_length], state)
    pieces = [out.logits]
    for t in range(prompt_length, prompt_length + 3):
        out = exported(ids[:, t:t + 1], out.state)
        pieces.append(out.logits)
    got = torch.cat(pieces, dim=1)
    assert (got - expected).abs().max() <= TOLERANCE


def numpy_greedy(session_path, info, prompt, steps, family):
    """Greedy generation with onnxruntime and numpy alone: no torch in the loop."""
    session = onnxruntime.InferenceSession(str(session_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    ids = np.array([prompt], dtype=np.int64)
    if family == "lm":
        zeros = np.zeros((info["num_layers"], 1, info["hidden_size"]), dtype=np.float32)
        state = {"h": zeros, "c": zeros} if info["cell"] == "lstm" else {"h": zeros}
    else:
        empty = np.zeros((1, info["num_heads"], 0, info["head_dim"]), dtype=np.float32)
        state = {f"past_{kind}_{i}": empty for i in range(info["num_layers"])
                 for kind in ("key", "value")}
    tokens = []
    for _ in range(steps):
        outputs = dict(zip(names, session.run(None, {"input_ids": ids, **state})))
        next_id = int(outputs["logits"][0, -1].argmax())
        tokens.append(next_id)
        ids = np.array([[next_id]], dtype=np.int64)
        state = {name: outputs[name.replace("past", "present") if family != "lm" else f"{name}_out"]
                 for name in state}
    return tokens


@pytest.mark.parametrize("name", ["lm", "lm-transformer"])
def test_greedy_generation_through_onnx_gives_the_same_tokens(runs, name):
    task, model, _ = opened(runs, name)
    _, onnx_dir = runs[name]
    info = read_manifest(onnx_dir)["model"]
    prompt = task.tokenizer.encode("The ")
    expected = model.generate(torch.tensor([prompt]), max_new_tokens=10, temperature=0)
    got = numpy_greedy(onnx_dir / "model.onnx", info, prompt, 10, name)
    assert got == expected[0, len(prompt):].tolist()


@pytest.mark.parametrize("name", ["lm", "lm-transformer"])
def test_exported_model_samples_the_same_tokens_past_its_positions(runs, name):
    # 40 new tokens after a 5-token prompt: past model.max_length=16, so the Transformer's cache
    # gives way to the sliding window in both; a seeded generator makes the draws comparable.
    task, model, exported = opened(runs, name)
    prompt = torch.tensor([task.tokenizer.encode("The k")] * 2)
    expected = model.generate(prompt, 40, temperature=0.9, generator=torch.Generator().manual_seed(5))
    got = exported.generate(prompt, 40, temperature=0.9, generator=torch.Generator().manual_seed(5))
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    "name", ["seq2seq", "seq2seq-luong", "seq2seq-concat", "seq2seq-transformer",
             "seq2seq-transformer-wide-source"])
@pytest.mark.parametrize("length", [1, 4, 9])
def test_encoder_decoder_steps_and_greedy_tokens_match_torch(runs, name, length):
    task, model, exported = opened(runs, name)
    src, src_lengths = id_batch(task.source_tokenizer.vocab_size, 3, length, seed=length)
    with torch.no_grad():
        memory, onnx_memory = model.encode(src, src_lengths), exported.encode(src, src_lengths)
        state, onnx_state = model.init_state(memory), exported.init_state(onnx_memory)
        prev = torch.full((3,), task.tokenizer.bos_id)
        for _ in range(4):
            log_probs, state, _ = model.step(prev, state, memory)
            onnx_log_probs, onnx_state, _ = exported.step(prev, onnx_state, onnx_memory)
            assert (onnx_log_probs - log_probs).abs().max() <= TOLERANCE
            prev = log_probs.argmax(-1)
        bos, eos = task.tokenizer.bos_id, task.tokenizer.eos_id
        expected = greedy_decode(model, src, src_lengths, bos, eos)
        got = greedy_decode(exported, src, src_lengths, bos, eos)
    assert [tokens for tokens, _ in got] == [tokens for tokens, _ in expected]




def test_captioner_steps_and_greedy_tokens_match_torch(runs):
    task, model, exported = opened(runs, "captioner")
    bos, eos = task.tokenizer.bos_id, task.tokenizer.eos_id
    for batch in (1, 3, 5):
        images = torch.rand(batch, 3, 16, 16, generator=torch.Generator().manual_seed(batch))
        ones = torch.ones(batch, dtype=torch.long)
        with torch.no_grad():
            memory, onnx_memory = model.encode(images, ones), exported.encode(images, ones)
            state, onnx_state = model.init_state(memory), exported.init_state(onnx_memory)
            prev = torch.full((batch,), bos)
            for _ in range(3):
                log_probs, state, weights = model.step(prev, state, memory)
                onnx_log_probs, onnx_state, onnx_weights = exported.step(prev, onnx_state,
                                                                         onnx_memory)
                assert (onnx_log_probs - log_probs).abs().max() <= TOLERANCE
                assert (onnx_weights - weights).abs().max() <= TOLERANCE
                prev = log_probs.argmax(-1)
            expected = greedy_decode(model, images, ones, bos, eos, max_length=8)
            got = greedy_decode(exported, images, ones, bos, eos, max_length=8)
        assert [tokens for tokens, _ in got] == [tokens for tokens, _ in expected]
