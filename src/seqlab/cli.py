"""The `seqlab` command: list recipes, train, evaluate a run, predict with a run.

    seqlab recipes
    seqlab train RECIPE|FILE.yaml [key.sub=value ...] [--run-dir DIR] [--resume RUN_DIR]
    seqlab eval RUN_DIR [data.test=PATH ...]
    seqlab predict RUN_DIR [predict.key=value ...] [TEXT ...]   (stdin lines when no TEXT)
    seqlab compare RECIPE|FILE.yaml [key=v1,v2,... ...] [--variant 'NAME: key=v ...'] [--seeds N]
                   [--threshold 'METRIC<VALUE'] [--out DIR] [--resume DIR]
    seqlab embed RUN_DIR [TEXT ...] [--format jsonl|npy] [--out FILE]   (stdin when no TEXT)
    seqlab probe RUN_DIR data.train=PATH data.test=PATH [data.valid=PATH] [--random-init]
    seqlab export RUN_DIR --format onnx|hf --out DIR   (predict / eval also read an ONNX DIR)
    seqlab quantize RUN_DIR|ONNX_DIR --out DIR         (int8 weights, read by predict / eval / serve)
    seqlab serve RUN_DIR|ONNX_DIR [...] [--host 127.0.0.1] [--port 8000]
    seqlab merge RUN_DIR --out DIR                 (a LoRA run folded into plain weights)
    seqlab chat RUN_DIR|ONNX_DIR [--temperature T] [--top-p P] [--system TEXT]   (an sft / dpo run)

Exit status: 0 on success, 2 for usage / config / data / run-directory errors (one line on
stderr, no traceback), 1 when training stops on a non-finite loss, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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

    if _is_export_dir(options.run_dir):
        return _with_export_errors(_print_export_eval, options.run_dir, options.overrides)
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
    parser.add_argument("texts", nargs="*", metavar="[key=value ...] [TEXT ...]",
                        help="settings such as predict.beam_size=1 first, then the inputs; read "
                             "from stdin (one per line) when no input is given")
    options = parser.parse_args(args)
    from seqlab.train.run import predict_run

    overrides, texts = _split_overrides(options.texts)
    if not texts:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if _is_export_dir(options.run_dir):
        return _with_export_errors(_print_export_predictions, options.run_dir, texts, overrides)
    for line in predict_run(options.run_dir, texts, overrides):
        print(line)
    return 0


_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+=")


def _split_overrides(items: list[str]) -> tuple[list[str], list[str]]:
    """Leading `section.key=value` items (settings) and the rest (inputs). An input that looks
    like a setting can come after another input, or through stdin."""
    count = 0
    while count < len(items) and _OVERRIDE.match(items[count]):
        count += 1
    return items[:count], items[count:]


def _is_export_dir(path: str) -> bool:
    return (Path(path) / "export.json").is_file()


def _with_export_errors(command, *args) -> int:
    """Run an export / quantize / serve step; its ExportError is a one-line user error."""
    try:
        from seqlab.export import ExportError
    except ImportError as exc:
        _error(f"this needs the onnx extra ({exc.name} is missing): pip install 'seqlab[onnx]'")
        return USER_ERROR
    try:
        return command(*args)
    except ExportError as exc:
        _error(str(exc))
        return USER_ERROR
    except ImportError as exc:
        _error(f"{exc.name} is missing; install the extras: pip install 'seqlab[onnx,hf,serve]'")
        return USER_ERROR


def _print_export_predictions(directory: str, texts: list[str], overrides: list[str]) -> int:
    from seqlab.export import predict_export

    for line in predict_export(directory, texts, overrides):
        print(line)
    return 0


def _print_export_eval(directory: str, overrides: list[str]) -> int:
    from seqlab.export import evaluate_export

    results = evaluate_export(directory, overrides)
    for split, metrics in results.items():
        print(f"{split}: {_format_metrics(metrics)}")
    print(json.dumps(results))
    return 0


def _cmd_export(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="seqlab export",
        description="Export a run: ONNX graphs for onnxruntime, or a Hugging Face directory.",
        epilog="example: seqlab export runs/gpt-charlm --format onnx --out deploy/gpt",
    )
    parser.add_argument("run_dir")
    parser.add_argument("--format", choices=["onnx", "hf"], default="onnx")
    parser.add_argument("--out", required=True, help="the directory to write")
    options = parser.parse_args(args)

    def export() -> int:
        if options.format == "hf":
            from seqlab.export.hf import export_hf

            result = export_hf(options.run_dir, options.out)
            print(f"{result['architecture']} written to {options.out} "
                  f"(tokenizer: {result['tokenizer'] or 'not expressible, ids only'}); "
                  f"largest logit difference from seqlab: {result['max_abs_difference']:.2e}")
            return 0
        from seqlab.export import export_onnx

        manifest = export_onnx(options.run_dir, options.out)
        for graph in manifest["graphs"].values():
            size = (Path(options.out) / graph["file"]).stat().st_size
            print(f"{graph['file']}: {size / 1e6:.2f} MB, inputs {', '.join(graph['inputs'])}; "
                  f"largest difference from torch {graph['max_abs_difference']:.2e}")
        print(f"next: seqlab predict {options.out} TEXT  |  seqlab quantize {options.out} --out DIR")
        return 0

    return _with_export_errors(export)


def _cmd_quantize(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="seqlab quantize",
        description="int8 dynamic quantisation of a run's (or an ONNX export's) weights.",
        epilog="example: seqlab quantize runs/classify-bilstm --out deploy/classify-int8",
    )
    parser.add_argument("source", help="a run directory or an ONNX export directory")
    parser.add_argument("--out", required=True, help="the directory to write")
    options = parser.parse_args(args)

    def quantize() -> int:
        from seqlab.export.quantize import quantize_export

        manifest = quantize_export(options.source, options.out)
        for graph in manifest["graphs"].values():
            print(f"{graph['file']}: {graph['bytes'] / 1e6:.2f} MB "
                  f"({graph['bytes'] / graph['float_bytes']:.2f}x the float graph)")
        print(f"next: seqlab predict {options.out} TEXT  |  seqlab eval {options.out}")
        return 0

    return _with_export_errors(quantize)


def _cmd_serve(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="seqlab serve",
        description="Serve runs (or ONNX exports) over HTTP, with a page at / to try them.",
        epilog="example: seqlab serve runs/gpt-charlm runs/classify-bilstm --port 8000",
    )
    parser.add_argument("runs", nargs="+", help="run or export directories; NAME=DIR names one")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch-size", type=int, default=32,
                        help="most inputs one forward pass takes (requests are batched together)")
    parser.add_argument("--batch-window-ms", type=float, default=5.0,
                        help="how long a request waits for others to share its forward pass")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per forward pass (torch and onnxruntime; default: theirs)")
    options = parser.parse_args(args)

    def serve() -> int:
        from seqlab.serve import ServeSettings, run_server

        settings = ServeSettings(max_batch_size=options.max_batch_size,
                                 batch_window_ms=options.batch_window_ms)
        run_server(options.runs, host=options.host, port=options.port, settings=settings,
                   threads=options.threads)
        return 0

    return _with_export_errors(serve)


def _cmd_compare(args: list[str]) -> int:
    from seqlab.compare import command_line

    return command_line(args)


def _cmd_embed(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="seqlab embed",
        description="One sentence vector per input text, from a run's best weights.",
    )
    parser.add_argument("run_dir")
    parser.add_argument("texts", nargs="*", help="inputs; read from stdin (one per line) when absent")
    parser.add_argument("--format", choices=("jsonl", "npy"), default="jsonl",
                        help="jsonl: one JSON line per text (default); npy: one (N, H) array")
    parser.add_argument("--out", help="write to this file instead of standard output")
    parser.add_argument("--batch-size", type=int, default=64)
    options = parser.parse_args(args)
    import numpy as np

    from seqlab.embed import embed_texts

    texts = list(options.texts) or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    vectors = embed_texts(options.run_dir, texts, batch_size=options.batch_size)
    if options.format == "npy":
        if options.out:
            np.save(options.out, vectors)
        elif sys.stdout.isatty():
            from seqlab.schema import ConfigError

            raise ConfigError("--format npy writes binary data: give --out FILE.npy or "
                              "redirect standard output to a file")
        else:
            np.save(sys.stdout.buffer, vectors)
        return 0
    lines = (json.dumps({"text": text, "embedding": [round(float(v), 6) for v in vector]})
             for text, vector in zip(texts, vectors))
    if options.out:
        Path(options.out).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    else:
        for line in lines:
            print(line)
    return 0


def _cmd_probe(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="seqlab probe",
        description="Accuracy of a logistic-regression probe on a run's frozen sentence vectors.",
        epilog="example: seqlab probe runs/pretrain-mlm-... data.train=train.tsv "
               "data.test=test.tsv data.text_column=sentence",
    )
    parser.add_argument("run_dir")
    parser.add_argument("overrides", nargs="*", help="data.train / data.valid / data.test / "
                        "data.text_column / data.label_column / probe.C=...")
    parser.add_argument("--random-init", action="store_true",
                        help="the run's architecture with fresh random weights (a baseline)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    options = parser.parse_intermixed_args(args)
    from seqlab.embed import ProbeConfig, probe
    from seqlab.train.config import _validate, apply_overrides

    config = _validate(ProbeConfig, apply_overrides({}, options.overrides))
    results = probe(options.run_dir, config, random_init=options.random_init)
    if options.json:
        print(json.dumps(results))
        return 0
    for split in ("train", "valid", "test"):
        if f"{split}_accuracy" in results:
            print(f"{split}: accuracy {results[f'{split}_accuracy']:.4f}")
    print(f"probe: logistic regression, C={results['C']:g}, {results['dimensions']} dimensions")
    return 0


def _cmd_merge(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="seqlab merge",
        description="Fold a LoRA-tuned run into plain weights: a normal run directory.",
        epilog="example: seqlab merge runs/bert-classify-lora --out runs/bert-classify-merged",
    )
    parser.add_argument("run_dir")
    parser.add_argument("--out", required=True, help="the directory to write (new or empty)")
    options = parser.parse_args(args)
    from seqlab.train.tuning import merge_run

    record = merge_run(options.run_dir, options.out)
    print(f"merged {record['method']} (r={record['settings']['r']}) of {options.run_dir} into "
          f"{options.out}/model.safetensors")
    print(f"next: seqlab eval {options.out}  |  seqlab export {options.out} --out DIR")
    return 0


def _cmd_chat(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="seqlab chat",
        description="Chat with an sft / dpo run: /reset, /temperature T, /top_p P, /exit. Reads "
                    "the messages from stdin, one per line, when it is not a terminal.")
    parser.add_argument("run_dir")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--system", default=None, help="a system message opening the conversation")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(args)
    from seqlab.chat import open_chat, run_chat

    overrides = [f"predict.{key}={value}" for key, value in [
        ("temperature", options.temperature), ("top_p", options.top_p),
        ("max_new_tokens", options.max_new_tokens)] if value is not None]
    return run_chat(open_chat(options.run_dir, options.system, options.seed, overrides))


COMMANDS = {"recipes": _cmd_recipes, "train": _cmd_train, "eval": _cmd_eval, "predict": _cmd_predict,
            "compare": _cmd_compare, "embed": _cmd_embed, "probe": _cmd_probe,
            "export": _cmd_export, "quantize": _cmd_quantize, "serve": _cmd_serve,
            "merge": _cmd_merge, "chat": _cmd_chat}


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
