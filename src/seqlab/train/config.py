"""Typed, strict run configuration: YAML file or built-in recipe, plus `key.sub=value` overrides.

A run config has four sections and two names::

    recipe: charlm-lstm          # set from the recipe or file name
    task: lm                     # which seqlab.tasks kind builds data, model and metrics
    data:    {...}               # validated by the task's DataConfig
    model:   {...}               # validated by the task's ModelConfig (+ init_from, any task)
    objective: {...}             # validated by the task's ObjectiveConfig (pre-training)
    reward: {from | fn, combine} # ppo / grpo: objective.reward_from / reward_fn / reward_combine
    trainer: {...}               # TrainerConfig below (same for every task)
    tune: {...}                  # TuneConfig below: which weights train (with model.init_from)
    predict: {...}               # validated by the task's PredictConfig

Every section is a pydantic model with ``extra="forbid"``: an unknown key is an error that names
the key and suggests the nearest known one, a wrong type names the key, the value and the expected
type, and enum-like keys list their allowed values. Errors are raised as :class:`ConfigError`, one
readable line each.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from seqlab.schema import ConfigError, StrictModel

__all__ = [
    "ConfigError",
    "RunConfig",
    "StrictModel",
    "TrainerConfig",
    "TuneConfig",
    "apply_overrides",
    "list_recipes",
    "load_config",
    "parse_override",
    "recipe_path",
    "validate_config",
]

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


class TrainerConfig(StrictModel):
    """Options of the training loop, shared by every task."""

    epochs: int = Field(10, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int | None = Field(None, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop"] = "adam"
    momentum: float = Field(0.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    # Layer-wise learning-rate decay for fine-tuning (seqlab.train.optim.layer_lr_scales): the
    # head keeps trainer.lr, each layer below it gets this factor once more, the embeddings last.
    layer_lr_decay: float | None = Field(None, gt=0, le=1)
    betas: list[Annotated[float, Field(ge=0, lt=1)]] = Field(
        default_factory=lambda: [0.9, 0.999], min_length=2, max_length=2
    )
    scheduler: Literal["constant", "cosine", "plateau"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    min_lr: float = Field(0.0, ge=0)
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    plateau_patience: int = Field(1, ge=0)
    clip_grad_norm: float | None = Field(None, gt=0)
    clip_grad_value: float | None = Field(None, gt=0)
    eval_every: int | None = Field(None, ge=1)
    # Evaluations during training read this many batches, spread over the split (a quicker,
    # noisier estimate); the final figures in summary.json always use the whole split.
    eval_max_batches: int | None = Field(None, ge=1)
    save_every: int | None = Field(None, ge=1)
    log_every: int = Field(10, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    max_time_minutes: float | None = Field(None, gt=0)
    progress: bool = True
    # Gradient flow through time, gradient-norm history and gate plots (seqlab.viz.diagnostics).
    diagnostics: bool = False
    num_threads: int | None = Field(None, ge=1)
    # Weights that do not train: glob patterns over parameter names (`encoder.*`), or the
    # word `body` for every parameter outside the task head (a linear probe).
    freeze: list[str] = Field(default_factory=list)

    @field_validator("freeze", mode="before")
    @classmethod
    def _split_patterns(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return [] if value is None else value


# The keys each tuning method reads (seqlab.tune.apply_tuning's settings).
TUNE_KEYS = {
    "lora": ("r", "alpha", "dropout", "targets", "rslora"),
    "adapter": ("reduction_factor", "placement"),
    "prefix": ("num_virtual_tokens", "reparameterize"),
    "prompt": ("num_virtual_tokens", "init", "init_text"),
}


class TuneConfig(StrictModel):
    """`tune.*`: how a run started from `model.init_from` is fitted (seqlab.tune).

    `full` trains every weight (as any run); the others freeze the pre-trained model, attach
    their own parameters, keep the task head trainable and save only what they trained. A key
    of another method set away from its default is an error naming that method.
    """

    method: Literal["full", "lora", "adapter", "prefix", "prompt"] = "full"
    # LoRA: update s·B A with B (out, r), A (r, in), s = alpha / r (alpha / sqrt(r): rslora).
    r: int = Field(8, ge=1)
    alpha: float | None = Field(None, gt=0)  # None: alpha = r
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: list[str] = Field(default_factory=list)  # weight-name globs; [] = per-family default
    rslora: bool = False
    # Bottleneck adapters: size E / reduction_factor, after the feed-forward block (pfeiffer)
    # or after attention too (houlsby).
    reduction_factor: float = Field(16, gt=0)
    placement: Literal["houlsby", "pfeiffer"] = "pfeiffer"
    # Prefix (keys / values, or initial recurrent states) and prompt (input vectors) tuning.
    num_virtual_tokens: int = Field(10, ge=1)
    reparameterize: bool = False
    init: Literal["random", "vocab", "text"] = "random"
    init_text: str | None = None

    @field_validator("targets", mode="before")
    @classmethod
    def _split_targets(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return [] if value is None else value

    @model_validator(mode="after")
    def _check_method_keys(self) -> TuneConfig:
        own = TUNE_KEYS.get(self.method, ())
        for method, keys in TUNE_KEYS.items():
            for key in keys:
                if key in own:
                    continue
                value, default = getattr(self, key), type(self).model_fields[key].get_default(
                    call_default_factory=True)
                if value != default:
                    raise ValueError(
                        f"{key}={value!r} is a setting of method {method}, but "
                        f"tune.method={self.method} (leave tune.{key} out, or set "
                        f"tune.method={method})"
                    )
        if self.method == "prompt" and (self.init == "text") != (self.init_text is not None):
            raise ValueError(
                "init=text and init_text go together: the soft prompt starts from the "
                "embeddings of that text (e.g. tune.init=text tune.init_text='classify this')"
            )
        return self

    def settings(self) -> dict[str, Any]:
        """The method's keyword arguments for :func:`seqlab.tune.apply_tuning`."""
        settings = {key: getattr(self, key) for key in TUNE_KEYS.get(self.method, ())}
        if "targets" in settings:
            settings["targets"] = list(settings["targets"]) or None
        return settings


class RunConfig(StrictModel):
    """The whole run: names plus the four sections (data/model/predict checked by the task)."""

    recipe: str | None = None
    description: str = ""
    task: str
    data: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    objective: dict[str, Any] = Field(default_factory=dict)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    predict: dict[str, Any] = Field(default_factory=dict)
    tune: TuneConfig = Field(default_factory=TuneConfig)

    # The `key=value` overrides given on the command line (sizes given there must agree with a
    # pre-trained model's); not part of the saved config.
    overrides: list[str] = Field(default_factory=list, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _reward_section(cls, data: Any) -> Any:
        """`reward.from=RUN` / `reward.fn=MODULE:FUNCTION` (ppo, grpo) are the objective's
        `reward_from` / `reward_fn`: one setting under two names, saved under the objective."""
        if not isinstance(data, dict) or data.get("reward") is None:
            return data
        data = dict(data)
        reward = data.pop("reward")
        if not isinstance(reward, dict):
            raise ValueError(f"reward should be a section (reward.from=RUN or reward.fn=MODULE:"  # noqa: TRY004 (pydantic reports ValueError)
                             f"FUNCTION), got {reward!r}")
        unknown = sorted(set(reward) - {"from", "fn", "combine"})
        if unknown:
            raise ValueError(f"unknown key reward.{unknown[0]}; the reward section takes "
                             f"reward.from=REWARD_RUN (or a list of runs, combined by "
                             f"reward.combine=mean|min) or reward.fn=MODULE:FUNCTION")
        from seqlab.tasks import get_task, task_names

        task = data.get("task")
        if task in task_names() and "reward_from" not in get_task(task).ObjectiveConfig.model_fields:
            raise ValueError(f"reward.{next(iter(reward), 'from')} is for the ppo and grpo tasks; "
                             f"task {task} takes no reward")
        objective = dict(data.get("objective") or {})
        for key, value in reward.items():
            name = f"reward_{key}"
            if objective.get(name) not in (None, value):
                raise ValueError(f"reward.{key}={value} and objective.{name}={objective[name]} "
                                 f"disagree; give one of them")
            objective[name] = value
        data["objective"] = objective
        return data

    @model_validator(mode="after")
    def _check_task(self) -> RunConfig:
        from seqlab.tasks import task_names

        if self.task not in task_names():
            raise ValueError(_unknown_choice("task", self.task, task_names()))
        if self.tune.method != "full" and not self.model.get("init_from"):
            raise ValueError(
                f"tune.method={self.tune.method} tunes a pre-trained model: give "
                f"model.init_from=RUN_DIR|HF_DIR (or train every weight with tune.method=full)"
            )
        if self.tune.method != "full" and self.trainer.freeze:
            raise ValueError(
                f"trainer.freeze goes with tune.method=full; tune.method={self.tune.method} "
                f"freezes every weight it does not train itself (the task head trains)"
            )
        return self

    @property
    def init_from(self) -> str | None:
        """`model.init_from`: the run directory or Hugging Face directory to start from."""
        value = self.model.get("init_from")
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"model.init_from should be a directory path, got {value!r}")
        return value or None

    def section(self, name: str) -> BaseModel:
        """The typed object for `data`, `model`, `objective` or `predict`, built by the task's
        schema. `model.init_from`, which every task takes, is read by :attr:`init_from`."""
        from seqlab.tasks import get_task

        schema = getattr(get_task(self.task), f"{name.capitalize()}Config")
        values = getattr(self, name)
        if name == "model" and values and "init_from" in values:
            values = {k: v for k, v in values.items() if k != "init_from"}
        return _validate(schema, values, prefix=f"{name}.")

    def to_dict(self) -> dict[str, Any]:
        """The resolved config (every default filled in), as written to `config.yaml`; the
        `tune` section only for a method other than `full`."""
        model = self.section("model").model_dump()
        if self.init_from:
            model["init_from"] = self.init_from
        tune = {"tune": self.tune.model_dump()} if self.tune.method != "full" else {}
        return {
            "recipe": self.recipe,
            "description": self.description,
            "task": self.task,
            "data": self.section("data").model_dump(),
            "model": model,
            "objective": self.section("objective").model_dump(),
            "trainer": self.trainer.model_dump(),
            "predict": self.section("predict").model_dump(),
            **tune,
        }


def _unknown_choice(key: str, value: Any, allowed: list[str]) -> str:
    close = difflib.get_close_matches(str(value), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{key}={value!r} is not one of: {', '.join(allowed)}{hint}"


def _fields_at(schema: type[BaseModel], path: tuple) -> list[str]:
    """Known field names of the (nested) model that `path` points into."""
    for part in path:
        field = schema.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            schema = annotation
        else:
            return []
    return list(schema.model_fields)


def _describe_error(schema: type[BaseModel], error: dict, prefix: str) -> str:
    loc = tuple(error["loc"])
    parts = [p for p in prefix.split(".") if p] + [str(part) for part in loc]
    key = ".".join(parts)
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _fields_at(schema, loc[:-1])
        section = ".".join(parts[:-1])
        close = difflib.get_close_matches(parts[-1], known, n=1, cutoff=0.5)
        hint = f"; did you mean {'.'.join(parts[:-1] + [close[0]])!r}?" if close else ""
        where = f" in section {section!r}" if section else ""
        return f"unknown config key {key!r}{where}{hint} (known keys: {', '.join(known)})"
    if kind == "missing":
        return f"config key {key!r} is required"
    if kind == "value_error":
        message = str(error.get("ctx", {}).get("error", error["msg"]))
        message = message.removeprefix("Value error, ")
        return message if not loc else f"{key}: {message}"
    value = error.get("input")
    return f"config key {key!r} has value {value!r}: {error['msg'].replace('Input should', 'it should')}"


def _validate(schema: type[BaseModel], values: Any, prefix: str = "") -> BaseModel:
    try:
        return schema.model_validate(values if values is not None else {})
    except ValidationError as exc:
        errors = exc.errors()
        message = _describe_error(schema, errors[0], prefix)
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        raise ConfigError(message) from None


_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`'trainer.lr=3e-4'` -> (['trainer', 'lr'], 0.0003): the value follows YAML scalar rules."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} must look like key.sub=value, e.g. trainer.lr=0.001")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({exc.problem})") from None
    if isinstance(value, str) and _EXPONENT_FLOAT.match(value):
        value = float(value)  # YAML 1.1 reads "3e-4" as a string; users mean a number
    return key.split("."), value


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each `a.b=value` in a copy of the nested dict `config`."""
    result = yaml.safe_load(yaml.safe_dump(config))  # deep copy of plain data
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} holds a value, not a section")
            node = child
        node[path[-1]] = value
    return result


def list_recipes() -> dict[str, str]:
    """Built-in recipe names mapped to their one-line description."""
    recipes = {}
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        data = _read_yaml(path)
        recipes[path.stem] = str(data.get("description", "")).strip()
    return recipes


def recipe_path(name: str) -> Path:
    """Path of the built-in recipe `name`; ConfigError listing the recipes when there is none."""
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        names = sorted(list_recipes())
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"{name!r} is neither a YAML file nor a built-in recipe{hint} "
            f"(recipes: {', '.join(names)})"
        )
    return path


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    return data


def validate_config(values: dict[str, Any]) -> RunConfig:
    """Check a nested dict against the schema, including the task's own sections."""
    config = _validate(RunConfig, values)
    for name in ("data", "model", "objective", "predict"):
        config.section(name)
    config.init_from  # noqa: B018  (checks the value's type)
    return config


def load_config(source: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load a recipe name or YAML path, apply overrides, validate. Raises ConfigError."""
    source = str(source)
    if source.endswith((".yaml", ".yml")) or Path(source).is_file():
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {source} does not exist")
        name = path.stem
    else:
        path = recipe_path(source)
        name = source
    values = apply_overrides(_read_yaml(path), list(overrides or []))
    values.setdefault("recipe", name)
    config = validate_config(values)
    config.overrides = list(overrides or [])
    return config
