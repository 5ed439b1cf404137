"""The `seqlab` command: list recipes, train, evaluate a run, predict with a run.

    seqlab recipes
    seqlab train RECIPE|FILE.yaml [key.sub=value ...] [--run-dir DIR] [--resume RUN_DIR]
    seqlab eval RUN_DIR [data.test=PATH ...]
    seqlab predict RUN_DIR [TEXT ...]          (reads lines from stdin when no TEXT is given)
    seqlab compare RECIPE|FILE.yaml [key=v1,v2,... ...] [--variant 'NAME: key=v ...'] [--seeds N]
                   [--threshold 'METRIC<VALUE'] [--out DIR] [--resume DIR]

Exit status: 0 on success, 2 for usage / config / data / run-directory errors (one line on
stderr, no traceback), 1 when training stops on a non-finite loss, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["main"]

USER_ERROR = 2
TRAINING_FAILED = 1
INTERRUPTED = 130


def _error(message: str) -> None:
    print(f"seqlab: error: {message}", file=sys.stderr)


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _cmd_recipes(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="seqlab recipes", description="List the built-in recipes.")
    parser.parse_args(args)
    from seqlab.train.config import list_recipes

    recipes = list_recipes()
    width = max((len(name) for name in recipes), default=0)
    for name, description in recipes.items():
        print(f"{name:<{width}}  {description}")
    return 0


def _cmd_train(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="seqlab train",
        description="Train a model from a built-in recipe or a YAML config.",
        epilog="example: seqlab train charlm-lstm trainer.max_steps=200 model.hidden_size=128",
    )
    parser.add_argument("source", nargs="?", help="recipe name (see `seqlab recipes`) or FILE.yaml")
    parser.add_argument("overrides", nargs="*", help="key.sub=value settings applied on top")
    parser.add_argument("--run-dir", help="where to write the run (default runs/<recipe>-<timestamp>)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    options = parser.parse_intermixed_args(args)

    from seqlab.train.config import load_config
    from seqlab.train.run import load_run_config, train

    overrides = list(options.overrides)
    if options.resume:
        if options.source and "=" in options.source:
            overrides.insert(0, options.source)
        elif options.source:
            print(f"seqlab: note: resuming with the config saved in {options.resume}; "
                  f"{options.source!r} is not used", file=sys.stderr)
        config = load_run_config(options.resume, overrides)
        run_dir = Path(options.resume)
    else:
        if not options.source:
            parser.error("give a recipe name or a FILE.yaml (see `seqlab recipes`)")
        config = load_config(options.source, overrides)
        run_dir = Path(options.run_dir) if options.run_dir else None
    result = train(config, run_dir=run_dir, resume=bool(options.resume))
    if not _is_main_process():
        return 0
    _print_result(result)
    return 0


def _format_metrics(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())


def _print_result(result) -> None:
    run = result.summary.get("run", {})
    print(f"finished after {run.get('steps')} steps ({run.get('stop_reason')}), "
          f"best at step {run.get('best_step')}, {run.get('elapsed_seconds')} s")
    for split in ("valid", "test"):
        if split in result.summary:
            print(f"{split}: {_format_metrics(result.summary[split])}")
    if result.report:
        print()
        for line in result.report:
            print(line)
        print()
    print(f"run directory: {result.run_dir}")
    if result.plots:
        print(f"plots: {result.run_dir / 'plots'} ({', '.join(p.name for p in result.plots)})")
    print(f"next: seqlab eval {result.run_dir}  |  seqlab predict {result.run_dir} TEXT")


def _cmd_eval(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="seqlab eval", description="Evaluate a run's best weights.")
    parser.add_argument("run_dir")
    parser.add_argument("overrides", nargs="*", help="e.g. data.test=PATH")
    options = parser.parse_intermixed_args(args)
    from seqlab.train.run import evaluate_run

    results = evaluate_run(options.run_dir, options.overrides)
    for split, metrics in results.items():
        print(f"{split}: {_format_metrics(metrics)}")
    print(json.dumps(results))
    return 0


def _cmd_predict(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="seqlab predict",
        description="Classify / tag / generate with a trained run: one output line per input.",
    )
    parser.add_argument("run_dir")
    parser.add_argument("texts", nargs="*", help="inputs; read from stdin (one per line) when absent")
    options = parser.parse_args(args)
    from seqlab.train.run import predict_run

    texts = list(options.texts)
    if not texts:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for line in predict_run(options.run_dir, texts):
        print(line)
    return 0


def _cmd_compare(args: list[str]) -> int:
    from seqlab.compare import command_line

    return command_line(args)


COMMANDS = {"recipes": _cmd_recipes, "train": _cmd_train, "eval": _cmd_eval, "predict": _cmd_predict,
            "compare": _cmd_compare}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        usage = __doc__.split("\n\n")[1]
        if argv and argv[0] not in ("-h", "--help"):
            _error(f"unknown command {argv[0]!r}; choose one of: {', '.join(COMMANDS)}")
            print(f"usage:\n{usage}", file=sys.stderr)
            return USER_ERROR
        print(f"usage:\n{usage}")
        return 0 if argv else USER_ERROR

    from seqlab.data.readers import DataError
    from seqlab.tasks.base import Task  # noqa: F401  (imports the task registry early)
    from seqlab.train.checkpoint import CheckpointError
    from seqlab.train.config import ConfigError
    from seqlab.train.loop import TrainingError
    from seqlab.train.run import RunDirError

    try:
        return COMMANDS[argv[0]](argv[1:])
    except (ConfigError, DataError, RunDirError, CheckpointError) as exc:
        _error(str(exc))
        return USER_ERROR
    except TrainingError as exc:
        _error(str(exc))
        return TRAINING_FAILED
    except BrokenPipeError:
        # The reader of our output went away (`| head`); stop quietly like other commands do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:
        run_dir = getattr(exc, "run_dir", None)
        if run_dir is not None and (run_dir / "checkpoint" / "state.json").is_file():
            _error(f"interrupted; continue from the last checkpoint with `seqlab train --resume {run_dir}`")
        elif run_dir is not None:
            _error(f"interrupted before the first checkpoint; {run_dir} cannot be resumed")
        else:
            _error("interrupted")
        return INTERRUPTED
