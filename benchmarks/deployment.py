"""Deployment: torch eager vs onnxruntime vs int8, file sizes, the metric int8 costs, and a load
test of `seqlab serve` with and without on-the-fly batching.

    python benchmarks/deployment.py                    # trains (or reuses) the runs, prints tables
    python benchmarks/deployment.py --write            # also appends them to RESULTS.md
    python benchmarks/deployment.py --minutes 0.5      # shorter training budgets (seq2seq: 4 min)
    python benchmarks/deployment.py --use translate-transformer=RUN_DIR   # measure a run you have

Runs (each trained for `--minutes` of wall clock, reused from `--runs-dir` when present, or
taken from `--use RECIPE=RUN_DIR`): MR sentiment with a BiLSTM and with a Transformer encoder
(accuracy), a BiLSTM tagger of German nouns (token accuracy), a character LSTM and a character
GPT on Tiny Shakespeare (loss in nats/char), a CNN + GRU captioner of generated shapes (BLEU,
greedy), and Multi30k German→English with a BiGRU + Bahdanau
attention and with a Transformer (BLEU, greedy; `--seq2seq-minutes`). The tagging set is made
from Multi30k's German side, with no download: German capitalises its nouns, so a token is
tagged `N` when it is capitalised and not the sentence's first, `O` otherwise, and the tagger
reads the lowercased tokens (it must know which words are nouns; first tokens are `O`).
Each is exported to ONNX and quantised to int8; the three versions are timed in one process,
taking turns inside every repeat, at batch 1 and batch 32 (median of the repeats), and
evaluated on the same split. The load test starts `seqlab serve` on 127.0.0.1 and sends
`--requests` one-sentence predictions from `--clients` concurrent clients, once with batching
(window 5 ms, up to 32 inputs a pass) and once with every request alone; then a sweep of
malformed requests, each of which must get a 4xx with a message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def gz_lines(path: Path) -> list[str]:
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def write_noun_tagging(work: Path) -> dict[str, Path]:
    """CoNLL files of German noun tags from Multi30k (see the module's docstring)."""
    paths = {}
    for split, name, limit in (("train", "train", 10_000), ("valid", "val", None),
                               ("test", "test_2016_flickr", None)):
        lines = gz_lines(DATA / "multi30k" / f"{name}.de.gz")
        blocks = []
        for line in lines[:limit]:
            tokens = line.split()
            blocks.append("\n".join(f"{t.lower()} {'N' if i and t[:1].isupper() else 'O'}"
                                    for i, t in enumerate(tokens)))
        paths[split] = work / f"nouns-{split}.conll"
        paths[split].write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return paths


def runs_to_train(minutes: float, seq2seq_minutes: float, work: Path) -> dict:
    budget = [f"trainer.max_time_minutes={minutes}", "trainer.progress=false"]
    mr = DATA / "sentences" / "mr"
    multi30k = DATA / "multi30k"
    text = DATA / "tinyshakespeare" / "input.txt"
    nouns = write_noun_tagging(work)
    mr_files = [f"data.train={mr / 'train.tsv'}", f"data.valid={mr / 'valid.tsv'}",
                f"data.test={mr / 'test.tsv'}", "data.text_column=sentence"]
    multi30k_files = [f"data.train={multi30k / 'train'}", f"data.valid={multi30k / 'val'}",
                      f"data.test={multi30k / 'test_2016_flickr'}", "data.source_suffix=.de.gz",
                      "data.target_suffix=.en.gz", "trainer.progress=false",
                      f"trainer.max_time_minutes={seq2seq_minutes}"]
    return {
        "classifier (MR, BiLSTM)": ("classify-bilstm", [
            *mr_files, "trainer.epochs=3", "trainer.eval_every=100", *budget], "test", "accuracy"),
        "classifier (MR, Transformer)": ("bert-classify", [
            *mr_files, "trainer.epochs=5", "trainer.eval_every=200", "data.max_length=64",
            "model.max_length=64", *budget], "test", "accuracy"),
        "tagger (German nouns, BiLSTM)": ("tag-bilstm", [
            f"data.train={nouns['train']}", f"data.valid={nouns['valid']}",
            f"data.test={nouns['test']}", "trainer.epochs=3", *budget], "test", "accuracy"),
        "char LSTM LM (Shakespeare)": ("charlm-shakespeare-lstm", [
            f"data.train={text}", "trainer.max_steps=600", *budget], "valid", "loss"),
        "char GPT LM (Shakespeare)": ("gpt-charlm", [
            f"data.train={text}", "data.valid_fraction=0.1", "data.test_fraction=0.0",
            "trainer.max_steps=600", "trainer.eval_every=200", "trainer.save_every=200",
            *budget], "valid", "loss"),
        "captioner (generated shapes, CNN + GRU)": ("caption-gru", [
            "trainer.max_steps=100000", *budget], "test", "bleu"),
        "seq2seq (Multi30k de-en, BiGRU + attention)": ("translate-gru-attn", [
            *multi30k_files, "trainer.epochs=1", "trainer.eval_every=100000"], "test", "bleu"),
        "seq2seq (Multi30k de-en, Transformer)": ("translate-transformer", [
            *multi30k_files, "trainer.epochs=3", "trainer.eval_every=100000"], "test", "bleu"),
    }


def train_runs(runs_dir: Path, minutes: float, seq2seq_minutes: float, only: str | None,
               use: dict[str, Path]) -> dict:
    from seqlab.train.config import load_config
    from seqlab.train.run import train

    made = {}
    for name, (recipe, overrides, split, metric) in runs_to_train(minutes, seq2seq_minutes,
                                                                   runs_dir).items():
        if only and only not in name and recipe not in ("classify-bilstm", "translate-gru-attn"):
            continue  # the load test serves those two
        run_dir = use.get(recipe, runs_dir / recipe)
        if recipe in use and not (run_dir / "model.safetensors").is_file():
            sys.exit(f"--use {recipe}={run_dir}: no model.safetensors there; give a run directory "
                     f"that `seqlab train {recipe}` wrote")
        if recipe not in use and not (run_dir / "summary.json").is_file():
            shutil.rmtree(run_dir, ignore_errors=True)
            print(f"training {name} for {minutes} min ...", flush=True)
            train(load_config(recipe, overrides), run_dir)
        made[name] = (run_dir, split, metric)
    return made


def median_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def test_texts(family: str) -> list[str]:
    """Inputs for the timings: MR test sentences, Multi30k test sources (lowercased for the
    tagger, as it was trained)."""
    if family == "classifier":
        lines = (DATA / "sentences" / "mr" / "test.tsv").read_text(encoding="utf-8").splitlines()
        return [line.split("\t")[0] for line in lines[1:]]
    path = DATA / "multi30k" / "test_2016_flickr.de.gz"
    lines = gz_lines(path)
    return [line.lower() for line in lines] if family == "tagger" else lines


def workloads(task, model, family: str, batch: int):
    """A function running one typical call of `model` on `batch` inputs of the task's data."""
    from seqlab.data.batching import pad_sequences
    from seqlab.decode import greedy_decode

    tokenizer = task.tokenizer
    generator = torch.Generator().manual_seed(0)
    if family in ("classifier", "tagger"):  # one forward pass
        texts = test_texts(family)[:batch]
        ids = [tokenizer.encode(text) or [tokenizer.unk_id] for text in texts]
        padded, lengths = pad_sequences(ids, pad_value=tokenizer.pad_id)
        return lambda: model(padded, lengths=lengths)
    if family in ("lm", "lm-transformer"):
        prompt = torch.randint(5, tokenizer.vocab_size, (batch, 32), generator=generator)

        def generate():  # a 32-token prompt, then 32 single-token steps with the state
            if hasattr(model, "stream"):
                for _ in model.stream(prompt, 32, temperature=0):
                    pass
            else:
                model.generate(prompt, 32, temperature=0)
        return generate
    if family == "captioner":  # greedy captions of test images
        if not getattr(task, "examples", None):
            task.prepare(fit_vocab=False)
        examples = task.examples["test"]
        images = task._collate("test", [examples[i % len(examples)] for i in range(batch)])["images"]
        ones = torch.ones(batch, dtype=torch.long)
        return lambda: greedy_decode(model, images, ones, tokenizer.bos_id, tokenizer.eos_id,
                                     max_length=30)
    sources = test_texts(family)[:batch]
    ids = [tokenizer.encode(text) or [tokenizer.unk_id] for text in sources]
    src, lengths = pad_sequences(ids, pad_value=tokenizer.pad_id)
    return lambda: greedy_decode(model, src, lengths, tokenizer.bos_id, tokenizer.eos_id,
                                 max_length=30)


def measure_family(name, run_dir: Path, split: str, metric: str, work: Path, repeats: int,
                   threads: int) -> dict:
    from seqlab.export import evaluate_export, export_onnx, open_export
    from seqlab.export.quantize import quantize_export
    from seqlab.train.run import evaluate_run, open_run

    onnx_dir, int8_dir = work / f"{run_dir.name}-onnx", work / f"{run_dir.name}-int8"
    for directory in (onnx_dir, int8_dir):
        shutil.rmtree(directory, ignore_errors=True)
    manifest = export_onnx(run_dir, onnx_dir)
    quantized = quantize_export(onnx_dir, int8_dir)
    family = manifest["family"]
    float_bytes = sum(g["float_bytes"] for g in quantized["graphs"].values())
    int8_bytes = sum(g["bytes"] for g in quantized["graphs"].values())
    weights_bytes = (run_dir / "model.safetensors").stat().st_size
    _, task, model, _ = open_run(run_dir, ["trainer.device=cpu"])
    candidates = {"torch": model, "onnxruntime": open_export(onnx_dir, threads=threads)[2],
                  "int8": open_export(int8_dir, threads=threads)[2]}
    timings = {}
    with torch.no_grad():
        for batch in (1, 32):
            calls = {label: workloads(task, m, family, batch) for label, m in candidates.items()}
            for call in calls.values():
                call()  # warm-up
            samples = {label: [] for label in calls}
            for _ in range(repeats):  # interleaved: machine noise hits every candidate alike
                for label, call in calls.items():
                    samples[label].append(median_ms(call, 1))
            timings[batch] = {label: statistics.median(values) for label, values in samples.items()}
    metrics = {"torch": evaluate_run(run_dir)[split][metric],
               "onnxruntime": evaluate_export(onnx_dir)[split][metric],
               "int8": evaluate_export(int8_dir)[split][metric]}
    return {"name": name, "family": family, "timings": timings, "metric": metric,
            "split": split, "metrics": metrics, "weights_bytes": weights_bytes,
            "float_bytes": float_bytes, "int8_bytes": int8_bytes,
            "difference": max(g["max_abs_difference"] for g in manifest["graphs"].values())}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def load_test(port: int, texts: list[str], clients: int, requests: int) -> dict:
    import httpx

    latencies, errors, answered = [], 0, 0
    queue: asyncio.Queue = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(texts[index % len(texts)])

    async def client(session):
        nonlocal errors, answered
        while not queue.empty():
            text = queue.get_nowait()
            start = time.perf_counter()
            try:
                reply = await session.post("/v1/predict", json={"inputs": [text]})
                ok = reply.status_code == 200 and len(reply.json()["outputs"]) == 1
            except httpx.HTTPError:
                ok = False
            latencies.append((time.perf_counter() - start) * 1000)
            answered += ok
            errors += not ok

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits,
                                 timeout=120) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {"throughput": requests / elapsed, "p50": latencies[len(latencies) // 2],
            "p99": latencies[int(len(latencies) * 0.99) - 1], "errors": errors,
            "lost": requests - answered - errors, "seconds": elapsed}


def malformed_sweep(port: int) -> list[tuple[str, int, str]]:
    import httpx

    huge = json.dumps({"inputs": ["word " * 300_000]}).encode()
    cases = {
        "empty body": b"", "not JSON": b"{inputs", "invalid UTF-8": b'{"inputs": ["\xff\xfe"]}',
        "a list, not an object": b"[]", "inputs a string": b'{"inputs": "good"}',
        "inputs of numbers": b'{"inputs": [1, 2]}', "unknown field": b'{"inputs": ["a"], "x": 1}',
        "no inputs": b"{}", "empty inputs": b'{"inputs": []}',
        "unknown model": b'{"model": "nope", "inputs": ["a"]}',
        "too many inputs": json.dumps({"inputs": ["a"] * 1000}).encode(),
        "huge input (1.5 MB)": huge, "huge input in a small body": json.dumps(
            {"inputs": ["w" * 100_000]}).encode(),
    }
    results = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as session:
        for label, body in cases.items():
            reply = session.post("/v1/predict", content=body,
                                 headers={"content-type": "application/json"})
            try:
                message = reply.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = "(no JSON error)"
            results.append((label, reply.status_code, message))
        reply = session.post("/v1/generate", json={"prompt": "a", "max_new_tokens": 10**6})
        results.append(("generate on a classifier", reply.status_code,
                        reply.json()["error"]["message"]))
    return results


def serve_and_load(run_dir: Path, texts: list[str], clients: int, requests: int,
                   threads: int, sweep: bool = True) -> dict:
    results = {}
    for label, options in (("on-the-fly batching (5 ms, 32)", ["--max-batch-size", "32",
                                                               "--batch-window-ms", "5"]),
                           ("waiting requests only (0 ms, 32)", ["--max-batch-size", "32",
                                                                 "--batch-window-ms", "0"]),
                           ("no batching", ["--max-batch-size", "1", "--batch-window-ms", "0"])):
        port = free_port()
        command = "import sys; from seqlab.cli import main; sys.exit(main())"
        server = subprocess.Popen([sys.executable, "-c", command, "serve", str(run_dir),
                                   "--port", str(port), "--threads", str(threads), *options],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            import httpx

            for _ in range(600):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            results[label] = asyncio.run(load_test(port, texts, clients, requests))
            if sweep and label.startswith("on-the-fly"):
                results["sweep"] = malformed_sweep(port)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return results


def report(measured: list[dict], load: dict, args, threads: int) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## Deployment: torch vs onnxruntime vs int8, and `seqlab serve` under load ({now})", "",
        f"`python benchmarks/deployment.py {' '.join(a for a in sys.argv[1:] if a != '--write')} --write`", "",
        (f"- device: CPU {platform.processor() or platform.machine()}, {threads} threads for torch "
        f"and onnxruntime; torch {torch.__version__}, onnxruntime "
        f"{__import__('onnxruntime').__version__}; the 2-core machine was shared with other "
        "jobs, so the ratios (candidates interleaved in every repeat) say more than the times"),
        (f"- each run trained for {args.minutes} min wall clock, the seq2seq models for "
         f"{args.seq2seq_minutes}" + "".join(f"; {recipe} is {path}" for recipe, path in
                                              args.use.items())),
        ("- classifiers and the tagger: one forward pass of test sentences; LMs: a 32-token "
         "prompt, then 32 "
        "greedy steps carrying the state / cache; seq2seq and captioner: greedy decoding of test "
        f"sentences / images (30 steps at most); median of {args.repeats}"), "",
        "| family | batch | torch ms | onnxruntime ms (ratio) | int8 ms (ratio) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in measured:
        for batch, t in row["timings"].items():
            lines.append(f"| {row['name']} | {batch} | {t['torch']:.1f} | {t['onnxruntime']:.1f} "
                         f"({t['onnxruntime'] / t['torch']:.2f}x) | {t['int8']:.1f} "
                         f"({t['int8'] / t['torch']:.2f}x) |")
    lines += ["", ("| family | weights (safetensors) | ONNX float | int8 (ratio) | metric | torch | "
              "onnxruntime | int8 | ONNX − torch, max abs |"),
              "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for row in measured:
        m = row["metrics"]
        lines.append(
            f"| {row['name']} | {row['weights_bytes'] / 1e6:.2f} MB | "
            f"{row['float_bytes'] / 1e6:.2f} MB | {row['int8_bytes'] / 1e6:.2f} MB "
            f"({row['int8_bytes'] / row['float_bytes']:.2f}x) | {row['split']} {row['metric']} | "
            f"{m['torch']:.4f} | {m['onnxruntime']:.4f} | {m['int8']:.4f} | {row['difference']:.1e} |")
    if load:
        lines += ["", (f"Load test: `seqlab serve --threads {threads}` (torch runs) on 127.0.0.1, "
                  f"{args.clients} concurrent clients (httpx, keep-alive, in the same machine), "
                  "one sentence per request: the MR classifier (one forward pass per batch) and "
                  "the Multi30k model (beam search, 5 beams, per batch)."), "",
                  "| model | requests | server | requests/s | p50 ms | p99 ms | errors | lost |",
                  "|---|---:|---|---:|---:|---:|---:|---:|"]
        for model, count in (("classifier", args.requests), ("seq2seq", args.requests // 4)):
            for label in ("on-the-fly batching (5 ms, 32)", "waiting requests only (0 ms, 32)",
                          "no batching"):
                r = load[model][label]
                lines.append(f"| {model} | {count} | {label} | {r['throughput']:.1f} | "
                             f"{r['p50']:.0f} | {r['p99']:.0f} | {r['errors']} | {r['lost']} |")
        lines += ["", ("Malformed requests against the live server (every answer a 4xx with a "
                  "message):"), "", "| request | status | message |", "|---|---:|---|"]
        for label, status, message in load["classifier"]["sweep"]:
            lines.append(f"| {label} | {status} | {message[:90]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / "deployment-benchmark"))
    parser.add_argument("--minutes", type=float, default=1.5)
    parser.add_argument("--seq2seq-minutes", type=float, default=4.0,
                        help="training time of the two translation models")
    parser.add_argument("--use", action="append", default=[], metavar="RECIPE=RUN_DIR",
                        help="measure this trained run instead of training the recipe's")
    parser.add_argument("--repeats", type=int, default=7)
    # One thread each: on a shared 2-core machine two torch threads wait on each other (a
    # BiLSTM forward of one sentence took 480 ms with 2 threads against 1.4 ms with 1).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--only", help="substring of the family names to measure")
    parser.add_argument("--no-load-test", action="store_true")
    parser.add_argument("--write", action="store_true", help="append the tables to RESULTS.md")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"benchmarks/deployment.py needs the data in {DATA} (see its README.md)")
    torch.set_num_threads(args.threads)
    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    args.use = dict(item.split("=", 1) for item in args.use)
    runs = train_runs(runs_dir, args.minutes, args.seq2seq_minutes, args.only,
                      {recipe: Path(path) for recipe, path in args.use.items()})
    measured = []
    for name, (run_dir, split, metric) in runs.items():
        if args.only and args.only not in name:
            continue
        print(f"measuring {name} ...", flush=True)
        measured.append(measure_family(name, run_dir, split, metric, runs_dir, args.repeats,
                                       args.threads))
    load = {}
    if not args.no_load_test:
        print("load test ...", flush=True)
        classifier_dir = runs["classifier (MR, BiLSTM)"][0]
        load["classifier"] = serve_and_load(classifier_dir, test_texts("classifier"), args.clients,
                                            args.requests, args.threads)
        # A heavier pass per request: beam search (5 beams) over a translation model.
        seq2seq_dir = runs["seq2seq (Multi30k de-en, BiGRU + attention)"][0]
        load["seq2seq"] = serve_and_load(seq2seq_dir, test_texts("seq2seq"), args.clients,
                                         args.requests // 4, args.threads, sweep=False)
    text = report(measured, load, args, args.threads)
    print(text)
    if args.write:
        with open(RESULTS, "a", encoding="utf-8") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    main()
