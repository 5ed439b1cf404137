"""Sentence encoders compared by a linear probe on frozen vectors (SentEval's protocol).

For each encoder (a run directory, or `random:RUN_DIR` for that architecture freshly initialised)
and each labelled set (`sentence<TAB>label` TSV with train / valid / test), `seqlab probe` fits a
logistic regression on the training sentences' vectors, picks C on the validation split and
reports test accuracy.

    python benchmarks/probes.py --data ../shared/data/sentences --sets mr subj trec \
        --encoder "random init=random:runs/mlm" --encoder "MLM=runs/mlm" --encoder "SimCSE=runs/simcse"

Writes `probes.json` and `probes.md` to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from seqlab.embed import ProbeConfig, probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sentences"))
    parser.add_argument("--sets", nargs="+", default=["mr", "subj", "trec"])
    parser.add_argument("--encoder", action="append", required=True,
                        help="NAME=RUN_DIR, or NAME=random:RUN_DIR for untrained weights")
    parser.add_argument("--out", type=Path, default=Path("runs/probes"))
    args = parser.parse_args()
    for data_set in args.sets:
        if not (args.data / data_set / "train.tsv").is_file():
            sys.exit(f"{args.data / data_set} has no train.tsv: point --data at the sentence sets")
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for spec in args.encoder:
        name, _, path = spec.partition("=")
        random_init = path.startswith("random:")
        run = Path(path.removeprefix("random:"))
        for data_set in args.sets:
            folder = args.data / data_set
            config = ProbeConfig.model_validate({"data": {
                "train": str(folder / "train.tsv"), "valid": str(folder / "valid.tsv"),
                "test": str(folder / "test.tsv"), "text_column": "sentence"}})
            began = time.time()
            scores = probe(run, config, random_init=random_init)
            result = {"encoder": name, "run": str(run), "random_init": random_init,
                      "set": data_set, **scores, "seconds": round(time.time() - began, 1)}
            results.append(result)
            print(json.dumps(result), flush=True)
    (args.out / "probes.json").write_text(json.dumps(results, indent=1))
    names = list(dict.fromkeys(r["encoder"] for r in results))
    lines = ["| encoder | " + " | ".join(s.upper() for s in args.sets) + " |",
             "|---|" + "---:|" * len(args.sets)]
    for name in names:
        cells = [next((f"{100 * r['test_accuracy']:.1f}" for r in results
                       if r["encoder"] == name and r["set"] == s), "") for s in args.sets]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    (args.out / "probes.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
