"""The documentation site builds in strict mode, its API reference covers every public name, and
the equations of the docstrings reach MathJax."""

import html
import importlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOOKS = ROOT / "docs" / "hooks"
INSTALL = "pip install mkdocs mkdocs-material 'mkdocstrings[python]' mkdocs-jupyter"
for module in ("mkdocs", "material", "mkdocstrings_handlers.python", "mkdocs_jupyter"):
    pytest.importorskip(module, reason=f"the documentation site needs {module}: {INSTALL}")

# The packages the API reference must cover, name by name.
PACKAGES = ("nn", "models", "tune", "align")
INLINE_MATH = re.compile(r":math:`([^`]+)`")
BLOCK_MATH = re.compile(r"^([ \t]*)\.\. math::[ \t]*\n((?:(?:\1[ \t]+\S.*)?\n)*)", re.MULTILINE)


def build(project: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        check=False, cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )


class Page(HTMLParser):
    """The ids of the headings mkdocstrings writes, the text of each arithmatex element, links."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.heading_ids, self.math, self.links = set(), [], []
        self._math_depth = 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if "doc-heading" in classes and attrs.get("id"):
            self.heading_ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if self._math_depth:
            self._math_depth += 1
        elif "arithmatex" in classes:
            self._math_depth = 1
            self.math.append("")

    def handle_endtag(self, tag):
        if self._math_depth:
            self._math_depth -= 1

    def handle_data(self, data):
        if self._math_depth:
            self.math[-1] += data


def read_page(site: Path, uri: str) -> Page:
    return Page((site / uri / "index.html").read_text(encoding="utf-8"))


def squash(text: str) -> str:
    return " ".join(html.unescape(text).split())


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    result = build(ROOT, site)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-4000:]}"
    return site


@pytest.mark.slow  # the whole site: ~8 s of CPU, more wall time on a busy machine
def test_site_builds_strictly_without_warnings(site):
    assert (site / "index.html").is_file()
    assert (site / "api" / "nn" / "index.html").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_has_a_heading_in_the_api_reference(site, package):
    module = importlib.import_module(f"seqlab.{package}")
    page = read_page(site, f"api/{package}")
    missing = [name for name in module.__all__
               if f"seqlab.{package}.{name}" not in page.heading_ids]
    assert not missing, f"api/{package}.md has no heading for {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("package", PACKAGES)
def test_docstring_equations_reach_mathjax(site, package):
    """Each :math: role and .. math:: equation of a public docstring is an arithmatex element."""
    module = importlib.import_module(f"seqlab.{package}")
    rendered = [squash(text) for text in read_page(site, f"api/{package}").math]
    equations = []
    for name in module.__all__:
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        doc = inspect.getdoc(obj) or ""
        equations += INLINE_MATH.findall(doc)
        for _, body in BLOCK_MATH.findall(doc + "\n"):
            equations += [eq for eq in re.split(r"\n\s*\n", body) if eq.strip()]  # one each
    if package == "nn":
        assert equations, "seqlab.nn's docstrings hold equations (positional encodings, blocks)"
    missing = [eq for eq in map(squash, equations)
               if not any(eq in text for text in rendered)]
    assert not missing, f"api/{package}: equations not rendered as math: {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("uri", ["", "results"])
def test_included_pages_link_only_to_pages_of_the_site(site, uri):
    """The README (home) and benchmarks/RESULTS.md link to the site's pages, not the repo's."""
    page = read_page(site, uri)
    local = [href.split("#")[0] for href in page.links
             if href and not re.match(r"^[a-z]+:|^#", href)]
    assert local
    base = (site / uri).resolve()
    broken = [href for href in local if href
              and not (base / href).is_file() and not (base / href / "index.html").is_file()]
    assert not broken, f"{uri or 'index'}: links to nothing: {broken}"
    assert not [href for href in local if href.endswith(".md")]


def load_hook(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", HOOKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rst_roles_math_and_tables_become_markdown():
    to_markdown = load_hook("rst_docstrings").to_markdown
    text = (
        "Loss :math:`-\\log \\sigma(\\beta m)`, see :class:`~seqlab.models.TransformerLM` and\n"
        ":func:`dpo_loss`.\n"
        "\n"
        "    .. math::\n"
        "        a = b, \\qquad\n"
        "            c = d\n"
        "\n"
        "        e = f\n"
        "\n"
        "    with a the thing. Shapes::\n"
        "\n"
        "        x  (N, L)\n"
        "\n"
        "========= ==========\n"
        "input     (N, L) long\n"
        "          or None\n"
        "mask      (N, L) a|b\n"
        "========= ==========\n"
        "\n"
        "====== ======\n"
        "name   shape\n"
        "====== ======\n"
        "x      (N,)\n"
        "====== ======\n"
        "\n"
        "Args:\n"
        "    size: H. dropout,\n"
        "    bias: as in\n"
        "    torch.\n"
    )
    assert to_markdown(text) == (
        "Loss \\(-\\log \\sigma(\\beta m)\\), see `TransformerLM` and\n"
        "`dpo_loss`.\n"
        "\n"
        "    \\[\n"
        "    a = b, \\qquad\n"
        "        c = d\n"
        "    \\]\n"
        "\n"
        "    \\[\n"
        "    e = f\n"
        "    \\]\n"
        "\n"
        "    with a the thing. Shapes:\n"
        "\n"
        "        x  (N, L)\n"
        "\n"
        "|  |  |\n"
        "| --- | --- |\n"
        "| input | (N, L) long or None |\n"
        "| mask | (N, L) a\\|b |\n"
        "\n"
        "| name | shape |\n"
        "| --- | --- |\n"
        "| x | (N,) |\n"
        "\n"
        "Args:\n"
        "    size: H. dropout,\n"
        "    bias: as in\n"
        "        torch."
    )


def write_notebook(path: Path, title: str) -> None:
    cell = {"cell_type": "markdown", "metadata": {}, "source": [f"# {title}\n", "$h_t$"]}
    path.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4,
                                "nbformat_minor": 5}))


def test_hook_includes_repo_files_and_completes_the_nav(tmp_path):
    """A small project: README as home page, a results file, one notebook of the three, a page
    missing from the nav."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "notebooks" / "teacher").mkdir(parents=True)
    (tmp_path / "README.md").write_text(
        "# demo\n\nSee [the page](docs/sub/page.md#part) and [results](benchmarks/RESULTS.md).\n")
    (tmp_path / "benchmarks" / "RESULTS.md").write_text(
        "# Results\n\nExplained in [the page](../docs/sub/page.md).\n")
    (tmp_path / "docs" / "sub").mkdir()
    (tmp_path / "docs" / "sub" / "page.md").write_text("# Page\n\n## part\n")
    (tmp_path / "docs" / "sub" / "unlisted.md").write_text("# A page the nav forgot\n")
    (tmp_path / "docs" / "api.md").write_text("# API\n")
    (tmp_path / "docs" / "index.md").write_text('--8<-- "README.md"\n')
    (tmp_path / "docs" / "results.md").write_text('--8<-- "benchmarks/RESULTS.md"\n')
    write_notebook(tmp_path / "notebooks" / "teacher" / "01_implement_an_rnn.ipynb",
                   "Implement an RNN")
    (tmp_path / "mkdocs.yml").write_text(
        "site_name: demo\n"
        f"hooks: [{HOOKS / 'repo_files.py'}]\n"
        "plugins: [{mkdocs-jupyter: {include: ['*.ipynb'], execute: false, cache: false}}]\n"
        "nav:\n  - Home: index.md\n  - Pages: [sub/page.md]\n  - results.md\n"
        "  - API reference: [api.md]\n"
    )
    result = build(tmp_path, tmp_path / "site")
    assert result.returncode == 0, result.stderr[-4000:]

    site = tmp_path / "site"
    home = read_page(site, "")
    assert "sub/page/#part" in home.links and "results/" in home.links
    assert "../sub/page/" in read_page(site, "results").links
    notebook = site / "notebooks" / "teacher" / "01_implement_an_rnn" / "index.html"
    assert notebook.is_file()
    # The notebook is listed in the nav, titled by its heading, before the API reference.
    text = (site / "index.html").read_text(encoding="utf-8")
    assert "notebooks/teacher/01_implement_an_rnn/" in home.links
    assert text.index("Notebooks") < text.index("Implement an RNN") < text.rindex("API reference")
    # The page missing from the nav is listed after the other page of its folder.
    assert home.links.index("sub/page/") < home.links.index("sub/unlisted/")
