"""Checkpoints: safetensors + JSON sidecar round trips, atomic replacement, corruption checks."""

import json
import random

import numpy as np
import pytest
import torch

from seqlab.train.checkpoint import (
    CheckpointError,
    flatten_state,
    load_checkpoint,
    load_weights,
    rng_state,
    save_checkpoint,
    save_weights,
    set_rng_state,
    unflatten_state,
)


def _trained_pair(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        loss = model(torch.randn(5, 3)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, optimizer


def _assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


def test_round_trip_model_and_optimizer(tmp_path):
    model, optimizer = _trained_pair()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "counters": {"step": 3, "best": None, "name": "x"}, "carry": (torch.ones(2), torch.zeros(1))}
    save_checkpoint(tmp_path, state, step=3)
    loaded = load_checkpoint(tmp_path)
    _assert_same(state, loaded)

    # The loaded optimizer continues exactly like the original one.
    twin, twin_optimizer = _trained_pair(seed=1)
    twin.load_state_dict(loaded["model"])
    twin_optimizer.load_state_dict(loaded["optimizer"])
    x = torch.randn(5, 3)
    for m, opt in ((model, optimizer), (twin, twin_optimizer)):
        opt.zero_grad()
        m(x).pow(2).mean().backward()
        opt.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_sidecar_is_plain_json_and_old_tensors_are_removed(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.ones(2)}, step=1)
    save_checkpoint(tmp_path, {"w": torch.full((2,), 2.0)}, step=2)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["state-00000002.safetensors", "state.json"]
    sidecar = json.loads((tmp_path / "state.json").read_text())
    assert sidecar["step"] == 2 and sidecar["tensors"] == "state-00000002.safetensors"
    assert torch.equal(load_checkpoint(tmp_path)["w"], torch.full((2,), 2.0))


def test_crash_before_commit_keeps_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, {"w": torch.ones(2)}, step=1)
    from seqlab.train import checkpoint

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "atomic_write_text", crash)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, {"w": torch.zeros(2)}, step=2)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(tmp_path)["w"], torch.ones(2))


def test_corrupt_tensors_file_is_reported(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.ones(4)}, step=1)
    tensors = tmp_path / "state-00000001.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(tmp_path)


def test_corrupt_or_missing_sidecar(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, {"w": torch.ones(1)}, step=1)
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        load_checkpoint(tmp_path)


def test_weights_with_tied_parameters(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(7, 4), torch.nn.Linear(4, 7, bias=False))
    model[1].weight = model[0].weight  # tied, as in a language model with tie_weights
    save_weights(tmp_path / "model.safetensors", model)
    other = torch.nn.Sequential(torch.nn.Embedding(7, 4), torch.nn.Linear(4, 7, bias=False))
    other[1].weight = other[0].weight
    load_weights(tmp_path / "model.safetensors", other)
    assert torch.equal(other[0].weight, model[0].weight)
    assert other[1].weight.data_ptr() == other[0].weight.data_ptr()


def test_weights_that_do_not_fit(tmp_path):
    save_weights(tmp_path / "m.safetensors", torch.nn.Linear(3, 2))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_weights(tmp_path / "m.safetensors", torch.nn.Linear(3, 5))
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt weights"):
        load_weights(tmp_path / "bad.safetensors", torch.nn.Linear(3, 2))


def test_rng_states_round_trip(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.randn()  # leaves a cached Gaussian in numpy's state
    save_checkpoint(tmp_path, {"rng": rng_state()}, step=0)
    expected = (torch.rand(3), np.random.rand(3), np.random.randn(), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    set_rng_state(load_checkpoint(tmp_path)["rng"])
    again = (torch.rand(3), np.random.rand(3), np.random.randn(), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2:] == again[2:]


def test_flatten_rejects_objects():
    with pytest.raises(TypeError, match="cannot store"):
        flatten_state({"f": object()})
    tree, tensors = flatten_state({"a": [1, (2.5, "x")], "b": {"c": torch.arange(3)}})
    assert unflatten_state(tree, tensors)["a"] == [1, (2.5, "x")]
