"""reStructuredText: section titles rewritten as `#` lines, literal blocks fenced with ```, the
rest of the text as written.

docutils parses the document, so a title is what docutils takes for one (levels in the order
adornment styles first appear, transitions and short underlines as it reads them). Its parse
tree says *which* lines are titles and literal blocks; their positions are found again in the
source by their text, in document order, because docutils' own line numbers are not exact for
every construct. Only the parser runs (no transforms, no file inclusion, no raw passthrough), and
its complaints (unknown Sphinx roles and directives) are not reported: the text is still fine.
"""

from __future__ import annotations

import re
from typing import Any

from docutils import nodes
from docutils.frontend import get_default_settings
from docutils.parsers.rst import Parser
from docutils.utils import new_document

from retrieval.loaders.formats.base import Format, Parsed, RawFile

# A line of one repeated punctuation character: a section adornment.
_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1*[ \t]*$")
# An interpreted-text role docutils does not know (Sphinx's :ref:, :doc:, :class: ...).
_ROLE = re.compile(r"^(?::[\w.+:-]+:)?`(?P<content>.*)`(?::[\w.+:-]+:)?$", re.DOTALL)
# Sphinx `Label <target>`: the label is what a reader sees.
_LABELLED = re.compile(r"^(?P<label>.*?)\s*<[^<>]*>$", re.DOTALL)


def parse(raw: RawFile) -> Parsed:
    """Title (the first top-level section) and the Markdown-like text."""
    lines = raw.text.split("\n")
    replaced: dict[int, tuple[int, list[str]]] = {}  # first line -> (end line, new lines)
    title: str | None = None
    cursor = 0
    for node in _parse_tree(raw.text).findall(_is_title_or_literal):
        if isinstance(node, nodes.title):
            found = _find_title(lines, node.rawsource, cursor)
            if found is None:
                continue
            start, end = found
            level = min(sum(1 for _ in _section_ancestors(node)), 6)
            words = _title_words(node)
            if level == 1 and title is None:
                title = words
            replaced[start] = (end, [f"{'#' * level} {words}"])
        else:
            content = node.rawsource.split("\n")
            rejected = _in_system_message(node)
            found = _find_block(lines, content, cursor, first_indented=not rejected)
            if found is None:
                continue
            start, end = found
            if rejected:  # fence the body: after the directive line, without blank lines
                start += 1
                while start < end and not lines[start].strip():
                    start += 1
                while end > start and not lines[end - 1].strip():
                    end -= 1
                if start == end:
                    continue
            replaced[start] = (end, ["```", *lines[start:end], "```"])
        cursor = end
    out: list[str] = []
    i = 0
    while i < len(lines):
        if i in replaced:
            end, new_lines = replaced[i]
            out.extend(new_lines)
            i = end
        else:
            out.append(lines[i])
            i += 1
    return Parsed(title=title, text="\n".join(out))


def _parse_tree(text: str) -> nodes.document:
    settings: Any = get_default_settings(Parser)
    settings.report_level = 5  # never report: unknown roles and directives are expected
    settings.halt_level = 5
    settings.warning_stream = False
    settings.file_insertion_enabled = False  # `.. include:: /etc/passwd` reads nothing
    settings.raw_enabled = False
    settings.syntax_highlight = "none"
    document = new_document("<rst>", settings)
    Parser().parse(text, document)
    return document


def _is_title_or_literal(node: nodes.Node) -> bool:
    """Section titles, literal blocks, and directives docutils could not run (an unknown Sphinx
    directive, a code block with Sphinx options): their body is not text docutils read, and a
    `# comment` in it must not become a heading."""
    if isinstance(node, nodes.title):
        return isinstance(node.parent, nodes.section)
    if isinstance(node, nodes.literal_block):
        # Inside a system message docutils quotes the source back: keep only directives.
        return not _in_system_message(node) or node.rawsource.startswith("..")
    return False


def _in_system_message(node: nodes.Node) -> bool:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, nodes.system_message):
            return True
        parent = parent.parent
    return False


def _section_ancestors(node: nodes.Node) -> list[nodes.Node]:
    sections = []
    parent = node.parent
    while parent is not None:
        if isinstance(parent, nodes.section):
            sections.append(parent)
        parent = parent.parent
    return sections


def _same(line: str, text: str) -> bool:
    return line.expandtabs(8).strip() == text.expandtabs(8).strip()


def _find_title(lines: list[str], rawsource: str, start: int) -> tuple[int, int] | None:
    """(first, end) lines of the title written as `rawsource`, overline included."""
    for i in range(start, len(lines) - 1):
        if _same(lines[i], rawsource) and _ADORNMENT.match(lines[i + 1]):
            over = i - 1
            if over >= start and lines[over].strip() == lines[i + 1].strip():
                return over, i + 2
            return i, i + 2
    return None


def _find_block(
    lines: list[str], content: list[str], start: int, *, first_indented: bool
) -> tuple[int, int] | None:
    """(first, end) lines of the block whose text, dedented, is `content`; a literal block's
    first line is indented, a directive's is not."""
    if not content or not content[0].strip():
        return None
    for i in range(start, len(lines) - len(content) + 1):
        if first_indented and not lines[i][:1].isspace():
            continue
        if all(_same(lines[i + k], text) for k, text in enumerate(content)):
            return i, i + len(content)
    return None


def _title_words(title: nodes.title) -> str:
    """The title as a reader sees it; an unknown role shows its text (`Label <target>` -> Label)."""
    parts = []
    for child in title.children:
        if isinstance(child, nodes.problematic):
            role = _ROLE.match(child.astext())
            content = role.group("content") if role else child.astext()
            labelled = _LABELLED.match(content)
            content = labelled.group("label") if labelled and labelled.group("label") else content
            parts.append(content.lstrip("~!"))
        else:
            parts.append(child.astext())
    return " ".join("".join(parts).split())


FORMAT = Format(kind="rst", suffixes=(".rst",), parse=parse, headings=True)
