"""Build the teacher and student notebooks from the one source in notebooks/src.

    python notebooks/build.py           write notebooks/teacher/* and notebooks/student/*
    python notebooks/build.py --check   exit 1, naming the files, if any generated file is stale

Each source is a jupytext "percent" file. A solution is a block of lines between

    # BEGIN SOLUTION <hint for the student>
    ...the teacher's code...
    # STUB
    # ...optional student code, commented out here...
    # END SOLUTION

The teacher version keeps the code and drops the three marker lines and the stub. The student
version drops the code; in its place come ``# TODO: <hint>`` and either the stub (uncommented)
or ``raise NotImplementedError``, at the indentation of the BEGIN line. Each version is
written as a percent ``.py`` file and as an ``.ipynb`` without outputs, with cell ids numbered
in order so that a rebuild is byte-identical.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
VERSIONS = ("teacher", "student")
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}

BEGIN = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION\s*(?P<hint>.*?)\s*$")
STUB = re.compile(r"^\s*# STUB\s*$")
END = re.compile(r"^\s*# END SOLUTION\s*$")


class SourceError(ValueError):
    """A solution block that is not closed, nested or empty."""


def split_version(text: str, version: str, source: str = "<source>") -> str:
    """The teacher or student text of one source (see the module docstring)."""
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {', '.join(VERSIONS)}; got {version!r}")
    out: list[str] = []
    block = None  # (line number, indent, hint, solution lines, stub lines, in stub)
    for number, line in enumerate(text.splitlines(), start=1):
        begin, stub, end = BEGIN.match(line), STUB.match(line), END.match(line)
        if begin:
            if block is not None:
                raise SourceError(f"{source}:{number}: BEGIN SOLUTION inside the block opened at "
                                  f"line {block['line']}")
            block = {"line": number, "indent": begin["indent"], "hint": begin["hint"],
                     "solution": [], "stub": [], "in_stub": False}
        elif block is None and (stub or end):
            raise SourceError(f"{source}:{number}: {line.strip()} without BEGIN SOLUTION")
        elif stub:
            block["in_stub"] = True
        elif end:
            if not block["solution"]:
                raise SourceError(f"{source}:{block['line']}: empty solution block")
            out.extend(block["solution"] if version == "teacher" else _student_lines(block))
            block = None
        elif block is not None:
            block["stub" if block["in_stub"] else "solution"].append(line)
        else:
            out.append(line)
    if block is not None:
        raise SourceError(f"{source}:{block['line']}: BEGIN SOLUTION is never closed by "
                          "END SOLUTION")
    return "\n".join(out) + "\n"


def _student_lines(block: dict) -> list[str]:
    indent, hint = block["indent"], block["hint"] or "your code here"
    lines = [f"{indent}# TODO: {hint}"]
    if block["stub"]:
        for line in block["stub"]:
            stripped = line[len(indent):] if line.startswith(indent) else line.lstrip()
            # "# code" -> "code"; a lone "#" is an empty line of the stub
            lines.append(indent + re.sub(r"^# ?", "", stripped) if stripped.strip() != "#"
                         else "")
    else:
        lines.append(f"{indent}raise NotImplementedError")
    return lines


def to_notebook_json(text: str) -> str:
    """The .ipynb text of a percent file: no outputs, python3 kernel, cell ids cell-0, cell-1..."""
    import jupytext
    import nbformat

    notebook = jupytext.reads(text, fmt="py:percent")
    notebook.metadata.pop("jupytext", None)
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    notebook.metadata["language_info"] = {"name": "python"}
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index}"
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nbformat.validate(notebook)
    return nbformat.writes(notebook) + "\n"


def generated_files() -> dict[Path, str]:
    """{path: text} of every file the build writes."""
    sources = sorted(SOURCES.glob("[0-9]*.py"))
    if not sources:
        raise SystemExit(f"no notebook sources in {SOURCES}")
    files = {}
    for source in sources:
        text = source.read_text(encoding="utf-8")
        for version in VERSIONS:
            versioned = split_version(text, version, source=str(source.relative_to(HERE)))
            files[HERE / version / source.name] = versioned
            files[HERE / version / source.with_suffix(".ipynb").name] = to_notebook_json(versioned)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; fail if a generated file is missing or stale")
    args = parser.parse_args(argv)
    try:
        files = generated_files()
    except SourceError as error:
        print(f"build.py: error: {error}", file=sys.stderr)
        return 2
    stale = [path for path, text in files.items()
             if not path.is_file() or path.read_text(encoding="utf-8") != text]
    if args.check:
        expected = set(files)
        extra = [path for version in VERSIONS for path in sorted((HERE / version).glob("*"))
                 if path.suffix in (".py", ".ipynb") and path not in expected]
        for path in stale:
            print(f"stale: {path.relative_to(HERE.parent)}", file=sys.stderr)
        for path in extra:
            print(f"not built from a source: {path.relative_to(HERE.parent)}", file=sys.stderr)
        if stale or extra:
            print("build.py: run `python notebooks/build.py` and commit the result",
                  file=sys.stderr)
            return 1
        print(f"build.py: {len(files)} generated files are up to date")
        return 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path], encoding="utf-8")
    print(f"build.py: {len(stale)} of {len(files)} files written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
