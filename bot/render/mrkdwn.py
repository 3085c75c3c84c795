"""Model-written Markdown (CommonMark) -> Slack mrkdwn that is safe to post.

The two disagree on emphasis, links, headings and tables, and Slack treats `<...>` as control
sequences. We parse with markdown-it-py (a token tree, so code spans, fences and tables are found
the way a Markdown reader would find them) and escape every `&`, `<`, `>` we did not write
ourselves, so neither the model nor a quoted document can post `<!channel>`, `<@U123>` or
`<!here>`. This module handles blocks; `inline` the text inside them, `table` the tables.
"""

from __future__ import annotations

import functools

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

from bot.render import fences
from bot.render.fences import FENCE, FENCE_LINE
from bot.render.inline import inline
from bot.render.table import table
from bot.render.text import escape_mrkdwn

_INDENT = "    "
_HR = "─" * 10


def markdown_to_mrkdwn(markdown: str) -> str:
    """Convert model-written Markdown to Slack mrkdwn that is safe to post."""
    tree = SyntaxTreeNode(_parser().parse(markdown))
    return _join_blocks(tree.children, "\n\n")


@functools.cache
def _parser() -> MarkdownIt:
    # html off: raw HTML (and `<!channel>`, which CommonMark reads as an HTML declaration) stays
    # text, so it gets escaped like any other text.
    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def _join_blocks(nodes: list[SyntaxTreeNode], separator: str) -> str:
    return separator.join(text for text in (_block(node) for node in nodes) if text)


def _block(node: SyntaxTreeNode) -> str:
    kind = node.type
    if kind == "paragraph":
        return inline(node.children[0]) if node.children else ""
    if kind == "heading":
        # Slack has no headings; a bold line is the usual stand-in. Emphasis inside is dropped
        # because `*` cannot nest in `*`.
        text = inline(node.children[0], emphasis=False).strip() if node.children else ""
        return f"*{text}*" if text else ""
    if kind in ("bullet_list", "ordered_list"):
        return "\n".join(_list_item(item) for item in node.children)
    if kind == "blockquote":
        return _prefix_lines(_join_blocks(node.children, "\n"), "> ")
    if kind in ("fence", "code_block"):
        return _fence(node.content)
    if kind == "table":
        return table(node)
    if kind == "hr":
        return _HR
    if node.children:
        return _join_blocks(node.children, "\n\n")
    return escape_mrkdwn(node.content)


def _list_item(item: SyntaxTreeNode) -> str:
    marker = f"{item.info}{item.markup} " if item.info else "• "
    parts = [text for text in (_block(child) for child in item.children) if text]
    if not parts:
        return marker.rstrip()
    first, *others = parts
    if FENCE_LINE.match(first.split("\n", 1)[0]):
        # Fence lines stay whole lines, so the splitter and Slack both recognise them.
        lines = [marker.rstrip(), first]
    else:
        lines = [marker + _indent(first, skip_first=True)]
    lines.extend(_indent(part) for part in others)
    return "\n".join(lines)


def _indent(text: str, *, skip_first: bool = False) -> str:
    """Indent nested list content, leaving code fences and their contents flush left."""
    out: list[str] = []
    for index, line in enumerate(fences.lines(text)):
        content = text[line.start : line.end]
        in_code = line.fence_before is not None or line.is_fence
        keep = in_code or not content or (skip_first and index == 0)
        out.append(content if keep else _INDENT + content)
    return "\n".join(out)


def _prefix_lines(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else prefix.rstrip() for line in text.split("\n"))


def _fence(code: str) -> str:
    # The language tag is dropped: Slack would show it as the first line of code.
    body = escape_mrkdwn(code.rstrip("\n"))
    return f"{FENCE}\n{body}\n{FENCE}" if body.strip() else ""
