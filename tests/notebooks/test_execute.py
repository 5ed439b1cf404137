"""The notebooks run: each teacher version top to bottom; each student version up to its first
exercise, whose check fails saying the exercise is not done yet.

The kernel is the interpreter running the tests (a kernelspec written to a temporary folder), so
no globally installed kernelspec is needed.
"""

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebooks extra (nbclient, nbformat, "
                                                  "ipykernel) is not installed")
nbclient = pytest.importorskip("nbclient", reason="the notebooks extra is not installed")
pytest.importorskip("ipykernel", reason="the notebooks extra is not installed")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

# The first check of each student notebook and the function it names.
FIRST_EXERCISE = {
    "01_implement_an_rnn": "rnn_cell",
    "02_implement_a_seq2seq": "greedy",
    "03_lifecycle": "lora_linear",
}


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A "python3" kernelspec for this interpreter, found first through JUPYTER_PATH."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))
    saved = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(root), saved]))
    yield "python3"
    if saved is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = saved


def _execute(path: Path, kernel_name: str, timeout: int = 600):
    """Run a notebook in its own folder; return it, or raise nbclient's CellExecutionError."""
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, kernel_name=kernel_name, timeout=timeout,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return notebook


def _text(notebook) -> str:
    return "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for output in cell.get("outputs", []))


# The first runs in seconds; the others train a model (seq2seq on dates) or pre-train one first.
STUDENT_CASES = [pytest.param(stem, marks=[] if stem.startswith("01") else [pytest.mark.slow])
                 for stem in sorted(FIRST_EXERCISE)]


@pytest.mark.parametrize("stem", STUDENT_CASES)
def test_student_notebook_stops_at_its_first_exercise(stem, kernel_name):
    with pytest.raises(nbclient.exceptions.CellExecutionError) as info:
        _execute(NOTEBOOKS / "student" / f"{stem}.ipynb", kernel_name)
    error = info.value
    assert error.ename == "AssertionError"
    name = FIRST_EXERCISE[stem]
    assert error.evalue == f"{name} is not implemented yet: fill in the TODO cell above"


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a loaded machine; alone each notebook takes 1-2 minutes
@pytest.mark.parametrize("stem", sorted(FIRST_EXERCISE))
def test_teacher_notebook_runs_top_to_bottom(stem, kernel_name):
    notebook = _execute(NOTEBOOKS / "teacher" / f"{stem}.ipynb", kernel_name, timeout=1200)
    text = _text(notebook)
    checks = [line for line in text.splitlines() if line.startswith("✓ ")]
    source = (NOTEBOOKS / "src" / f"{stem}.py").read_text()
    assert len(checks) == source.count("course.check_"), text
    assert "notebook ran in" in text
