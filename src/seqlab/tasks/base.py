"""What a task kind provides to the training loop, `seqlab eval` and `seqlab predict`.

A task turns the typed `data` / `model` / `predict` config sections into data splits, a model,
metrics and predictions. The loop in `seqlab.train.loop` only ever calls the methods below, so a
new task kind is one file in `seqlab/tasks/` that subclasses :class:`Task` and registers itself
with :func:`seqlab.tasks.register_task`, plus one recipe YAML.

Batches are addressed by small keys (a list of example indices, a chunk offset) so that resuming
in the middle of an epoch can skip batches without building them; `collate(key)` builds the
tensors. The order of keys depends only on (seed, epoch).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from seqlab.schema import StrictModel

__all__ = [
    "NoObjectiveConfig",
    "NoPredictConfig",
    "RecurrentModelConfig",
    "StepOutput",
    "Task",
    "TensorTask",
    "eval_batches",
    "example_batches",
    "mean_metrics",
    "require_path",
    "shard_batches",
    "split_off",
    "spread",
    "to_device",
]


@dataclass
class StepOutput:
    """One training step's result: the loss to minimise, how many items it covered (for
    throughput), and the state to carry into the next batch (truncated BPTT), if any."""

    loss: torch.Tensor
    count: int
    carry: Any = None


class NoPredictConfig(StrictModel):
    """Tasks without prediction options."""


class NoObjectiveConfig(StrictModel):
    """Tasks whose objective has no options (the loss follows from the data)."""


_CELL_OPTION_DEFAULTS = {
    "nonlinearity": ("rnn", "tanh"),
    "init": ("rnn", "default"),
    "peephole": ("lstm", False),
    "coupled": ("lstm", False),
    "reset_after": ("gru", True),
}


class RecurrentModelConfig(StrictModel):
    """The recurrent encoder every built-in task uses (`model.*` keys)."""

    cell: Literal["rnn", "lstm", "gru", "mingru", "minlstm"] = "lstm"
    hidden_size: int = Field(128, ge=1)
    num_layers: int = Field(1, ge=1)
    dropout: float = Field(0.0, ge=0, le=1)
    bidirectional: bool = False
    merge_mode: Literal["concat", "sum", "mean", "max"] = "concat"
    nonlinearity: Literal["tanh", "relu"] = "tanh"
    init: Literal["default", "identity"] = "default"
    peephole: bool = False
    coupled: bool = False
    reset_after: bool = True

    @model_validator(mode="after")
    def _check_cell_options(self):
        for name, (owner, default) in _CELL_OPTION_DEFAULTS.items():
            value = getattr(self, name)
            if self.cell != owner and value != default:
                raise ValueError(
                    f"model.{name}={value!r} only applies to model.cell={owner}, "
                    f"but model.cell={self.cell} (leave model.{name} at {default!r})"
                )
        return self

    def cell_options(self) -> dict[str, Any]:
        """Keyword arguments shared by SequenceClassifier / SequenceTagger / LanguageModel."""
        return {
            "cell": self.cell, "hidden_size": self.hidden_size, "num_layers": self.num_layers,
            "dropout": self.dropout, "nonlinearity": self.nonlinearity, "init": self.init,
            "peephole": self.peephole, "coupled": self.coupled, "reset_after": self.reset_after,
        }


def split_off(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """(kept, held_out): a seeded random `fraction` of `items` held out for validation."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    held = max(1, round(len(items) * fraction)) if len(items) > 1 else 0
    held_set = set(order[:held])
    kept = [item for i, item in enumerate(items) if i not in held_set]
    return kept, [items[i] for i in sorted(held_set)]


def shard_batches(batches: list, rank: int, world_size: int) -> list:
    """This rank's share of an epoch's batches; every rank gets the same number of steps."""
    if world_size == 1:
        return batches
    per_rank = len(batches) // world_size
    return batches[rank::world_size][:per_rank]


class Task:
    """Base class of task kinds. Subclasses set the class attributes and override the methods."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    DataConfig: ClassVar[type[StrictModel]]
    ModelConfig: ClassVar[type[StrictModel]] = RecurrentModelConfig
    PredictConfig: ClassVar[type[StrictModel]] = NoPredictConfig
    ObjectiveConfig: ClassVar[type[StrictModel]] = NoObjectiveConfig
    # Names of the modules that are task-specific output layers: with `model.init_from` they may
    # differ in shape from the pre-trained run's (another number of classes) and start afresh.
    head_modules: ClassVar[tuple[str, ...]] = ("head",)
    # The validation metric that picks the best checkpoint and drives early stopping.
    metric: ClassVar[str] = "loss"
    mode: ClassVar[str] = "min"
    unit: ClassVar[str] = "ex"  # what `StepOutput.count` counts, for the throughput display

    def __init__(self, data: StrictModel, model: StrictModel, predict: StrictModel, seed: int = 0,
                 recipe: str | None = None, objective: StrictModel | None = None):
        self.recipe = recipe
        self.data = data
        self.model_config = model
        self.predict_config = predict
        self.objective = objective if objective is not None else self.ObjectiveConfig()
        self.seed = seed
        # With `model.init_from`, the pre-trained run's tokenizer: `prepare` uses it instead of
        # fitting a new vocabulary.
        self.pretrained_tokenizer = None
        # False when only evaluation splits are needed (`seqlab eval`), so `prepare` may skip
        # reading the training file; training and resuming need it.
        self.needs_training_data = True

    def fit_tokenizer(self, fit):
        """The pre-trained tokenizer when there is one, else `fit()` (a new vocabulary)."""
        return self.pretrained_tokenizer if self.pretrained_tokenizer is not None else fit()

    # Data.
    def prepare(self, fit_vocab: bool = True) -> None:
        """Read or generate the splits; raise DataError / ConfigError for the user's data.

        With `fit_vocab=False` the vocabularies come from `load_artifacts` (resume, eval)."""
        raise NotImplementedError

    def splits(self) -> list[str]:
        """Evaluation splits available after `prepare` ("valid", and "test" when there is one)."""
        raise NotImplementedError

    def train_batches(self, epoch: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list:
        """This rank's batch keys for `epoch`, a function of (seed, epoch) only."""
        raise NotImplementedError

    def collate(self, key: Any) -> dict[str, torch.Tensor]:
        """The tensors of one training batch (on the CPU; the loop moves them)."""
        raise NotImplementedError

    # Artifacts.
    def save_artifacts(self, run_dir: Path) -> None:
        """Write what `predict` needs besides the weights (tokenizer.json, labels.json, ...)."""

    def load_artifacts(self, run_dir: Path) -> None:
        """Read back what `save_artifacts` wrote."""

    # Model and metrics.
    def build_model(self) -> torch.nn.Module:
        """The model, from `model.*` and the vocabulary sizes found by `prepare`."""
        raise NotImplementedError

    def training_step(self, model: torch.nn.Module, batch: dict, carry: Any) -> StepOutput:
        """Forward one batch (the model may be DDP-wrapped); `carry` is the previous step's state."""
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, split: str, batch_size: int, device: torch.device,
                 max_batches: int | None = None) -> dict[str, float]:
        """Metrics averaged over the split; must contain `metric`.

        `max_batches` limits it to that many batches picked with :func:`spread` (a quicker
        estimate during training); None reads the whole split.
        """
        raise NotImplementedError

    # Using the trained model.
    def predict(self, model: torch.nn.Module, inputs: list[str], device: torch.device) -> list[str]:
        """One output line per input line (a label, tags, a continuation, ...)."""
        raise NotImplementedError

    def report(self, model: torch.nn.Module, device: torch.device) -> list[str]:
        """A few lines shown at the end of training (e.g. sampled text)."""
        return []


def target_nll(logits: torch.Tensor, tgt: torch.Tensor, pad_id: int) -> tuple[float, int]:
    """(summed negative log-likelihood, token count) of a decoder's teacher-forced pass:
    `logits` (N, T-1, V) against `tgt[:, 1:]` (N, T), padding left out. The loss to report and
    to pick the best checkpoint by; label smoothing, a training device, is not part of it."""
    targets = tgt[:, 1:]
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=pad_id,
        reduction="sum")
    return float(nll), int((targets != pad_id).sum())


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def mean_metrics(totals: dict[str, float], count: float) -> dict[str, float]:
    """Divide summed metrics by the number of items; NaN when there were none."""
    return {k: (v / count if count else math.nan) for k, v in totals.items()}


def example_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
) -> list[list[int]]:
    """An epoch's batches of example indices: length-bucketed, shuffled by (seed, epoch), sharded."""
    from seqlab.data.batching import bucket_batches

    order = bucket_batches(lengths, batch_size, shuffle=True, seed=seed, epoch=epoch)
    return shard_batches(order, rank, world_size)


def eval_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Unshuffled, length-sorted batches for evaluation (less padding, same numbers)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def spread(items: list, count: int | None) -> list:
    """`count` of `items` taken at even intervals (all of them when count is None or larger).

    Limits an evaluation to a few batches that still span the split: evaluation batches are
    sorted by length, so the first few would hold only the shortest examples.
    """
    if count is None or count >= len(items):
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def require_path(value: str | None, key: str, recipe: str | None, what: str) -> str:
    """The path in config key `key`, or a ConfigError that shows the exact override to give."""
    from seqlab.schema import ConfigError

    if value:
        return value
    name = recipe or "FILE.yaml"
    raise ConfigError(
        f"{name} needs {what}: give it with {key}=PATH, e.g. `seqlab train {name} {key}=PATH`"
    )


class TensorTask(Task):
    """Base for tasks whose splits are whole tensors: (x, y) or (x, y, lengths).

    Subclasses fill `self.tensors = {"train": ..., "valid": ..., "test": ...}` in `prepare` and
    may override `batch_metrics(model, batch)`, which returns sums over the batch of each metric.
    """

    tensors: dict[str, tuple[torch.Tensor, ...]]

    def splits(self) -> list[str]:
        return [s for s in ("valid", "test") if s in self.tensors]

    def train_batches(self, epoch, batch_size, rank=0, world_size=1):
        from seqlab.data.batching import batches

        order = batches(len(self.tensors["train"][1]), batch_size, shuffle=True, seed=self.seed, epoch=epoch)
        return shard_batches(order, rank, world_size)

    @staticmethod
    def _slice(tensors: tuple[torch.Tensor, ...], index) -> dict[str, torch.Tensor]:
        batch = {"inputs": tensors[0][index], "targets": tensors[1][index]}
        if len(tensors) > 2:
            batch["lengths"] = tensors[2][index]
        return batch

    def collate(self, key):
        return self._slice(self.tensors["train"], torch.as_tensor(key, dtype=torch.long))

    def training_step(self, model, batch, carry):
        out = model(batch["inputs"], lengths=batch.get("lengths"), targets=batch["targets"])
        return StepOutput(out.loss, int(batch["inputs"].size(0)))

    def batch_metrics(self, model, batch) -> dict[str, float]:
        """Sums over the batch of every metric (the loss summed as mean × batch size)."""
        out = model(batch["inputs"], lengths=batch.get("lengths"), targets=batch["targets"])
        return {"loss": float(out.loss) * batch["inputs"].size(0)}

    @torch.no_grad()
    def evaluate(self, model, split, batch_size, device, max_batches=None):
        model.eval()
        tensors = self.tensors[split]
        size = len(tensors[1])
        totals: dict[str, float] = {}
        count = 0
        for start in spread(range(0, size, batch_size), max_batches):
            batch = to_device(self._slice(tensors, slice(start, start + batch_size)), device)
            for name, value in self.batch_metrics(model, batch).items():
                totals[name] = totals.get(name, 0.0) + value
            count += len(batch["targets"])
        return mean_metrics(totals, count)
