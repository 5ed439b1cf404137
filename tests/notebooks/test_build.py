"""notebooks/build.py: one source gives the teacher and student versions, and --check sees drift."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("jupytext", reason="the notebooks extra (jupytext, nbformat) is not installed")


def _build_module():
    spec = importlib.util.spec_from_file_location("notebooks_build", ROOT / "notebooks" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _build_module()

SOURCE = '''# %%
def cell(x):
    """docstring stays"""
    # BEGIN SOLUTION h' = tanh(x)
    y = x * 2
    return y
    # END SOLUTION


# %%
# BEGIN SOLUTION
answer = 42
# STUB
# answer = ...  # your number
#
# print(answer)
# END SOLUTION
'''


def test_teacher_keeps_the_solution_without_markers():
    teacher = build.split_version(SOURCE, "teacher")
    assert "BEGIN" not in teacher and "END SOLUTION" not in teacher and "STUB" not in teacher
    assert "    y = x * 2\n    return y\n" in teacher
    assert "answer = 42\n" in teacher and "your number" not in teacher


def test_student_gets_a_todo_and_a_stub_at_the_same_indentation():
    student = build.split_version(SOURCE, "student")
    assert "x * 2" not in student and "answer = 42" not in student
    assert ("    \"\"\"docstring stays\"\"\"\n    # TODO: h' = tanh(x)\n"
            "    raise NotImplementedError\n") in student
    assert "# TODO: your code here\nanswer = ...  # your number\n\nprint(answer)\n" in student


@pytest.mark.parametrize("text, message", [
    ("# BEGIN SOLUTION\nx = 1\n", "1: BEGIN SOLUTION is never closed"),
    ("x = 1\n# END SOLUTION\n", "2: # END SOLUTION without BEGIN SOLUTION"),
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n", "2: BEGIN SOLUTION inside the block opened at line 1"),
    ("# BEGIN SOLUTION\n# END SOLUTION\n", "1: empty solution block"),
])
def test_broken_markers_name_the_line(text, message):
    with pytest.raises(build.SourceError, match=message):
        build.split_version(text, "student", source="nb.py")


def test_notebook_json_has_no_outputs_and_stable_ids():
    text = build.to_notebook_json(build.split_version(SOURCE, "teacher"))
    notebook = json.loads(text)
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert [cell["id"] for cell in notebook["cells"]] == ["cell-0", "cell-1"]
    assert all(cell.get("outputs", []) == [] for cell in notebook["cells"])
    assert text == build.to_notebook_json(build.split_version(SOURCE, "teacher"))


def test_the_committed_notebooks_are_up_to_date(capsys):
    assert build.main(["--check"]) == 0, capsys.readouterr().err
    sources = sorted(p.stem for p in (ROOT / "notebooks" / "src").glob("[0-9]*.py"))
    assert sources == ["01_implement_an_rnn", "02_implement_a_seq2seq", "03_lifecycle"]
    for version in ("teacher", "student"):
        for stem in sources:
            assert (ROOT / "notebooks" / version / f"{stem}.ipynb").is_file()


def test_check_names_a_stale_file(tmp_path, monkeypatch, capsys):
    for folder in ("src", "teacher", "student"):
        (tmp_path / folder).mkdir()
    (tmp_path / "src" / "01_x.py").write_text(SOURCE)
    monkeypatch.setattr(build, "HERE", tmp_path)
    monkeypatch.setattr(build, "SOURCES", tmp_path / "src")
    assert build.main([]) == 0
    assert build.main(["--check"]) == 0
    (tmp_path / "student" / "01_x.py").write_text("edited by hand\n")
    assert build.main(["--check"]) == 1
    assert "/student/01_x.py\n" in capsys.readouterr().err
