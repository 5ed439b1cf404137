"""MkDocs hook: pages made from files outside docs/, so each text has one home in the repository.

* ``--8<-- "PATH"`` on a line of its own (PATH relative to the repository root) is replaced by
  that file. Its relative links are rewritten for the page that includes it: a link to
  ``docs/x.md`` becomes a link to the site's ``x.md``, a link to another included file becomes a
  link to the page that includes it (``benchmarks/RESULTS.md`` -> ``results.md``). This is how
  the home page shows the README and ``results.md`` shows the benchmark results.
* Every ``notebooks/teacher/*.ipynb`` becomes a page at the same path (rendered by
  mkdocs-jupyter) and gets a nav entry under "Notebooks"; the notebooks that are not there yet
  are simply left out, so the build does not depend on them.
* A page of docs/ that the nav of mkdocs.yml does not list joins the nav section that holds
  the other pages of its folder (a new ``docs/x.md`` goes to the end of "Concepts").
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.repo_files")

NOTEBOOKS = "notebooks/teacher"
NOTEBOOK_SECTION = "Notebooks"
INCLUDE = re.compile(r'^--8<-- "(?P<path>[^"]+)"\s*$', flags=re.MULTILINE)
# A Markdown link or image target: ](target) or ](target "title").
LINK = re.compile(r'(?P<head>\]\()(?P<target>[^)\s#]+)(?P<tail>[^)]*\))')


def repo_root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


def notebook_paths(config) -> list[Path]:
    return sorted((repo_root(config) / NOTEBOOKS).glob("*.ipynb"))


def notebook_title(path: Path) -> str:
    """The notebook's first Markdown heading, or its file name."""
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        source = "".join(cell.get("source", []))
        for line in source.splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip()
    return path.stem.replace("_", " ")


def included_sources(config) -> dict[str, str]:
    """Repository path of each included file -> the docs page that includes it."""
    docs = Path(config.docs_dir)
    pages = {}
    for page in sorted(docs.rglob("*.md")):
        if "hooks" in page.relative_to(docs).parts:
            continue
        for match in INCLUDE.finditer(page.read_text(encoding="utf-8")):
            pages.setdefault(match["path"], page.relative_to(docs).as_posix())
    return pages


def nav_paths(items) -> list[str]:
    if isinstance(items, str):
        return [items]
    if isinstance(items, dict):
        return [path for value in items.values() for path in nav_paths(value)]
    return [path for item in items for path in nav_paths(item)]


def folder_section(nav: list, folder: str) -> list | None:
    """The top-level nav section that lists pages of ``folder``, if one does."""
    for item in nav:
        if isinstance(item, dict):
            entries = next(iter(item.values()))
            if isinstance(entries, list) and any(
                    posixpath.dirname(path) == folder for path in nav_paths(entries)):
                return entries
    return None


def add_unlisted_pages(config) -> None:
    listed = set(nav_paths(config.nav))
    docs = Path(config.docs_dir)
    for page in sorted(docs.rglob("*.md")):
        uri = page.relative_to(docs).as_posix()
        if uri in listed or (config.exclude_docs and config.exclude_docs.match_file(uri)):
            continue
        section = folder_section(config.nav, posixpath.dirname(uri))
        if section is not None:
            log.info("%s is not in the nav of mkdocs.yml: listed with its folder's pages", uri)
            section.append(uri)


def on_config(config):
    """Complete the nav: unlisted pages, then the notebooks that exist (before the API)."""
    folder = repo_root(config) / NOTEBOOKS
    if folder.is_dir() and str(folder) not in config.watch:
        config.watch.append(str(folder))  # `mkdocs serve` rebuilds when a notebook changes
    if config.nav is None:
        return config
    add_unlisted_pages(config)
    paths = notebook_paths(config)
    if not paths:
        return config
    entries = [{notebook_title(p): f"{NOTEBOOKS}/{p.name}"} for p in paths]
    nav = [item for item in config.nav
           if not (isinstance(item, dict) and NOTEBOOK_SECTION in item)]
    titles = [next(iter(item)) if isinstance(item, dict) else None for item in nav]
    position = titles.index("API reference") if "API reference" in titles else len(nav)
    nav.insert(position, {NOTEBOOK_SECTION: entries})
    config.nav = nav
    return config


@event_priority(100)  # before mkdocs-jupyter, which turns .ipynb files into pages
def on_files(files, config):
    root = repo_root(config)
    for path in notebook_paths(config):
        # A file of the repository root: mkdocs-jupyter reads it from its real path.
        files.append(File(f"{NOTEBOOKS}/{path.name}", src_dir=str(root),
                          dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files


def site_link(repo_path: str, page_uri: str, included: dict[str, str]) -> str | None:
    """The link, relative to ``page_uri``, that reaches ``repo_path`` in the site (None: none)."""
    if repo_path in included:
        target = included[repo_path]
    elif repo_path.startswith("docs/"):
        target = repo_path[len("docs/"):]
    else:
        return None
    return posixpath.relpath(target, posixpath.dirname(page_uri) or ".")


def rewrite_links(text: str, source: str, page_uri: str, included: dict[str, str],
                  root: Path) -> str:
    """Rewrite the relative links of ``text`` (from repo file ``source``) for ``page_uri``."""

    def replace(match: re.Match) -> str:
        target = match["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
            return match[0]
        repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(source), target))
        link = site_link(repo_path, page_uri, included)
        if link is None:
            if (root / repo_path).exists():
                log.warning("%s links to %s, which is not in the site", source, repo_path)
            return match[0]
        return match["head"] + link + match["tail"]

    return LINK.sub(replace, text)


def on_page_markdown(markdown, page, config, files):
    if "--8<--" not in markdown:
        return markdown
    root = repo_root(config)
    included = included_sources(config)

    def include(match: re.Match) -> str:
        source = match["path"]
        path = root / source
        if not path.is_file():
            log.warning("%s includes %s, which does not exist", page.file.src_uri, source)
            return match[0]
        text = path.read_text(encoding="utf-8")
        return rewrite_links(text, source, page.file.src_uri, included, root)

    return INCLUDE.sub(include, markdown)
