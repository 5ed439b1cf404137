"""DNA motif classification: a BiLSTM and a Transformer against a k-mer logistic regression.

Trains the `dna-bilstm` and `dna-transformer` recipes on the generated TATA-box task
(`seqlab.data.motifs`), then fits scikit-learn's logistic regression on counts of every k-mer
(k = 1..K, C picked on the validation split) on the same splits, and scores the Bayes-optimal
classifier (the exact posterior) on the same test sequences.

    python benchmarks/biology.py [--recipes dna-bilstm dna-transformer] [--kmax 6]

Writes `biology.json` and `biology.md` to --out (default runs/biology).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from recurrent import device_name

from seqlab.data.motifs import motif_posterior
from seqlab.train import load_config, train
from seqlab.train.run import build_task


def kmer_baseline(rows: dict[str, list[tuple[str, str]]], kmax: int) -> dict:
    """Test accuracy of a logistic regression on k-mer counts, C chosen on valid."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    began = time.time()
    vectorizer = CountVectorizer(analyzer="char", ngram_range=(1, kmax), lowercase=False)
    features = {split: vectorizer.fit_transform([s for s, _ in items]) if split == "train"
                else None for split, items in rows.items()}
    for split in ("valid", "test"):
        features[split] = vectorizer.transform([s for s, _ in rows[split]])
    labels = {split: np.array([label for _, label in items]) for split, items in rows.items()}
    best = None
    for c in (0.01, 0.03, 0.1, 0.3):
        model = LogisticRegression(C=c, max_iter=2000).fit(features["train"], labels["train"])
        valid = float((model.predict(features["valid"]) == labels["valid"]).mean())
        if best is None or valid > best[0]:
            best = (valid, c, model)
    valid, c, model = best
    test = float((model.predict(features["test"]) == labels["test"]).mean())
    return {"model": f"k-mer (1..{kmax}) logistic regression, C={c}", "parameters": int(model.coef_.size + 1),
            "seconds": round(time.time() - began, 1), "valid_accuracy": valid, "test_accuracy": test}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=["dna-bilstm", "dna-transformer"])
    parser.add_argument("--kmax", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=4.5, help="training time limit per model")
    parser.add_argument("--out", type=Path, default=Path("runs/biology"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    common = [f"trainer.seed={args.seed}", "trainer.progress=false", f"trainer.num_threads={args.threads}",
              f"trainer.max_time_minutes={args.minutes}"]
    task = build_task(load_config(args.recipes[0], common))
    rows = task._rows()
    posterior = motif_posterior([s for s, _ in rows["test"]])
    truth = np.array([label == "motif" for _, label in rows["test"]])
    results = [{"model": "Bayes-optimal (exact posterior)", "parameters": 0, "seconds": 0.0,
                "test_accuracy": float(((posterior > 0.5) == truth).mean())},
               kmer_baseline(rows, args.kmax)]
    print(json.dumps(results[-1]), flush=True)
    for recipe in args.recipes:
        run_dir = args.out / recipe
        shutil.rmtree(run_dir, ignore_errors=True)
        result = train(load_config(recipe, common), run_dir)
        run = result.summary["run"]
        results.append({"model": recipe, "parameters": run["num_parameters"], "seconds": run["elapsed_seconds"],
                        "valid_accuracy": result.summary["valid"]["accuracy"],
                        "test_accuracy": result.summary["test"]["accuracy"], "epochs": run["epochs"]})
        print(json.dumps(results[-1]), flush=True)
    (args.out / "biology.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [f"device: {device_name(torch.device('cpu'))}", "",
             "| model | params | train time | test accuracy |", "|---|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['parameters']:,} | {r['seconds']:.0f} s | {100 * r['test_accuracy']:.1f} |")
    (args.out / "biology.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
