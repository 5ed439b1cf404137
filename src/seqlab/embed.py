"""Sentence embeddings from any run, and the linear probe that compares sentence encoders.

    seqlab embed RUN [TEXT ...] [--format jsonl|npy] [--out FILE] [--batch-size N]
    seqlab probe RUN data.train=PATH [data.valid=PATH] data.test=PATH [data.text_column=...]
                 [data.label_column=...] [probe.C=...] [--random-init]

A sentence vector is the model's ``pooled`` output where it has one (a classifier's features, a
contrastive encoder's pooled vector) and otherwise the mean of its last hidden states over the
real tokens (a masked or causal language model). The probe is the standard way to compare
encoders (SentEval; Conneau & Kiela 2018): the encoder stays frozen, a logistic regression
(scikit-learn) is fitted on its vectors of the training sentences, and its accuracy on the test
sentences is reported. With a validation file, the regularisation strength C is chosen on it.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from seqlab.schema import ConfigError, StrictModel

__all__ = ["ProbeConfig", "embed_texts", "encode_texts", "open_encoder", "probe",
           "sentence_vectors"]


def sentence_vectors(
    model: torch.nn.Module, ids: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """(N, H) sentence vectors of a padded batch `ids` (N, L) with `lengths` (N,)."""
    if "lengths" in inspect.signature(model.forward).parameters:
        out = model(ids, lengths=lengths)
    else:
        # A model without padding support (the recurrent language model) reads each row alone.
        return torch.cat([
            _mean_hidden_alone(model, ids[i : i + 1, : int(lengths[i])])
            for i in range(ids.size(0))
        ])
    pooled = getattr(out, "pooled", None)
    if pooled is not None:
        return pooled
    hidden = getattr(out, "hidden", None)
    if hidden is None:
        raise ConfigError(
            f"{type(model).__name__} gives no hidden states to embed with; use a classifier, "
            f"encoder (pre-training) or language-model run"
        )
    valid = (torch.arange(ids.size(1), device=ids.device)[None, :] < lengths[:, None])  # (N, L)
    valid = valid.to(hidden.dtype)[..., None]  # (N, L, 1)
    return (hidden * valid).sum(1) / valid.sum(1)  # (N, H)


def _mean_hidden_alone(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    hidden = model(ids).hidden  # (1, L, H)
    return hidden.mean(1)  # (1, H)


def _token_ids(task, texts: list[str]) -> list[list[int]]:
    tokenizer = task.tokenizer
    if tokenizer is None:
        raise ConfigError("this run has no tokenizer: seqlab embed reads text runs only")
    data = getattr(task, "data", None)
    limit = getattr(data, "max_length", None)
    model_config = getattr(task, "model_config", None)
    family = getattr(model_config, "family", None)
    if family is not None:  # nested family sections (pre-training tasks)
        model_config = getattr(model_config, family, model_config)
    positions = getattr(model_config, "max_length", None)
    if isinstance(positions, int):
        limit = min(limit or positions, positions)
    return [tokenizer.encode(text)[:limit] or [tokenizer.unk_id] for text in texts]


def open_encoder(run_dir: str | Path, random_init: bool = False, seed: int = 0):
    """(task, model, device) of a run, the model in eval mode; with `random_init` the same
    architecture freshly initialised with `seed` (the untrained baseline)."""
    from seqlab.train.run import open_run

    _, task, model, device = open_run(run_dir)
    if random_init:
        from seqlab.models.registry import build_model, model_spec

        torch.manual_seed(seed)
        model = build_model(model_spec(model)).to(device)
    return task, model.eval(), device


@torch.no_grad()
def encode_texts(task, model, device, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """(len(texts), H) float32 sentence vectors of an opened encoder (see :func:`open_encoder`)."""
    from seqlab.data.batching import pad_sequences

    ids = _token_ids(task, texts)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # less padding per batch
    vectors: list[torch.Tensor | None] = [None] * len(ids)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        padded, lengths = pad_sequences([ids[i] for i in chunk], pad_value=task.tokenizer.pad_id)
        batch = sentence_vectors(model, padded.to(device), lengths.to(device)).float().cpu()
        for row, index in enumerate(chunk):
            vectors[index] = batch[row]
    if not vectors:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.stack(vectors).numpy()


def embed_texts(
    run_dir: str | Path,
    texts: list[str],
    batch_size: int = 64,
    random_init: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """(len(texts), H) float32 sentence vectors from a run's best weights (or, with
    `random_init`, from the same architecture freshly initialised with `seed`)."""
    task, model, device = open_encoder(run_dir, random_init, seed)
    return encode_texts(task, model, device, texts, batch_size)


class ProbeData(StrictModel):
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    text_column: str = "text"
    label_column: str = "label"


class ProbeOptions(StrictModel):
    # Inverse regularisation strength; with data.valid the best of `grid` is used instead.
    C: float = Field(1.0, gt=0)
    grid: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])
    max_iter: int = Field(2000, ge=1)
    batch_size: int = Field(64, ge=1)
    seed: int = 0


class ProbeConfig(StrictModel):
    data: ProbeData = Field(default_factory=ProbeData)
    probe: ProbeOptions = Field(default_factory=ProbeOptions)


def probe(
    run_dir: str | Path,
    config: ProbeConfig,
    random_init: bool = False,
    classifier: Literal["logistic"] = "logistic",
) -> dict[str, float]:
    """Fit a logistic-regression probe on frozen sentence vectors; accuracies per split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from seqlab.data.readers import read_labelled

    data = config.data
    if not data.train or not (data.test or data.valid):
        raise ConfigError(
            "seqlab probe needs data.train=PATH and data.test=PATH (and optionally data.valid=PATH)"
        )
    splits = {name: read_labelled(path, data.text_column, data.label_column)
              for name, path in (("train", data.train), ("valid", data.valid),
                                 ("test", data.test)) if path}
    options = config.probe
    encoder = open_encoder(run_dir, random_init, options.seed)  # opened once for every split
    features = {name: encode_texts(*encoder, [text for text, _ in rows], options.batch_size)
                for name, rows in splits.items()}
    labels = {name: [label for _, label in rows] for name, rows in splits.items()}

    def fit(strength: float):
        model = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=strength, max_iter=options.max_iter, random_state=options.seed),
        )
        return model.fit(features["train"], labels["train"])

    results: dict[str, float] = {}
    if "valid" in splits:
        fits = {c: fit(c) for c in options.grid}
        scores = {c: model.score(features["valid"], labels["valid"]) for c, model in fits.items()}
        strength = max(scores, key=lambda c: (scores[c], -c))
        fitted = fits[strength]
    else:
        strength = options.C
        fitted = fit(strength)
    for name in ("train", "valid", "test"):
        if name in splits:
            results[f"{name}_accuracy"] = float(fitted.score(features[name], labels[name]))
    results["C"] = strength
    results["dimensions"] = int(features["train"].shape[1])
    return results
