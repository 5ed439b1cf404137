"""seqlab's translation recipes beside Joey NMT on Multi30k, same machine, same time, same scoring.

    python benchmarks/joeynmt_side_by_side.py --joey-python JOEY_ENV/bin/python              # a table
    python benchmarks/joeynmt_side_by_side.py --joey-python JOEY_ENV/bin/python --write      # + RESULTS.md
    python benchmarks/joeynmt_side_by_side.py --joey-python ... --model transformer --minutes 60

Joey NMT is not part of seqlab. Its pins clash with torch 2.13, so it lives in its own virtual
environment that sees the system's torch:

    python -m venv --system-site-packages JOEY_ENV
    JOEY_ENV/bin/pip install --no-deps joeynmt==2.3.0
    JOEY_ENV/bin/pip install future tensorboard sacremoses sentencepiece subword-nmt seaborn \\
        datasets plotly pandas importlib_metadata "protobuf<3.21"

(`importlib_metadata` is needed though undeclared.) The data is Multi30k laid out as
`train.de.gz` / `train.en.gz`, `val.*`, `test_2016_flickr.*` (`--data`, by default
`../shared/data/multi30k` beside the repository); `--source` / `--target` pick the direction, so
any pair laid out the same way works, and `--train-pairs N` keeps the first N training pairs (a
small-data setting). Both sides read the same uncompressed copies. Everything is written to a temporary directory (`--keep`
names a directory to keep instead).

Each round starts both trainings at once, one thread each, with the same budget of training time
(`--minutes`): seqlab's `trainer.max_time_minutes`, and for Joey NMT an interrupt (Ctrl-C, which
it handles) that many minutes after its first epoch starts, so neither is charged for reading
data. Both validate every `--eval-every` steps with greedy decoding and keep the weights with the
lowest validation loss / perplexity (Joey's default `early_stopping_metric: ppl`). Rounds
alternate which one is started first.

The recurrent model (`--model gru`): a bidirectional GRU encoder of 256 per direction, a GRU
decoder of 256 with Bahdanau (additive) attention, embeddings of 256, dropout 0.3, word-level
vocabularies of the types seen at least twice, sentences of at most 50 tokens, Adam lr 1e-3,
batch 128 sentences, gradient norm clipped at 1. Joey NMT gets PyTorch-style initialisation:
weights and biases uniform in ±1/sqrt(256), embeddings N(0, 1) (its own default is Xavier).
The Transformer (`--model transformer`): 3 + 3 layers of width 256, 4 heads, feed-forward 1024,
dropout 0.1, label smoothing 0.1, Adam(W) lr 5e-4 with 500 warm-up steps, batch 128 sentences.

After training both are scored by the same code, outside the timed part: the test set
(`test_2016_flickr`) decoded greedily and with beam 5, one thread, lowercased hypotheses against
lowercased references, sacrebleu BLEU (13a) and chrF. Decoding time: Joey's own "Generation
took" for the test set; seqlab's `task.predict` over the same sentences, timed in this process.
Equal steps: each side's validation BLEU by step, as each logged it (both sacrebleu 13a).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "RESULTS.md"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "multi30k"
SPLITS = {"train": "train", "dev": "val", "test": "test_2016_flickr"}
RECIPES = {"gru": "translate-gru-attn", "transformer": "translate-transformer"}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def device_name() -> str:
    return f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores), one thread per side"


def write_plain(data: Path, work: Path, languages: tuple[str, str], train_pairs: int | None) -> Path:
    """Joey's `plain` layout (`train.de`, `train.en`, ...) from the gzipped or plain files, read
    by both sides; with `train_pairs`, only the first that many training pairs."""
    plain = work / "data"
    plain.mkdir(parents=True, exist_ok=True)
    for name in SPLITS.values():
        for language in languages:
            source = data / f"{name}.{language}.gz"
            opener = gzip.open if source.is_file() else open
            if not source.is_file():
                source = data / f"{name}.{language}"
            if not source.is_file():
                sys.exit(f"{data} has no {name}.{language}(.gz); pass --data DIR with train / val / "
                         f"test_2016_flickr files for --source {languages[0]} --target {languages[1]}")
            with opener(source, "rt", encoding="utf-8") as lines:
                text = lines.read()
            if name == SPLITS["train"] and train_pairs is not None:
                text = "".join(text.splitlines(keepends=True)[:train_pairs])
            (plain / f"{name}.{language}").write_text(text, encoding="utf-8")
    return plain


def joey_config(plain: Path, model_dir: Path, args, beam_size: int = 1, dev: str | None = None) -> str:
    """Joey NMT's YAML for the same model, data and budget (written out, no template files).

    Testing reads `best.ckpt` (the lowest validation perplexity), or, when the budget ended
    before the first validation, the checkpoint Joey writes when interrupted."""
    checkpoint = "best.ckpt" if (model_dir / "best.ckpt").exists() else "latest.ckpt"
    source, target = args.source, args.target
    side = {"level": "word", "lowercase": True, "normalize": False, "max_length": 50,
            "min_length": 1, "voc_min_freq": 2, "tokenizer_type": "none",
            "tokenizer_cfg": {"pretokenizer": "moses"}}
    if args.model == "gru":
        scale = 1 / 256 ** 0.5
        model = {
            "initializer": "uniform", "init_weight": scale, "bias_initializer": "uniform",
            "bias_init_weight": scale, "embed_initializer": "normal", "embed_init_weight": 1.0,
            "encoder": {"type": "recurrent", "rnn_type": "gru", "embeddings": {"embedding_dim": 256},
                        "hidden_size": 256, "bidirectional": True, "dropout": 0.3, "num_layers": 1},
            "decoder": {"type": "recurrent", "rnn_type": "gru", "embeddings": {"embedding_dim": 256},
                        "hidden_size": 256, "dropout": 0.3, "hidden_dropout": 0.3,
                        "attention": "bahdanau", "init_hidden": "bridge", "input_feeding": True,
                        "num_layers": 1},
        }
        # A constant learning rate, as seqlab's recipe: the key cannot be omitted, and Joey's
        # "plateau" passes an argument torch 2.13's ReduceLROnPlateau no longer takes.
        training = {"optimizer": "adam", "learning_rate": 0.001, "scheduling": "exponential",
                    "decrease_factor": 1.0, "clip_grad_norm": 1.0}
    else:
        layers = {"num_layers": 3, "num_heads": 4, "hidden_size": 256, "ff_size": 1024,
                  "dropout": 0.1, "embeddings": {"embedding_dim": 256, "scale": True},
                  "layer_norm": "pre"}
        model = {"initializer": "xavier_uniform", "embed_initializer": "xavier_uniform",
                 "bias_initializer": "zeros", "tied_softmax": True,
                 "encoder": {"type": "transformer", **layers},
                 "decoder": {"type": "transformer", **layers}}
        training = {"optimizer": "adamw", "learning_rate": 0.0005, "scheduling": "warmupinversesquareroot",
                    "learning_rate_warmup": 500, "label_smoothing": 0.1, "clip_grad_norm": 1.0}
    config = {
        "name": f"side-by-side-{args.model}",
        "joeynmt_version": "2.3.0",
        "use_cuda": False,
        "data": {
            "train": str(plain / SPLITS["train"]), "dev": dev or str(plain / SPLITS["dev"]),
            "test": str(plain / SPLITS["test"]), "dataset_type": "plain",
            "src": {"lang": source, **side}, "trg": {"lang": target, **side},
        },
        "testing": {"load_model": str(model_dir / checkpoint), "beam_size": beam_size,
                    "beam_alpha": 1.0, "batch_size": 64,
                    "batch_type": "sentence",
                    "eval_metrics": ["bleu"], "sacrebleu_cfg": {"tokenize": "13a", "lowercase": True}},
        "training": {
            **training, "random_seed": args.seed, "batch_size": 128, "batch_type": "sentence",
            "eval_batch_size": 64, "eval_batch_type": "sentence", "epochs": 1000,
            "validation_freq": args.eval_every,
            "logging_freq": min(50, max(1, args.eval_every // 2)),  # Joey: below validation_freq
            "early_stopping_metric": "ppl",
            "model_dir": str(model_dir), "overwrite": True, "shuffle": True, "keep_best_ckpts": 1,
            "print_valid_sents": [],
        },
        "model": model,
    }
    return json.dumps(config, indent=1)  # JSON is YAML


def start_joey(python: str, plain: Path, work: Path, round_: int, args) -> dict:
    directory = work / f"joey-{round_}"
    config = work / f"joey-{round_}.yaml"
    config.write_text(joey_config(plain, directory, args))
    log = (work / f"joey-{round_}.log").open("w")
    process = subprocess.Popen([python, "-m", "joeynmt", "train", str(config), "--skip-test"],
                               stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **ONE_THREAD})
    return {"process": process, "config": config, "directory": directory, "log": log.name,
            "started": None}


def start_seqlab(plain: Path, work: Path, round_: int, args) -> dict:
    run_dir = work / f"seqlab-{round_}"
    command = [
        sys.executable, "-m", "seqlab", "train", RECIPES[args.model],
        *(f"data.{key}={plain / name}" for key, name in
          (("train", SPLITS["train"]), ("valid", SPLITS["dev"]), ("test", SPLITS["test"]))),
        f"data.source_suffix=.{args.source}", f"data.target_suffix=.{args.target}",
        "trainer.num_threads=1", f"trainer.max_time_minutes={args.minutes}", "trainer.epochs=1000",
        f"trainer.eval_every={args.eval_every}", "trainer.save_every=null", "trainer.progress=false",
        "trainer.early_stopping_patience=null", f"trainer.seed={args.seed}", "predict.num_examples=0",
        *args.seqlab, "--run-dir", str(run_dir),
    ]
    log = (work / f"seqlab-{round_}.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, **ONE_THREAD})
    return {"process": process, "directory": run_dir, "log": log.name, "command": command}


def watch(joey: dict, seqlab: dict, minutes: float) -> None:
    """Interrupt Joey `minutes` after its first epoch starts; wait for both to finish."""
    while joey["process"].poll() is None or seqlab["process"].poll() is None:
        time.sleep(2)
        if joey["process"].poll() is None:
            text = Path(joey["log"]).read_text(errors="replace")
            if joey["started"] is None and "EPOCH 1" in text:
                joey["started"] = time.monotonic()
            if joey["started"] is not None and time.monotonic() - joey["started"] > 60 * minutes:
                joey["process"].send_signal(signal.SIGINT)
                try:
                    joey["process"].wait(timeout=300)
                except subprocess.TimeoutExpired:
                    joey["process"].kill()
                    sys.exit("Joey NMT did not stop within 5 minutes of its interrupt; killed")
    for name, side in (("Joey NMT", joey), ("seqlab", seqlab)):
        log = Path(side["log"]).read_text(errors="replace")
        code = side["process"].returncode
        if code not in (0, -signal.SIGINT) or (name == "Joey NMT" and "Traceback" in log):
            tail = "\n".join(log.splitlines()[-25:])
            sys.exit(f"{name} failed (exit {code}); the last lines of its log:\n{tail}")


def joey_validations(directory: Path) -> dict[int, float]:
    """{step: validation BLEU} from Joey's validations.txt."""
    text = (directory / "validations.txt").read_text()
    return {int(step): float(bleu) for step, bleu in re.findall(r"Steps: (\d+).*?bleu: ([\d.]+)", text)}


def seqlab_validations(run_dir: Path) -> dict[int, float]:
    steps = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("split") == "valid" and "bleu" in record.get("metrics", {}):
            steps[record["step"]] = record["metrics"]["bleu"]
    return steps


def score(hypotheses: list[str], references: list[str]) -> dict:
    import sacrebleu

    hypotheses = [h.lower() for h in hypotheses]
    references = [r.lower() for r in references]
    return {"bleu": sacrebleu.corpus_bleu(hypotheses, [references], tokenize="13a").score,
            "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score}


def decode_joey(python: str, plain: Path, work: Path, side: dict, args, beam: int) -> tuple[list[str], float]:
    stub = work / "dev-stub"  # Joey's test mode also decodes the dev set: give it one line
    for language in (args.source, args.target):
        first = (plain / f"{SPLITS['dev']}.{language}").read_text(encoding="utf-8").splitlines()[0]
        (work / f"dev-stub.{language}").write_text(first + "\n", encoding="utf-8")
    config = work / f"{side['config'].stem}-beam{beam}.yaml"
    config.write_text(joey_config(plain, side["directory"], args, beam_size=beam, dev=str(stub)))
    output = work / f"{side['config'].stem}-beam{beam}.hyp"
    done = subprocess.run([python, "-m", "joeynmt", "test", str(config), "--output-path", str(output)],
                          check=False, capture_output=True, text=True, env={**os.environ, **ONE_THREAD})
    times = re.findall(r"Generation took ([\d.]+)\[sec\]", done.stdout + done.stderr)
    if done.returncode != 0 or len(times) < 2:
        sys.exit(f"joeynmt test failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return Path(f"{output}.test").read_text(encoding="utf-8").splitlines(), float(times[-1])


def decode_seqlab(run_dir: Path, sources: list[str], beam: int) -> tuple[list[str], float]:
    from seqlab.train.run import open_run

    torch.set_num_threads(1)
    _, task, model, device = open_run(run_dir, [f"predict.beam_size={beam}"])
    start = time.perf_counter()
    with torch.no_grad():
        outputs = []
        for begin in range(0, len(sources), 64):
            outputs += task.predict(model, sources[begin:begin + 64], device)
    return outputs, time.perf_counter() - start


def joey_facts(side: dict) -> dict:
    log = Path(side["log"]).read_text(errors="replace")
    steps = [int(s) for s in re.findall(r"Step:\s+(\d+)", log)]
    parameters = re.findall(r"Total params: (\d+)", log)
    return {"steps": max(steps, default=0), "parameters": int(parameters[-1]) if parameters else None}


def seqlab_facts(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"steps": summary["run"]["steps"], "parameters": summary["run"]["num_parameters"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--joey-python", required=True, help="python of the Joey NMT environment")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--source", default="de")
    parser.add_argument("--target", default="en")
    parser.add_argument("--model", choices=sorted(RECIPES), default="gru")
    parser.add_argument("--train-pairs", type=int, help="train on the first N pairs only")
    parser.add_argument("--minutes", type=float, default=20.0, help="training time of each side")
    parser.add_argument("--eval-every", type=int, default=100, help="validation every N steps")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--first-round", type=int, default=0,
                        help="number of the first round (odd: seqlab starts first), to add a "
                             "round to an earlier run")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seqlab", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra overrides for the seqlab recipe (to try a setting)")
    parser.add_argument("--keep", type=Path, help="keep runs and logs in this directory")
    parser.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    parser.add_argument("--score-only", action="store_true",
                        help="only decode and score the runs already in --keep (no training)")
    args = parser.parse_args()
    # A shell that starts this script in the background ignores SIGINT, and an ignored signal
    # stays ignored in the children: Joey could then not be interrupted. A handled one is reset
    # to the default in them.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if not args.data.is_dir():
        sys.exit(f"no data at {args.data}; pass --data DIR (Multi30k's train / val / test_2016_flickr)")
    if args.score_only and args.keep is None:
        sys.exit("--score-only scores the runs kept by an earlier --keep DIR; give that --keep DIR")
    check = subprocess.run([args.joey_python, "-c", "import joeynmt"], check=False,
                           capture_output=True, text=True)
    if check.returncode != 0:
        sys.exit(f"{args.joey_python} cannot import joeynmt ({check.stderr.strip()[-300:]}); "
                 "install it as this file's docstring says")

    rows: dict[str, list[dict]] = {"Joey NMT 2.3.0": [], "seqlab": []}
    curves: dict[str, list[dict[int, float]]] = {"Joey NMT 2.3.0": [], "seqlab": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        plain = write_plain(args.data, work, (args.source, args.target), args.train_pairs)
        sources = (plain / f"{SPLITS['test']}.{args.source}").read_text(encoding="utf-8").splitlines()
        references = (plain / f"{SPLITS['test']}.{args.target}").read_text(encoding="utf-8").splitlines()
        for round_ in range(args.first_round, args.first_round + args.rounds):
            if args.score_only:
                joey = {"config": work / f"joey-{round_}.yaml", "directory": work / f"joey-{round_}",
                        "log": str(work / f"joey-{round_}.log")}
                seqlab = {"directory": work / f"seqlab-{round_}"}
            elif round_ % 2 == 0:
                joey = start_joey(args.joey_python, plain, work, round_, args)
                seqlab = start_seqlab(plain, work, round_, args)
            else:
                seqlab = start_seqlab(plain, work, round_, args)
                joey = start_joey(args.joey_python, plain, work, round_, args)
            if not args.score_only:
                watch(joey, seqlab, args.minutes)
            result = {"Joey NMT 2.3.0": joey_facts(joey), "seqlab": seqlab_facts(seqlab["directory"])}
            for beam in (1, 5):
                hyps, seconds = decode_joey(args.joey_python, plain, work, joey, args, beam)
                result["Joey NMT 2.3.0"][f"beam{beam}"] = {**score(hyps, references), "seconds": seconds}
                hyps, seconds = decode_seqlab(seqlab["directory"], sources, beam)
                result["seqlab"][f"beam{beam}"] = {**score(hyps, references), "seconds": seconds}
            curves["Joey NMT 2.3.0"].append(joey_validations(joey["directory"]))
            curves["seqlab"].append(seqlab_validations(seqlab["directory"]))
            for name, outcome in result.items():
                rows[name].append(outcome)
                print(f"round {round_ + 1}, {name}: {json.dumps(outcome)}", flush=True)

    def median(name: str, *keys: str) -> float:
        values = []
        for row in rows[name]:
            value = row
            for key in keys:
                value = value[key]
            values.append(value)
        return statistics.median(values)

    lines = [
        (f"- device: {device_name()}; torch {torch.__version__}; {args.rounds} round(s) from round "
         f"{args.first_round + 1}, medians; "
         f"{args.minutes:g} minutes of training each, both at once; {args.source} → {args.target}"
         + (f", the first {args.train_pairs} training pairs" if args.train_pairs else "")),
        f"- seqlab: `seqlab train {RECIPES[args.model]}` + {' '.join(args.seqlab) or 'nothing else'}",
        "",
        ("| | parameters | steps | BLEU greedy | BLEU beam 5 | chrF greedy | chrF beam 5 "
         "| test decoding greedy (s) | beam 5 (s) |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in rows:
        lines.append(
            f"| {name} | {median(name, 'parameters') / 1e6:.1f}M | {median(name, 'steps'):.0f} "
            f"| {median(name, 'beam1', 'bleu'):.2f} | {median(name, 'beam5', 'bleu'):.2f} "
            f"| {median(name, 'beam1', 'chrf'):.1f} | {median(name, 'beam5', 'chrf'):.1f} "
            f"| {median(name, 'beam1', 'seconds'):.1f} | {median(name, 'beam5', 'seconds'):.1f} |")
    shared = sorted(set.intersection(*(set(c) for name in curves for c in curves[name])))
    if shared:
        lines += ["", (f"Validation BLEU (greedy, each side's own log) at equal steps, round "
                  f"{args.first_round + 1}:"), "",
                  "| step | " + " | ".join(str(s) for s in shared) + " |",
                  "|---|" + "---:|" * len(shared)]
        for name in curves:
            lines.append(f"| {name} | " + " | ".join(f"{curves[name][0][s]:.2f}" for s in shared) + " |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        given = [a for a in sys.argv[1:] if a != "--write"]
        given = ["JOEY_ENV/bin/python" if a == args.joey_python else a for a in given]
        command = " ".join(["python benchmarks/joeynmt_side_by_side.py", *given])
        section = (f"\n## Translation beside Joey NMT, {args.model}, {args.source} → {args.target} ({stamp})\n\n"
                   f"`{command} --write`\n\n{table}\n")
        existing = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
        RESULTS.write_text(existing.rstrip("\n") + "\n" + section, encoding="utf-8")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
