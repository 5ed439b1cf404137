"""Tuning inside a run: `tune.method` on a model started from `model.init_from`.

The method attaches right after the pre-trained weights are loaded and before the optimizer is
built (:func:`start_tuning`), so the optimizer steps only what the method trains. A tuned run's
directory holds what it trained and where its base is, never a copy of the base::

    tune.json            method, settings, heads, base run and the base weights' checksum,
                         trainable / total parameters (written when the run starts)
    adapter.safetensors  the best trained tensors (LoRA / adapter / prefix / prompt + task heads)
    adapter.json         what seqlab.tune.load_adapter needs: method, settings, base, checksum
    checkpoint/          the same tensors plus the optimizer: --resume reloads the base

:func:`open_tuned` rebuilds base + adapter for eval / predict / compare, and :func:`merge_run`
folds LoRA into plain weights and writes a normal run directory (``seqlab merge``).

Heads: the model's task heads (:func:`seqlab.tune.default_heads`) and every top-level module
that holds a parameter the pre-trained model lacks train with the method (a new parameter that
stayed frozen would be random noise the adapter could not reproduce).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import yaml

from seqlab.schema import ConfigError

__all__ = [
    "TUNE_FILE",
    "best_weights_path",
    "is_tuned_run",
    "merge_run",
    "open_tuned",
    "prompt_room",
    "start_tuning",
    "write_tune_record",
]

TUNE_FILE = "tune.json"


def _run_dir_error(message: str) -> Exception:
    from seqlab.train.run import RunDirError

    return RunDirError(message)


def is_tuned_run(run_dir: str | Path) -> bool:
    """Whether a run directory holds a parameter-efficient tuning run (adapter, not weights)."""
    from seqlab.tune.files import ADAPTER_CONFIG

    run_dir = Path(run_dir)
    return (run_dir / ADAPTER_CONFIG).is_file() or (run_dir / TUNE_FILE).is_file()


def best_weights_path(run_dir: str | Path) -> Path:
    """`adapter.safetensors` of a tuned run, `model.safetensors` of any other."""
    from seqlab.tune.files import ADAPTER_WEIGHTS

    run_dir = Path(run_dir)
    return run_dir / (ADAPTER_WEIGHTS if is_tuned_run(run_dir) else "model.safetensors")


def _heads(model: torch.nn.Module, new_names: list[str]) -> tuple[str, ...]:
    """The task heads plus every top-level module holding a parameter the base lacks."""
    from seqlab.tune import default_heads

    heads = list(default_heads(model))
    children = dict(model.named_children())
    parameters = dict(model.named_parameters())
    for name in new_names:
        if name not in parameters:
            continue  # a buffer the model computes itself
        owner = name.split(".")[0]
        if owner not in children:
            raise ConfigError(
                f"{name} is not in the pre-trained model and sits outside any module, so no "
                f"tuning method can train it; use tune.method=full"
            )
        if owner not in heads:
            heads.append(owner)
    return tuple(heads)


def _load_base(task, model: torch.nn.Module, base: str | Path, run_dir: Path | None = None):
    """Copy the base run's tensors into `model`; RunDirError when the base is gone."""
    from seqlab.models.pretrained import load_matching, read_pretrained

    where = f" of {run_dir}" if run_dir is not None else ""
    try:
        source = read_pretrained(base)
    except (ValueError, OSError) as exc:
        raise _run_dir_error(
            f"the base model{where} (model.init_from={base}) cannot be read: {exc}; a tuned "
            f"run holds only what it trained, so its base run must stay where it was"
        ) from None
    try:
        return load_matching(model, source.state, task.head_modules, source.path)
    except ValueError as exc:
        raise _run_dir_error(f"the base model{where} no longer fits the run: {exc}") from None


def prompt_room(config):
    """The config with room for a soft prompt in a Transformer's positions.

    Real tokens sit at positions P..P+L-1 behind the P virtual ones, so the input length
    (`data.max_length`, or `data.bptt` for language models) shrinks to the positions the
    pre-trained model has minus P, unless it was given on the command line (then a length that
    does not fit is a ConfigError).
    """
    from seqlab.train.config import validate_config
    from seqlab.train.run import _explicit_keys

    values = config.to_dict()
    model = values["model"]
    section = model.get(model["family"], {}) if isinstance(model.get("family"), str) else model
    positions = section.get("max_length") if "d_model" in section else None
    if config.tune.method != "prompt" or not positions:
        return config
    prompt = config.tune.num_virtual_tokens
    explicit = _explicit_keys(config)
    for key in ("max_length", "bptt"):
        length = values["data"].get(key)
        if not length or length + prompt <= positions:
            continue
        if positions - prompt < 1 or f"data.{key}" in explicit:
            raise ConfigError(
                f"data.{key}={length} + tune.num_virtual_tokens={prompt} exceeds the "
                f"{positions} positions of model.init_from={config.init_from}; use "
                f"data.{key}<={positions - prompt} or fewer virtual tokens"
            )
        values["data"][key] = positions - prompt
    result = validate_config(values)
    result.overrides = config.overrides
    return result


def _prompt_ids(task, text: str) -> list[int]:
    tokenizer = getattr(task, "tokenizer", None)
    if tokenizer is None or not hasattr(tokenizer, "encode"):
        raise ConfigError(f"tune.init_text needs a task with a tokenizer; task {task.name} has "
                          f"none: use tune.init=random or tune.init=vocab")
    ids = tokenizer.encode(text)
    if not ids:
        raise ConfigError(f"tune.init_text={text!r} gives no token")
    return ids


def start_tuning(config, task, model: torch.nn.Module, load_report, run_dir: Path,
                 resume: bool) -> tuple[object, dict]:
    """Attach `config.tune` to `model` (pre-trained weights loaded) and freeze the rest.

    A resumed run loads its base again (the checkpoint holds only the trained tensors) and
    checks that the base weights are still the ones the run started from. Returns the
    :class:`~seqlab.tune.TuningReport` and the ``tune.json`` record. Raises ConfigError for bad
    settings (a LoRA target that matches nothing lists the weights that exist) and RunDirError
    for a base that is missing or changed.
    """
    from seqlab.tune import apply_tuning

    base = str(Path(config.init_from).resolve())
    if resume:
        record_path = run_dir / TUNE_FILE
        if not record_path.is_file():
            raise _run_dir_error(f"{run_dir} is a tuned run without {TUNE_FILE}; it cannot resume")
        record = json.loads(record_path.read_text(encoding="utf-8"))
        load_report = _load_base(task, model, record["base"]["run"], run_dir)
        base = record["base"]["run"]
    heads = _heads(model, load_report.new + load_report.reinitialised)
    settings = config.tune.settings()
    if settings.get("init_text") is not None:
        settings["init_text"] = _prompt_ids(task, settings["init_text"])
    try:
        report = apply_tuning(model, config.tune.method, heads=heads, **settings)
    except ValueError as exc:
        raise ConfigError(f"tune.method={config.tune.method}: {exc}") from None
    tuning = model.seqlab_tuning
    if resume and tuning["base_checksum"] != record["base_checksum"]:
        raise _run_dir_error(
            f"the base run {base} of {run_dir} has changed since the run started (checksum "
            f"{tuning['base_checksum']}, recorded {record['base_checksum']}); resume needs the "
            f"same base weights"
        )
    record = {
        "method": report.method, "settings": tuning["settings"], "heads": list(report.heads),
        "targets": list(report.targets), "base": {"run": base},
        "base_checksum": tuning["base_checksum"], "trainable": report.trainable,
        "total": report.total,
    }
    return report, record


def write_tune_record(run_dir: Path, record: dict) -> None:
    from seqlab.train.checkpoint import atomic_write_text

    atomic_write_text(run_dir / TUNE_FILE, json.dumps(record, indent=1) + "\n")


def open_tuned(task, model: torch.nn.Module, run_dir: str | Path):
    """Base weights from the run's base, then its adapter: the tuned model of a finished run.

    RunDirError when the adapter is missing, its base run is gone, or the base's weights are
    not the ones the adapter was trained on (checksum).
    """
    from seqlab.tune import load_adapter, read_adapter_config
    from seqlab.tune.files import ADAPTER_WEIGHTS

    run_dir = Path(run_dir)
    if not (run_dir / ADAPTER_WEIGHTS).is_file():
        raise _run_dir_error(f"{run_dir} has no {ADAPTER_WEIGHTS} (the tuned run did not get "
                             f"to its first evaluation)")
    try:
        adapter = read_adapter_config(run_dir)
    except (OSError, ValueError) as exc:
        raise _run_dir_error(f"{run_dir}: {exc}") from None
    base = (adapter.get("base") or {}).get("run")
    if not base:
        raise _run_dir_error(f"{run_dir}/adapter.json does not name its base run")
    _load_base(task, model, base, run_dir)
    try:
        return load_adapter(model, run_dir)
    except (OSError, ValueError) as exc:
        raise _run_dir_error(str(exc)) from None


def merge_run(run_dir: str | Path, out_dir: str | Path) -> dict:
    """Fold a LoRA run's updates into plain weights and write a normal run directory.

    `out_dir` holds the run's config (without its `tune` section), tokenizer / labels,
    ``model.safetensors`` with the model's spec, summary and metrics, and ``merge.json``
    (source run, base, method). Nothing is written when `out_dir` exists and is not empty, or
    when the run's method cannot be folded into weights (adapter / prefix / prompt add
    computation of their own). Returns ``merge.json``'s content.
    """
    from seqlab.train.checkpoint import atomic_write_text, save_weights
    from seqlab.train.run import open_run
    from seqlab.tune import merge_and_unload, tuning_of

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise _run_dir_error(f"--out {out_dir} already exists and is not empty; nothing was "
                             f"written (pick a new directory)")
    if not is_tuned_run(run_dir):
        if not (run_dir / "config.yaml").is_file():
            raise _run_dir_error(f"{run_dir} is not a seqlab run directory (no config.yaml in it)")
        raise _run_dir_error(f"{run_dir} is not a tuned run (no adapter.json): its "
                             f"model.safetensors already holds plain weights")
    method = json.loads((run_dir / TUNE_FILE).read_text(encoding="utf-8"))["method"] if (
        run_dir / TUNE_FILE).is_file() else None
    if method is not None and method != "lora":
        raise _run_dir_error(
            f"{run_dir} was tuned with tune.method={method}, which adds layers or inputs of its "
            f"own that no weight can absorb; only LoRA runs merge (use the run as it is)"
        )
    config, task, model, _ = open_run(run_dir, ["trainer.device=cpu"])
    tuning = tuning_of(model)
    if tuning["method"] != "lora":
        raise _run_dir_error(f"{run_dir} was tuned with tune.method={tuning['method']}; only "
                             f"LoRA runs merge")
    record = {"source": str(run_dir.resolve()), "method": tuning["method"],
              "settings": tuning["settings"], "base_checksum": tuning["base_checksum"]}
    merge_and_unload(model)
    values = config.to_dict()
    values.pop("tune", None)
    staging = out_dir.with_name(f".{out_dir.name}.merging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        atomic_write_text(staging / "config.yaml", yaml.safe_dump(values, sort_keys=False))
        task.save_artifacts(staging)
        save_weights(staging / "model.safetensors", model)
        for name in ("summary.json", "metrics.jsonl", "init_from.json"):
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, staging / name)
        if (run_dir / "plots").is_dir():
            shutil.copytree(run_dir / "plots", staging / "plots")
        atomic_write_text(staging / "merge.json", json.dumps(record, indent=1) + "\n")
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return record
