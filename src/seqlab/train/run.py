"""A training run from config to run directory, and the run directory back to eval / predict.

Run directory layout::

    config.yaml          the resolved config (every default filled in)
    model.safetensors    the best weights (by the task's validation metric)
    tokenizer.json       where the task uses one (+ labels.json / other task artifacts)
    metrics.jsonl        one JSON line per log step
    summary.json         {"valid": {...}, "test": {...}, "run": {...}} of the best weights
    plots/*.png          loss / metric / learning-rate curves
    checkpoint/          the full training state for --resume

Nothing is written until the config is valid and the data has been read, so a user error leaves
no half-made run directory.
"""

from __future__ import annotations

import copy
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from seqlab.tasks import get_task
from seqlab.tasks.base import Task
from seqlab.train.checkpoint import atomic_write_text, load_weights
from seqlab.train.config import ConfigError, RunConfig, apply_overrides, validate_config
from seqlab.train.distributed import (
    DistContext,
    resolve_device,
    setup_distributed,
    teardown_distributed,
)
from seqlab.train.loop import FitResult, autocast_context, fit, load_best_weights
from seqlab.train.reporting import read_metrics

__all__ = [
    "RunDirError",
    "RunResult",
    "TrainingInterrupted",
    "apply_pretrained_architecture",
    "build_task",
    "default_run_dir",
    "evaluate_run",
    "load_run_config",
    "open_run",
    "predict_run",
    "seed_everything",
    "train",
]


class RunDirError(ValueError):
    """A path that is not a (complete) seqlab run directory, or one that would be overwritten."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; `run_dir` says which run `--resume` can continue."""

    def __init__(self, run_dir: Path):
        super().__init__(str(run_dir))
        self.run_dir = Path(run_dir)


@dataclass
class RunResult:
    run_dir: Path
    summary: dict
    fit: FitResult
    report: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)


def default_run_dir(recipe: str | None) -> Path:
    """`runs/<recipe>-<UTC timestamp>` under the current directory."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = Path("runs") / f"{recipe or 'run'}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path("runs") / f"{recipe or 'run'}-{stamp}-{suffix}"
    return path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_task(config: RunConfig) -> Task:
    cls = get_task(config.task)
    return cls(config.section("data"), config.section("model"), config.section("predict"),
               seed=config.trainer.seed, recipe=config.recipe,
               objective=config.section("objective"))


def _build_model(task: Task) -> torch.nn.Module:
    try:
        return task.build_model()
    except ValueError as exc:
        # Model constructors check their arguments; those come straight from `model.*` keys.
        raise ConfigError(f"invalid model settings: {exc}") from None


def _prepare(task: Task, fit_vocab: bool) -> None:
    from seqlab.data.readers import DataError

    try:
        task.prepare(fit_vocab=fit_vocab)
    except (DataError, ConfigError):
        raise
    except ValueError as exc:
        # Generators and tokenizers check their arguments; those come from `data.*` keys.
        raise ConfigError(f"invalid data settings: {exc}") from None


def _load_artifacts(task: Task, run_dir: Path) -> None:
    try:
        task.load_artifacts(run_dir)
    except (OSError, ValueError) as exc:
        if isinstance(exc, RunDirError):
            raise
        raise RunDirError(f"cannot read the saved vocabulary / artifacts in {run_dir}: {exc}") from None


def load_run_config(run_dir: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """The resolved config of a run directory, with optional `key=value` overrides."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} does not exist")
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise RunDirError(f"{run_dir} is not a seqlab run directory (no config.yaml in it)")
    try:
        values = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        raise RunDirError(f"{config_path} is not valid YAML; the run directory is damaged") from None
    if not isinstance(values, dict):
        raise RunDirError(f"{config_path} does not hold a seqlab config")
    return validate_config(apply_overrides(values, list(overrides or [])))


def _write_summary(run_dir: Path, summary: dict) -> None:
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


def _evaluate_splits(task: Task, model: torch.nn.Module, batch_size: int, device: torch.device,
                     precision: str, known: dict | None = None) -> dict[str, dict[str, float]]:
    """Every evaluation split read whole; `known` holds splits already measured so."""
    results = {}
    for split in task.splits():
        if known and split in known:
            results[split] = known[split]
            continue
        with autocast_context(device, precision):
            results[split] = task.evaluate(model, split, batch_size, device)
    return results


def train(
    config: RunConfig,
    run_dir: str | Path | None = None,
    resume: bool = False,
    stop_after_step: int | None = None,
    console=None,
) -> RunResult:
    """Train as `config` says into `run_dir` (a new directory unless `resume`).

    Raises ConfigError / DataError / RunDirError / CheckpointError for user errors (before
    anything is written for a new run) and TrainingError when the loss goes non-finite.
    """
    trainer = config.trainer
    try:
        device_context = setup_distributed(trainer.device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    threads = torch.get_num_threads()
    if trainer.num_threads:
        torch.set_num_threads(trainer.num_threads)
    try:
        return _train(config, device_context, run_dir, resume, stop_after_step, console)
    finally:
        torch.set_num_threads(threads)  # a library call leaves the process as it found it
        teardown_distributed(device_context)


def _explicit_keys(config: RunConfig) -> dict[str, object]:
    """`key: value` of the overrides given on the command line."""
    from seqlab.train.config import parse_override

    return {".".join(path): value for path, value in map(parse_override, config.overrides)}


def apply_pretrained_architecture(config: RunConfig, source) -> RunConfig:
    """The config with the pre-trained model's architecture in its `model.*` keys.

    The recipe's own sizes give way; a size given on the command line that differs from the
    pre-trained one is a ConfigError, as is a model family that differs. `data.max_length`
    shrinks to the positions a pre-trained Transformer has unless it was given explicitly.
    """
    from seqlab.models.pretrained import ARCHITECTURE_KEYS
    from seqlab.tasks import get_task

    schema = get_task(config.task).ModelConfig
    explicit = _explicit_keys(config)
    values = copy.deepcopy({"model": config.model, "data": config.data})
    model = values["model"]
    where = f"model.init_from={source.path}"
    if "family" in schema.model_fields:
        given = explicit.get("model.family")
        if given is not None and given != source.family:
            raise ConfigError(f"model.family={given} contradicts {where}, a {source.family} model; "
                              f"leave model.family out")
        model["family"] = source.family
        section, prefix = model.setdefault(source.family, {}), f"model.{source.family}."
        fields = schema.model_fields[source.family].annotation.model_fields
    else:
        fields = schema.model_fields
        family = "transformer" if "d_model" in fields else "recurrent" if "cell" in fields else None
        if family != source.family:
            raise ConfigError(
                f"{where} is a {source.family} model, but task {config.task} builds "
                f"{'a ' + family if family else 'no'} token model; pick a {source.family} recipe"
            )
        section, prefix = model, "model."
    for key in ARCHITECTURE_KEYS:
        if key not in fields or key not in source.architecture:
            continue
        value = source.architecture[key]
        if prefix + key in explicit and explicit[prefix + key] != value:
            raise ConfigError(
                f"{prefix}{key}={explicit[prefix + key]} contradicts {where}, whose {key} is "
                f"{value}; leave {prefix}{key} out to use the pre-trained size"
            )
        section[key] = value
    positions = section.get("max_length") if source.family == "transformer" else None
    for key in ("max_length", "bptt"):  # a classifier's tokens, a language model's window
        length = values["data"].get(key)
        if positions and length and length > positions and f"data.{key}" not in explicit:
            values["data"][key] = positions
    updated = config.to_dict()
    updated.update(model=model, data=values["data"])
    result = validate_config(updated)
    result.overrides = config.overrides
    return result


def _init_from(config: RunConfig):
    """(config with the pre-trained architecture, source) for `model.init_from`."""
    from seqlab.models.pretrained import read_pretrained

    try:
        source = read_pretrained(config.init_from)
    except (ValueError, OSError, KeyError) as exc:
        raise ConfigError(str(exc) if isinstance(exc, ValueError) else
                          f"model.init_from={config.init_from}: cannot read it ({exc})") from None
    return apply_pretrained_architecture(config, source), source


def _pretrained_tokenizer(source):
    from seqlab.data.tokenizers import Tokenizer

    if source.tokenizer_file is None:
        raise ConfigError(f"model.init_from={source.path} has no tokenizer.json; the pre-trained "
                          f"weights need the tokenizer they were trained with")
    try:
        if source.kind == "run":
            return Tokenizer.load(source.tokenizer_file)
        tokenizer, order = Tokenizer.from_hf_file(source.tokenizer_file, renumber=True)
        if order is not None:
            # The special tokens moved to ids 0..4: the vocabulary rows move with them.
            index = torch.tensor(order)
            for name, tensor in source.state.items():
                if tensor.dim() >= 1 and tensor.shape[0] == len(order):
                    source.state[name] = tensor[index]
        return tokenizer
    except ValueError as exc:
        raise ConfigError(f"model.init_from={source.path}: its tokenizer cannot be used: {exc}") from None


def _train(config: RunConfig, context: DistContext, run_dir, resume: bool, stop_after_step, console) -> RunResult:
    source = None
    if config.init_from and resume and (Path(run_dir) / "config.yaml").is_file():
        # The saved config holds the architecture and data settings taken from the source.
        values = config.to_dict()
        saved = load_run_config(run_dir).to_dict()
        values.update(model=saved["model"], data=saved["data"])
        config = validate_config(values)
    if config.init_from and not resume:
        config, source = _init_from(config)
        if config.tune.method == "prompt":
            from seqlab.train.tuning import prompt_room

            config = prompt_room(config)
    trainer = config.trainer
    seed_everything(trainer.seed)
    task = build_task(config)
    if source is not None:
        task.pretrained_tokenizer = _pretrained_tokenizer(source)
    if resume:
        run_dir = Path(run_dir)
        if not (run_dir / "checkpoint" / "state.json").is_file():
            raise RunDirError(f"{run_dir} has no checkpoint to resume from (checkpoint/state.json is missing)")
        _load_artifacts(task, run_dir)
        _prepare(task, fit_vocab=False)
    else:
        # Under torchrun only rank 0 names and writes the directory; the other ranks write
        # nothing, so their own name for it (a timestamp a moment apart) is never used.
        run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config.recipe)
        if context.is_main and run_dir.exists() and any(run_dir.iterdir()):
            raise RunDirError(
                f"run directory {run_dir} already exists and is not empty; "
                f"continue it with --resume {run_dir} or pick another --run-dir"
            )
        _prepare(task, fit_vocab=True)
    model = _build_model(task)
    report = None
    if source is not None:
        from seqlab.models.pretrained import load_matching

        try:
            report = load_matching(model, source.state, task.head_modules, source.path)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    frozen = _freeze(model, trainer.freeze, task.head_modules)
    tuning, tune_record = None, None
    if config.tune.method != "full":
        from seqlab.train.tuning import start_tuning

        tuning, tune_record = start_tuning(config, task, model, report, run_dir, resume)

    if context.is_main and not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
        task.save_artifacts(run_dir)
        if report is not None:
            atomic_write_text(run_dir / "init_from.json", json.dumps(
                {"source": str(source.path), **report.to_dict()}, indent=1) + "\n")
        if tune_record is not None:
            from seqlab.train.tuning import write_tune_record

            write_tune_record(run_dir, tune_record)
    context.barrier()
    if context.is_main and trainer.progress:
        parameters = sum(p.numel() for p in model.parameters())
        action = "resuming" if resume else "training"
        print(f"seqlab: {action} {config.recipe or config.task} ({config.task}, {parameters:,} parameters) "
              f"on {context.device} x{context.world_size} into {run_dir}", file=sys.stderr, flush=True)
        for line in report.lines(source.path) if report is not None else []:
            print(f"seqlab: {line}", file=sys.stderr, flush=True)
        if frozen:
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            print(f"seqlab: trainer.freeze: {len(frozen)} tensors frozen; {trainable:,} of "
                  f"{parameters:,} parameters train ({100 * trainable / parameters:.2f} %)",
                  file=sys.stderr, flush=True)
        if tuning is not None:
            print(f"seqlab: tune {tuning}", file=sys.stderr, flush=True)

    if trainer.diagnostics and context.is_main and not resume:
        from seqlab.viz.diagnostics import write_run_diagnostics

        write_run_diagnostics(run_dir, "init", task, model, next(model.parameters()).device,
                              trainer.batch_size, trainer.clip_grad_norm)
    try:
        result = fit(task, model, trainer, run_dir, context, resume=resume,
                     stop_after_step=stop_after_step, console=console,
                     base_info=tune_record["base"] if tune_record else None)
    except KeyboardInterrupt:
        raise TrainingInterrupted(run_dir) from None
    if result.stop_reason == "interrupted" or not context.is_main:
        return RunResult(run_dir, {}, result)

    load_best_weights(run_dir, model)
    device = context.device
    model.to(device)
    eval_batch_size = trainer.eval_batch_size or trainer.batch_size
    # The best weights were scored on the whole validation split when they were kept, unless
    # evaluations read only some batches (or a resumed run may have changed that).
    known = None
    if result.best_metrics and trainer.eval_max_batches is None and not resume:
        known = {"valid": result.best_metrics}
    summary: dict = _evaluate_splits(task, model, eval_batch_size, device, trainer.precision, known)
    summary["run"] = {
        "steps": result.step, "epochs": result.epoch, "best_step": result.best_step,
        "stop_reason": result.stop_reason, "elapsed_seconds": round(result.elapsed, 2),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "world_size": context.world_size, "device": str(device),
    }
    _write_summary(run_dir, summary)
    from seqlab.viz import plot_metrics

    plots = plot_metrics(read_metrics(run_dir / "metrics.jsonl"), run_dir / "plots")
    if trainer.diagnostics:
        from seqlab.viz.diagnostics import write_run_diagnostics

        plots += write_run_diagnostics(run_dir, "final", task, model, device, trainer.batch_size,
                                       trainer.clip_grad_norm)
    return RunResult(run_dir, summary, result, task.report(model, device), plots)


def _freeze(model: torch.nn.Module, patterns: list[str], head_modules) -> list[str]:
    from seqlab.models.pretrained import freeze_parameters

    if not patterns:
        return []
    try:
        return freeze_parameters(model, patterns, head_modules)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def open_run(run_dir: str | Path, overrides: list[str] | None = None) -> tuple[RunConfig, Task, torch.nn.Module, torch.device]:
    """Config, task (artifacts loaded) and model (best weights loaded) of a finished run."""
    from seqlab.train.tuning import is_tuned_run, open_tuned

    run_dir = Path(run_dir)
    config = load_run_config(run_dir, overrides)
    tuned = is_tuned_run(run_dir)
    if not tuned and not (run_dir / "model.safetensors").is_file():
        raise RunDirError(f"{run_dir} has no model.safetensors (the run did not get to its first evaluation)")
    try:
        device = resolve_device(config.trainer.device)
    except ValueError:
        device = torch.device("cpu")
    task = build_task(config)
    _load_artifacts(task, run_dir)
    model = _build_model(task)
    if tuned:
        open_tuned(task, model, run_dir)  # the base run's weights, then the adapter
    else:
        load_weights(run_dir / "model.safetensors", model)
    model.to(device).eval()
    return config, task, model, device


def evaluate_run(run_dir: str | Path, overrides: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Metrics of a run's best weights on its evaluation splits (e.g. a new `data.test=PATH`)."""
    config, task, model, device = open_run(run_dir, overrides)
    task.needs_training_data = False
    _prepare(task, fit_vocab=False)
    batch_size = config.trainer.eval_batch_size or config.trainer.batch_size
    return _evaluate_splits(task, model, batch_size, device, config.trainer.precision)


def predict_run(run_dir: str | Path, inputs: list[str], overrides: list[str] | None = None) -> list[str]:
    """One output line per input line: a label, tags, or generated text, depending on the task."""
    _, task, model, device = open_run(run_dir, overrides)
    with torch.no_grad():
        return task.predict(model, inputs, device)

