"""Compare configurations of one recipe: a grid of training runs, one table, overlaid curves.

    seqlab compare adding-lstm model.cell=rnn,lstm,gru data.length=100 --seeds 3 --threshold "mse<0.01"

Every ``key=v1,v2,...`` override whose value holds a comma is an axis of the grid (values are
read as YAML scalars, as in ``seqlab train``; a value starting with ``[`` or ``{`` is one YAML
value, never split); the other overrides apply to every run. Configurations that differ in
several keys at once are named variants, an axis of their own::

    seqlab compare adding-lstm data.length=100 --variant "lstm: model.cell=lstm" \
        --variant "irnn: model.cell=rnn model.nonlinearity=relu model.init=identity"

``--seeds N`` adds the axis ``trainer.seed = s, s+1, ..., s+N-1`` (s = the recipe's seed). Runs
go one after the other, in the order of the grid's Cartesian product, the last axis fastest. A
run whose loss goes non-finite is recorded as failed (``failed.txt``) and the grid goes on.

Layout of a comparison directory::

    compare.json         the grid: source, axes, fixed overrides, threshold (what --resume reads)
    runs/<name>/         one seqlab run directory per configuration and seed
    table.md, table.csv  one row per run: settings, final metrics, parameters, steps, wall time,
                         steps (and seconds) until the validation metric first met --threshold;
                         table.md adds mean ± std over seeds when there are several
    curves.png           training loss and validation metric against step (top row) and against
                         wall-clock seconds (bottom row: the view for equal time budgets), one
                         colour per configuration
    gradient_flow.png    ‖∂L/∂h_t‖ over t after training (first seed of each configuration), and
    gradient_flow_init.png  the same at initialisation (runs train with trainer.diagnostics=true;
                         a finished run without diagnostics is diagnosed afterwards)
    grad_norm.png        logged gradient norm (before clipping) of each configuration

Resuming: the same command with the same ``--out`` (or ``seqlab compare --resume DIR``) skips
finished runs (``summary.json`` present) and runs that failed (``failed.txt``), resumes an
interrupted run from its checkpoint with the trainer's resume, and starts the others afresh.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from seqlab.train.config import ConfigError, load_config, parse_override

__all__ = [
    "Comparison",
    "ComparisonSpec",
    "RunRow",
    "Threshold",
    "command_line",
    "compare",
    "diagnose_run",
    "parse_threshold",
    "parse_variant",
    "resume_comparison",
    "split_overrides",
    "write_report",
]

SPEC_FILE = "compare.json"
VARIANT = "variant"  # the axis of named configurations given with --variant


@dataclass(frozen=True)
class Threshold:
    """``metric op value``, e.g. ``mse < 0.01``: when a validation metric counts as reached."""

    metric: str
    op: str
    value: float

    def reached(self, value: float | None) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return {"<": value < self.value, "<=": value <= self.value,
                ">": value > self.value, ">=": value >= self.value}[self.op]

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


_THRESHOLD = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|<|>)\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*$")


def parse_threshold(text: str) -> Threshold:
    """``"mse<0.01"`` -> Threshold("mse", "<", 0.01); ConfigError naming the accepted form."""
    match = _THRESHOLD.match(text)
    if not match:
        raise ConfigError(f"--threshold {text!r} should look like METRIC<VALUE or METRIC>VALUE "
                          "(also <=, >=), e.g. --threshold 'mse<0.01' or --threshold 'accuracy>0.9'")
    return Threshold(match.group(1), match.group(2), float(match.group(3)))


def split_overrides(overrides: list[str]) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """(axes, fixed): ``key=a,b`` becomes the axis (key, [a, b]); other overrides stay as they are.

    Raises ConfigError for a malformed override, an empty value in a list, or a key given twice.
    """
    axes: list[tuple[str, list[str]]] = []
    fixed: list[str] = []
    seen: set[str] = set()
    for text in overrides:
        path, _ = parse_override(text)  # checks the key=value form
        key = ".".join(path)
        if key in seen:
            raise ConfigError(f"{key} is given twice; give all its values in one override, e.g. {key}=a,b")
        seen.add(key)
        raw = text.partition("=")[2].strip()
        if "," in raw and not raw.startswith(("[", "{", "'", '"')):
            values = [value.strip() for value in raw.split(",")]
            if any(not value for value in values):
                raise ConfigError(f"override {text!r} has an empty value between commas")
            axes.append((key, values))
        else:
            fixed.append(f"{key}={raw}")
    return axes, fixed


@dataclass
class ComparisonSpec:
    """What to compare: a recipe or YAML file, the grid axes, overrides for every run, threshold."""

    source: str
    axes: list[tuple[str, list[str]]]
    fixed: list[str] = field(default_factory=list)
    threshold: str | None = None
    diagnostics: bool = True
    variants: dict[str, list[str]] = field(default_factory=dict)  # name -> its overrides

    def to_dict(self) -> dict:
        return {"source": self.source, "axes": [[key, list(values)] for key, values in self.axes],
                "fixed": list(self.fixed), "threshold": self.threshold, "diagnostics": self.diagnostics,
                "variants": {name: list(values) for name, values in self.variants.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> ComparisonSpec:
        return cls(data["source"], [(key, list(values)) for key, values in data["axes"]],
                   list(data.get("fixed", [])), data.get("threshold"), bool(data.get("diagnostics", True)),
                   {name: list(values) for name, values in data.get("variants", {}).items()})

    def settings(self) -> list[dict[str, str]]:
        """One {key: value} per run, the Cartesian product of the axes (last axis fastest)."""
        keys = [key for key, _ in self.axes]
        return [dict(zip(keys, combo)) for combo in itertools.product(*(values for _, values in self.axes))]

    def run_overrides(self, settings: dict[str, str]) -> list[str]:
        extra = ["trainer.diagnostics=true"] if self.diagnostics else []
        overrides = [*self.fixed, *extra]
        for key, value in settings.items():
            overrides += self.variants[value] if key == VARIANT else [f"{key}={value}"]
        return overrides


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"irnn: model.cell=rnn model.init=identity"`` -> ("irnn", ["model.cell=rnn", ...])."""
    name, sep, rest = text.partition(":")
    name = name.strip()
    overrides = rest.split()
    if not sep or not re.fullmatch(r"[\w.+-]+", name) or not overrides:
        raise ConfigError(f"--variant {text!r} should look like 'NAME: key=value key=value', "
                          "e.g. --variant 'irnn: model.cell=rnn model.nonlinearity=relu model.init=identity'")
    for override in overrides:
        parse_override(override)
    return name, overrides


def _short_keys(keys: list[str]) -> dict[str, str]:
    """The last part of each dotted key (`model.cell` -> `cell`) unless two keys would clash."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: (short if last.count(short) == 1 else key) for key, short in zip(keys, last)}


def run_name(settings: dict[str, str]) -> str:
    """A directory name for one run, e.g. ``cell=lstm_seed=0`` (``run`` when there is no axis)."""
    short = _short_keys(list(settings))
    name = "_".join(f"{short[key]}={value}" for key, value in settings.items()) or "run"
    return re.sub(r"[^\w.=+-]", "-", name)


@dataclass
class RunRow:
    """One run's line of the table."""

    name: str
    settings: dict[str, str]
    status: str  # "done" | "failed: <message>"
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> metric -> value
    num_parameters: int | None = None
    steps: int | None = None
    elapsed_seconds: float | None = None
    threshold_step: int | None = None
    threshold_seconds: float | None = None
    run_dir: Path | None = None


@dataclass
class Comparison:
    out_dir: Path
    spec: ComparisonSpec
    rows: list[RunRow]
    files: list[Path] = field(default_factory=list)


def _default_out_dir(source: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Path("runs") / f"compare-{Path(source).stem}-{stamp}"


def _read_spec(out_dir: Path) -> ComparisonSpec:
    path = out_dir / SPEC_FILE
    if not path.is_file():
        from seqlab.train.run import RunDirError

        raise RunDirError(f"{out_dir} is not a seqlab comparison directory (no {SPEC_FILE} in it)")
    return ComparisonSpec.from_dict(json.loads(path.read_text(encoding="utf-8")))


def compare(source: str, overrides: list[str], seeds: int | None = None, threshold: str | None = None,
            out_dir: str | Path | None = None, diagnostics: bool = True, console=None,
            variants: list[str] | None = None) -> Comparison:
    """Train every configuration of the grid into `out_dir` and write the report there.

    `overrides` are ``key=value`` / ``key=v1,v2,...`` strings (see the module doc). Every
    configuration is validated before the first run starts, so a typo costs no training time.
    An existing `out_dir` must hold the same comparison; it is then resumed.
    """
    axes, fixed = split_overrides(overrides)
    named = dict(parse_variant(text) for text in variants or [])
    if len(named) != len(variants or []):
        raise ConfigError("two --variant options share a name; give each its own")
    if named:
        axes.insert(0, (VARIANT, list(named)))
    if seeds is not None:
        if seeds < 1:
            raise ConfigError(f"--seeds {seeds} should be at least 1")
        if any(key == "trainer.seed" for key, _ in axes):
            raise ConfigError("give either --seeds N or trainer.seed=a,b,..., not both")
        base = load_config(source, fixed).trainer.seed
        fixed = [text for text in fixed if not text.startswith("trainer.seed=")]
        axes.append(("trainer.seed", [str(base + i) for i in range(seeds)]))
    if threshold is not None:
        threshold = str(parse_threshold(threshold))
    spec = ComparisonSpec(source, axes, fixed, threshold, diagnostics, named)
    out_dir = Path(out_dir) if out_dir is not None else _default_out_dir(source)
    if (out_dir / SPEC_FILE).is_file():
        previous = _read_spec(out_dir)
        if previous.to_dict() != spec.to_dict():
            from seqlab.train.run import RunDirError

            grid = " ".join(f"{key}={','.join(values)}" for key, values in previous.axes)
            raise RunDirError(
                f"{out_dir} holds another comparison ({previous.source} {grid}); pick another --out, "
                f"or continue it with `seqlab compare --resume {out_dir}`")
    elif out_dir.exists() and any(out_dir.iterdir()):
        from seqlab.train.run import RunDirError

        raise RunDirError(f"{out_dir} already exists and is not a comparison directory; pick another --out")
    return _run(spec, out_dir, console)


def resume_comparison(out_dir: str | Path, console=None) -> Comparison:
    """Continue the comparison in `out_dir` where it stopped (see the module doc)."""
    out_dir = Path(out_dir)
    return _run(_read_spec(out_dir), out_dir, console)


def _run(spec: ComparisonSpec, out_dir: Path, console) -> Comparison:
    from seqlab.train.loop import TrainingError
    from seqlab.train.run import load_run_config, train

    plan = []
    for settings in spec.settings():
        config = load_config(spec.source, spec.run_overrides(settings))  # ConfigError before any run
        plan.append((settings, config))
    names = [run_name(settings) for settings, _ in plan]
    if len(set(names)) != len(names):
        raise ConfigError("two runs of the grid would share a directory name; give distinct values")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=2) + "\n", encoding="utf-8")

    for index, ((settings, config), name) in enumerate(zip(plan, names)):
        run_dir = out_dir / "runs" / name
        if (run_dir / "summary.json").is_file() or (run_dir / "failed.txt").is_file():
            continue
        label = f"[{index + 1}/{len(plan)}] {name}"
        resume = (run_dir / "checkpoint" / "state.json").is_file()
        if console is not None:
            console.print(f"{label}: {'resuming' if resume else 'training'} in {run_dir}", highlight=False)
        if resume:
            config = load_run_config(run_dir)
        elif run_dir.exists():
            shutil.rmtree(run_dir)  # stopped before its first checkpoint: nothing to keep
        try:
            train(config, run_dir=run_dir, resume=resume, console=console)
        except TrainingError as exc:
            (run_dir / "failed.txt").write_text(str(exc) + "\n", encoding="utf-8")
            if console is not None:
                console.print(f"{label}: failed: {exc}", highlight=False)
        if spec.diagnostics and (run_dir / "summary.json").is_file():
            _diagnose(run_dir)
    rows = [_read_row(out_dir / "runs" / name, name, settings, spec)
            for (settings, _), name in zip(plan, names)]
    metric = _task_metric(plan[0][1].task) if plan else "loss"
    files = write_report(spec, rows, out_dir, metric)
    return Comparison(out_dir, spec, rows, files)


def diagnose_run(run_dir: str | Path) -> list[Path]:
    """Diagnostics of a finished run, afterwards: its best weights ("final") and a fresh
    initialisation drawn with the run's seed ("init"), into ``diagnostics.json`` and ``plots/``
    (see :func:`seqlab.viz.diagnostics.write_run_diagnostics`). Returns the plots written."""
    import torch

    from seqlab.train.run import open_run, seed_everything
    from seqlab.viz.diagnostics import write_run_diagnostics

    run_dir = Path(run_dir)
    config, task, model, device = open_run(run_dir)
    task.prepare(fit_vocab=False)
    batch_size = config.trainer.batch_size
    clip = config.trainer.clip_grad_norm
    with torch.random.fork_rng(devices=[]):
        seed_everything(config.trainer.seed)
        initial = task.build_model().to(device)
    write_run_diagnostics(run_dir, "init", task, initial, device, batch_size, clip)
    return write_run_diagnostics(run_dir, "final", task, model, device, batch_size, clip)


def _diagnose(run_dir: Path) -> None:
    """Diagnose a finished run unless its training already did (trainer.diagnostics)."""
    path = run_dir / "diagnostics.json"
    if path.is_file() and "final" in json.loads(path.read_text(encoding="utf-8")):
        return
    diagnose_run(run_dir)


def _task_metric(task: str) -> str:
    from seqlab.tasks import get_task

    return get_task(task).metric


def _read_row(run_dir: Path, name: str, settings: dict[str, str], spec: ComparisonSpec) -> RunRow:
    from seqlab.train.reporting import read_metrics

    row = RunRow(name, settings, "done", run_dir=run_dir)
    failed = run_dir / "failed.txt"
    if failed.is_file():
        row.status = "failed: " + failed.read_text(encoding="utf-8").strip().split(";")[0]
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        run = summary.pop("run", {})
        row.metrics = summary
        row.num_parameters = run.get("num_parameters")
        row.steps = run.get("steps")
        row.elapsed_seconds = run.get("elapsed_seconds")
    elif not failed.is_file():
        row.status = "not run"
    if spec.threshold and (run_dir / "metrics.jsonl").is_file():
        threshold = parse_threshold(spec.threshold)
        for record in read_metrics(run_dir / "metrics.jsonl"):
            if record.get("split") == "valid" and threshold.reached((record.get("metrics") or {}).get(threshold.metric)):
                row.threshold_step, row.threshold_seconds = record["step"], record.get("elapsed")
                break
    return row


def _metric_columns(rows: list[RunRow]) -> list[tuple[str, str]]:
    columns: list[tuple[str, str]] = []
    for split in ("valid", "test"):
        for row in rows:
            for name in row.metrics.get(split, {}):
                if (split, name) not in columns:
                    columns.append((split, name))
    return columns


def _format(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    return str(value)


def _table(spec: ComparisonSpec, rows: list[RunRow]) -> tuple[list[str], list[list]]:
    keys = [key for key, _ in spec.axes]
    short = _short_keys(keys)
    metric_columns = _metric_columns(rows)
    header = [short[key] for key in keys] + [f"{split} {name}" for split, name in metric_columns]
    header += ["parameters", "steps", "wall s"]
    if spec.threshold:
        header += [f"steps to {spec.threshold}", f"s to {spec.threshold}"]
    header.append("status")
    body = []
    for row in rows:
        line = [row.settings.get(key) for key in keys]
        line += [row.metrics.get(split, {}).get(name) for split, name in metric_columns]
        line += [row.num_parameters, row.steps, row.elapsed_seconds]
        if spec.threshold:
            line += [row.threshold_step, row.threshold_seconds]
        line.append(row.status)
        body.append(line)
    return header, body


def _markdown(header: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_format(value) for value in line) + " |" for line in body]
    return "\n".join(lines) + "\n"


def _seed_summary(spec: ComparisonSpec, rows: list[RunRow]) -> str:
    """Mean ± std over seeds of each numeric column, per configuration (markdown), or ''."""
    seed_values = dict(spec.axes).get("trainer.seed", [])
    if len(seed_values) < 2:
        return ""
    keys = [key for key, _ in spec.axes if key != "trainer.seed"]
    short = _short_keys([key for key, _ in spec.axes])
    metric_columns = _metric_columns(rows)
    header = [short[key] for key in keys] + [f"{split} {name}" for split, name in metric_columns] + ["wall s"]
    if spec.threshold:
        header += [f"reached {spec.threshold}", "median steps to it"]
    groups: dict[tuple, list[RunRow]] = {}
    for row in rows:
        groups.setdefault(tuple(row.settings.get(key) for key in keys), []).append(row)
    body = []
    for group, members in groups.items():
        done = [row for row in members if row.status == "done"]
        line = list(group)
        for split, name in metric_columns:
            line.append(_mean_std([row.metrics.get(split, {}).get(name) for row in done]))
        line.append(_mean_std([row.elapsed_seconds for row in done]))
        if spec.threshold:
            reached = [row.threshold_step for row in members if row.threshold_step is not None]
            line += [f"{len(reached)}/{len(members)}", statistics.median(reached) if reached else None]
        body.append(line)
    return f"Mean ± standard deviation over {len(seed_values)} seeds:\n\n" + _markdown(header, body)


def _mean_std(values: list) -> str:
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def write_report(spec: ComparisonSpec, rows: list[RunRow], out_dir: str | Path, metric: str = "loss") -> list[Path]:
    """Write table.md, table.csv, curves.png and (from the runs' diagnostics) gradient plots."""
    out_dir = Path(out_dir)
    header, body = _table(spec, rows)
    named = " ".join(f"--variant '{name}: {' '.join(values)}'" for name, values in spec.variants.items())
    grid = " ".join(f"{key}={','.join(values)}" for key, values in spec.axes if key != VARIANT)
    threshold = f"--threshold '{spec.threshold}'" if spec.threshold else ""
    title = " ".join(part for part in ("seqlab compare", spec.source, grid, " ".join(spec.fixed), named,
                                       threshold) if part)
    text = f"# {title}\n\n" + _markdown(header, body)
    seeds = _seed_summary(spec, rows)
    if seeds:
        text += "\n" + seeds
    files = [out_dir / "table.md", out_dir / "table.csv"]
    files[0].write_text(text, encoding="utf-8")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([["" if value is None else value for value in line] for line in body])
    files[1].write_text(buffer.getvalue(), encoding="utf-8")
    files += _plots(spec, rows, out_dir, metric)
    return files


def _group_name(spec: ComparisonSpec, settings: dict[str, str]) -> str:
    keys = [key for key, _ in spec.axes if key != "trainer.seed"]
    short = _short_keys([key for key, _ in spec.axes])
    return " ".join(f"{short[key]}={settings[key]}" for key in keys) or spec.source


def _plots(spec: ComparisonSpec, rows: list[RunRow], out_dir: Path, metric: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from seqlab.train.reporting import read_metrics
    from seqlab.viz.diagnostics import Diagnostics, plot_gradient_flow

    threshold = parse_threshold(spec.threshold) if spec.threshold else None
    if threshold is not None:
        metric = threshold.metric
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    groups: list[str] = []
    figure, axes_grid = plt.subplots(2, 2, figsize=(12, 9))
    (loss_axes, metric_axes), (loss_time_axes, metric_time_axes) = axes_grid
    grad_series: dict[str, list[float]] = {}
    init_series: dict[str, list[float]] = {}
    norm_series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        path = row.run_dir / "metrics.jsonl" if row.run_dir else None
        if path is None or not path.is_file():
            continue
        group = _group_name(spec, row.settings)
        first = group not in groups
        if first:
            groups.append(group)
        colour = colours[groups.index(group) % len(colours)]
        records = read_metrics(path)
        for x_key, train_axes, valid_axes in (("step", loss_axes, metric_axes),
                                              ("elapsed", loss_time_axes, metric_time_axes)):
            train = [(r.get(x_key), r["metrics"].get("loss")) for r in records
                     if r["split"] == "train" and r["metrics"].get("loss") is not None]
            valid = [(r.get(x_key), r["metrics"].get(metric)) for r in records
                     if r["split"] == "valid" and r["metrics"].get(metric) is not None]
            for axes, points in ((train_axes, train), (valid_axes, valid)):
                points = [(x, y) for x, y in points if x is not None]
                if points:
                    xs, values = zip(*points)
                    axes.plot(xs, values, color=colour, alpha=0.9 if first else 0.45,
                              label=group if first else None,
                              marker="o" if axes is valid_axes else None, markersize=2.5)
        if first:
            norm_series[group] = [(r["step"], r["grad_norm"]) for r in records
                                  if r["split"] == "train" and r.get("grad_norm") is not None]
            diagnostics_path = row.run_dir / "diagnostics.json"
            if diagnostics_path.is_file():
                data = json.loads(diagnostics_path.read_text(encoding="utf-8"))
                for stage, series in (("final", grad_series), ("init", init_series)):
                    if stage in data and data[stage]["gradient_norms"]:
                        norms = Diagnostics.from_dict(data[stage]).gradient_norms
                        series[group] = next(iter(norms.values()))  # the first layer's forward run
    loss_axes.set_title("training loss")
    metric_axes.set_title(f"validation {metric}")
    loss_time_axes.set_title("training loss, by wall-clock time")
    metric_time_axes.set_title(f"validation {metric}, by wall-clock time")
    if threshold is not None:
        for axes in (metric_axes, metric_time_axes):
            axes.axhline(threshold.value, color="grey", linestyle=":", linewidth=1)
    for axes in axes_grid.flat:
        axes.set_xlabel("step" if axes in (loss_axes, metric_axes) else "seconds of training")
        lines = [value for line in axes.get_lines() for value in line.get_ydata()]
        positive = [v for v in lines if isinstance(v, float) and v > 0]
        if positive and len(positive) == len(lines) and max(positive) / min(positive) > 20:
            axes.set_yscale("log")
        axes.grid(alpha=0.3, which="both")
        if any(line.get_label() in groups for line in axes.get_lines()):
            axes.legend(fontsize=8)
    figure.suptitle(f"{spec.source}: {len(rows)} runs", fontsize=10)
    figure.tight_layout()
    files = [out_dir / "curves.png"]
    figure.savefig(files[0], dpi=100)
    plt.close(figure)
    if grad_series:
        files.append(plot_gradient_flow(grad_series, out_dir / "gradient_flow.png",
                                        title="‖∂L/∂h_t‖ after training (layer 0)"))
    if init_series:
        files.append(plot_gradient_flow(init_series, out_dir / "gradient_flow_init.png",
                                        title="‖∂L/∂h_t‖ at initialisation (layer 0)"))
    if any(norm_series.values()):
        figure, axes = plt.subplots(figsize=(6.5, 4))
        for group, points in norm_series.items():
            if points:
                steps, values = zip(*points)
                axes.plot(steps, values, label=group, color=colours[groups.index(group) % len(colours)])
        axes.set_yscale("log")
        axes.set_xlabel("step")
        axes.set_ylabel("‖g‖₂ before clipping")
        axes.set_title("gradient norm (as logged, before clipping)")
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize=8)
        figure.tight_layout()
        files.append(out_dir / "grad_norm.png")
        figure.savefig(files[-1], dpi=100)
        plt.close(figure)
    return files


def command_line(args: list[str], console=None) -> int:
    """`seqlab compare ...` (the arguments after `compare`); prints the table, returns 0."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="seqlab compare",
        description="Train a grid of configurations of one recipe and compare them in one table.",
        epilog="example: seqlab compare adding-lstm model.cell=rnn,lstm,gru --seeds 2 --threshold 'mse<0.01'",
    )
    parser.add_argument("source", nargs="?", help="recipe name or FILE.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value (every run) or key=v1,v2,... (an axis)")
    parser.add_argument("--variant", action="append", default=[], metavar="'NAME: key=v ...'",
                        help="a named configuration (several keys at once); repeat for each")
    parser.add_argument("--seeds", type=int, help="train each configuration with N seeds")
    parser.add_argument("--threshold", metavar="METRIC<VALUE",
                        help="also report the steps until the validation metric first meets this")
    parser.add_argument("--out", help="comparison directory (default runs/compare-<recipe>-<timestamp>)")
    parser.add_argument("--no-diagnostics", action="store_true",
                        help="skip the gradient-flow and gate diagnostics of each run")
    parser.add_argument("--resume", metavar="DIR", help="continue an interrupted comparison")
    options = parser.parse_intermixed_args(args)
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    if not options.resume and not options.source:
        parser.error("give a recipe name or a FILE.yaml (see `seqlab recipes`)")
    out_dir = Path(options.resume or options.out or _default_out_dir(options.source))
    try:
        if options.resume:
            result = resume_comparison(out_dir, console=console)
        else:
            result = compare(options.source, options.overrides, seeds=options.seeds,
                             threshold=options.threshold, out_dir=out_dir,
                             diagnostics=not options.no_diagnostics, console=console,
                             variants=options.variant)
    except KeyboardInterrupt:
        # The run that was training kept its last checkpoint; --resume picks the grid up there.
        console.print(f"seqlab: interrupted; continue with `seqlab compare --resume {out_dir}`", highlight=False)
        raise KeyboardInterrupt from None
    print((result.out_dir / "table.md").read_text(encoding="utf-8"))
    print(f"comparison directory: {result.out_dir} ({', '.join(p.name for p in result.files)})")
    return 0
