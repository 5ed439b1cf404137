"""MinGRU / MinLSTM beside LSTM / GRU in the same wall-clock budget, through `seqlab compare`.

    python benchmarks/minimal_quality.py                   # every task, one after the other
    python benchmarks/minimal_quality.py adding-200 copy   # some of them
    python benchmarks/minimal_quality.py --list            # the tasks and their commands

Each task is one `seqlab compare` of the four cells (model.cell=lstm,gru,mingru,minlstm) with
the same recipe, the same seed, one thread per run and the same `trainer.max_time_minutes`: a
cell that steps faster sees more data in the budget, which is the point of the comparison.
The learning rate is constant (a schedule over a step count would end at different points for
cells of different speeds). Every run keeps its curves; `compare` plots them against steps and
against seconds (`curves.png`), and the tables gather in `<out>/quality.md`.

An interrupted task continues where it stopped (`seqlab compare --resume`), and a finished one
is not trained again. The char-LM task needs tinyshakespeare in ../shared/data (see its README);
without it that task is skipped with a message.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
CELLS = "model.cell=lstm,gru,mingru,minlstm"
COMMON = ["trainer.num_threads=1", "trainer.scheduler=constant", "trainer.warmup_steps=0",
          "trainer.epochs=1000", "trainer.progress=false"]

# task -> (what it shows, arguments of `seqlab compare` before the common ones)
TASKS = {
    "adding-200": ("adding problem, T = 200 (predicting the mean: MSE 0.167)",
                   ["adding-lstm", "data.length=200", "trainer.max_time_minutes=3",
                    "trainer.eval_every=50"]),
    "adding-1000": ("adding problem, T = 1000 (predicting the mean: MSE 0.167)",
                    ["adding-lstm", "data.length=1000", "trainer.max_time_minutes=4",
                     "trainer.eval_every=25"]),
    "copy": ("copy memory, 10 symbols after T = 100 blanks (memoryless loss 10 log 8 / 120 = 0.173)",
             ["copy-lstm", "data.length=100", "trainer.max_time_minutes=3",
              "trainer.eval_every=50"]),
    "charlm": ("tinyshakespeare characters, one layer of 512, validation nats / char",
               ["charlm-shakespeare-lstm", f"data.train={SHAKESPEARE}", "model.hidden_size=512",
                "trainer.lr=0.002", "trainer.max_steps=1000000", "trainer.max_time_minutes=15",
                "trainer.eval_every=250", "trainer.eval_max_batches=40"]),
}


def command(task: str, out: Path) -> list[str]:
    _, arguments = TASKS[task]
    return ["seqlab", "compare", *arguments, CELLS, *COMMON, "--no-diagnostics",
            "--out", str(out / task)]


def run(task: str, out: Path) -> str | None:
    """Train (or resume) one task's comparison; its table, or None when it was skipped."""
    if task == "charlm" and not SHAKESPEARE.is_file():
        print(f"skipping charlm: {SHAKESPEARE} is missing (see ../shared/data/README.md)",
              file=sys.stderr)
        return None
    target = out / task
    args = (["seqlab", "compare", "--resume", str(target)] if (target / "compare.json").is_file()
            else command(task, out))
    print("$ " + " ".join(args), flush=True)
    subprocess.run(args, check=True)
    return (target / "table.md").read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", nargs="*", help=f"tasks to run, of {', '.join(TASKS)} (all "
                        "when none is named)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "minimal-quality")
    parser.add_argument("--list", action="store_true", help="print the tasks and their commands")
    options = parser.parse_args(argv)
    unknown = [task for task in options.tasks if task not in TASKS]
    if unknown:
        parser.error(f"unknown task {unknown[0]!r}; the tasks are {', '.join(TASKS)}")
    tasks = options.tasks or list(TASKS)
    if options.list:
        for task in tasks:
            print(f"{task}: {TASKS[task][0]}\n  " + " ".join(command(task, options.out)))
        return 0
    sections = []
    for task in tasks:
        table = run(task, options.out)
        if table is not None:
            sections.append(f"## {task}: {TASKS[task][0]}\n\n{table}")
    report = options.out / "quality.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(sections), encoding="utf-8")
    print(f"tables: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
