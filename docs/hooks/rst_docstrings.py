"""Griffe extension: the reStructuredText in seqlab's docstrings, as Markdown for mkdocstrings.

The docstrings stay as they are (they read well in ``help()`` and in an editor); this turns,
before mkdocstrings parses them:

* ``:math:`x``` into ``\\(x\\)`` and a ``.. math::`` block into ``\\[ ... \\]`` (one per
  equation: blank lines separate them, as in reStructuredText), which pymdownx.arithmatex
  (generic mode) hands to MathJax;
* ``:class:`X```, ``:func:`~a.b```, ... into the code span ```X``` / ```b```;
* a simple table (columns drawn by ``=====  =====`` borders) into a Markdown table;
* a paragraph ending in ``::`` (a literal block follows) into one ending in ``:``;
* in an ``Args:`` / ``Raises:`` section, a wrapped line that starts at the items' indent
  (``dropout,`` under ``num_classes: ...``) is indented as the continuation it is, so the
  Google-style parser keeps it.

It also leaves out the undocumented attributes that ``__init__`` sets (``self.scale = scale``):
the reference shows every public function, method and constant, documented or not, and those
attributes would only repeat the signature.
"""

from __future__ import annotations

import re
import textwrap

import griffe

MATH_ROLE = re.compile(r":math:`(?P<body>[^`]+)`")
CODE_ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|mod|attr|data|obj|exc|const):`(?P<name>[^`]+)`")
MATH_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)\n"
                        r"(?P<body>(?:(?:(?P=indent)[ \t]+\S.*)?\n)*)", flags=re.MULTILINE)
LITERAL_MARKER = re.compile(r"(?<=\S)::$", flags=re.MULTILINE)
TABLE_BORDER = re.compile(r"^(?P<indent>[ \t]*)=+(?: +=+)+[ \t]*$")
ITEM_SECTION = re.compile(r"^(?P<indent>[ \t]*)(?:Args|Arguments|Parameters|Raises):[ \t]*$")
# One item of such a section: "name: ...", "a, b: ...", "*args: ...", "name (type): ...".
ITEM = re.compile(r"^\*{0,2}\w+(?:, *\*{0,2}\w+)*(?: \([^)]*\))?:(?:\s|$)")


def code_role(match: re.Match) -> str:
    name = match["name"]
    if name.startswith("~"):
        name = name[1:].rsplit(".", 1)[-1]
    return f"`{name.lstrip('.')}`"


def math_block(match: re.Match) -> str:
    indent = match["indent"]
    first = match["first"] + "\n" if match["first"] else ""
    body = (first + textwrap.dedent(match["body"])).strip("\n")
    blocks = []
    for equation in re.split(r"\n[ \t]*\n", body):
        lines = "\n".join(indent + line for line in equation.splitlines())
        blocks.append(f"{indent}\\[\n{lines}\n{indent}\\]\n")
    return "\n".join(blocks) + "\n"


def next_border(lines: list[str], start: int) -> int | None:
    """Index of the first table border at or after ``start``, before any blank line."""
    for index in range(start, len(lines)):
        if not lines[index].strip():
            return None
        if TABLE_BORDER.match(lines[index]):
            return index
    return None


def table_rows(lines: list[str], starts: list[int]) -> list[list[str]]:
    rows = []
    for line in lines:
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        if rows and not cells[0]:  # an empty first column continues the row above
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells)]
        else:
            rows.append(cells)
    return rows


def markdown_row(indent: str, cells: list[str]) -> str:
    return indent + "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def simple_tables(text: str) -> str:
    """Rewrite reStructuredText simple tables; three borders mean the first row is a header."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        border = TABLE_BORDER.match(lines[i])
        close = next_border(lines, i + 1) if border else None
        if close is None:
            out.append(lines[i])
            i += 1
            continue
        starts = [match.start() for match in re.finditer(r"=+", lines[i])]
        header, body = [""] * len(starts), table_rows(lines[i + 1:close], starts)
        third = next_border(lines, close + 1)
        if third is not None:
            header = [" ".join(cells) for cells in zip(*body)]
            body, close = table_rows(lines[close + 1:third], starts), third
        indent = border["indent"]
        if out and out[-1].strip():
            out.append("")
        out.append(markdown_row(indent, header))
        out.append(markdown_row(indent, ["---"] * len(starts)))
        out += [markdown_row(indent, row) for row in body]
        if close + 1 < len(lines) and lines[close + 1].strip():
            out.append("")
        i = close + 1
    return "\n".join(out)


def item_continuations(text: str) -> str:
    """Indent the wrapped lines of Args / Raises items that start at the items' own indent."""
    lines, section_indent, item_indent = text.split("\n"), None, None
    for index, line in enumerate(lines):
        header = ITEM_SECTION.match(line)
        if header:
            section_indent, item_indent = len(header["indent"]), None
            continue
        if section_indent is None or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= section_indent:
            section_indent = None  # the section has ended
        elif item_indent is None:
            item_indent = indent
        elif indent == item_indent and not ITEM.match(line.lstrip()):
            lines[index] = " " * 4 + line
    return "\n".join(lines)


def to_markdown(text: str) -> str:
    text = MATH_BLOCK.sub(math_block, text + "\n").rstrip("\n")
    text = MATH_ROLE.sub(lambda m: f"\\({m['body']}\\)", text)
    text = CODE_ROLE.sub(code_role, text)
    text = simple_tables(text)
    text = item_continuations(text)
    return LITERAL_MARKER.sub(":", text)


class RstDocstrings(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)

    def on_class_members(self, *, cls: griffe.Class, **kwargs) -> None:
        for name, member in list(cls.members.items()):
            if (not member.is_alias and member.is_attribute and member.docstring is None
                    and member.labels == {"instance-attribute"}):
                del cls.members[name]
