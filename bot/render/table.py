"""Markdown tables -> a code block with padded columns: Slack has no tables, and this is the
closest readable form. Japanese takes two columns a character in a monospace font."""

from __future__ import annotations

import unicodedata

from markdown_it.tree import SyntaxTreeNode

from bot.render.fences import FENCE
from bot.render.inline import plain
from bot.render.text import escape_mrkdwn


def table(node: SyntaxTreeNode) -> str:
    rows: list[list[str]] = []
    aligns: list[str] = []
    for section in node.children:  # thead, tbody
        for row in section.children:
            cells = row.children
            if not aligns:
                aligns = [_cell_align(cell) for cell in cells]
            rows.append([plain(cell.children[0]) if cell.children else "" for cell in cells])
    columns = max(len(row) for row in rows)
    aligns += ["left"] * (columns - len(aligns))
    rows = [row + [""] * (columns - len(row)) for row in rows]
    widths = [max(_display_width(row[col]) for row in rows) for col in range(columns)]

    def line(row: list[str]) -> str:
        cells = (_pad(c, w, a) for c, w, a in zip(row, widths, aligns, strict=True))
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    lines = [line(rows[0]), rule, *(line(row) for row in rows[1:])]
    # Pad first, escape after: `&amp;` is five characters but one column.
    return f"{FENCE}\n{escape_mrkdwn(chr(10).join(lines))}\n{FENCE}"


def _cell_align(cell: SyntaxTreeNode) -> str:
    style = str(cell.attrs.get("style", ""))
    return style.removeprefix("text-align:") if style.startswith("text-align:") else "left"


def _pad(text: str, width: int, align: str) -> str:
    gap = width - _display_width(text)
    if align == "right":
        return " " * gap + text
    if align == "center":
        return " " * (gap // 2) + text + " " * (gap - gap // 2)
    return text + " " * gap


def _display_width(text: str) -> int:
    """Columns in a monospace font: East Asian wide/full-width characters take two."""
    width = 0
    for char in text:
        if unicodedata.combining(char) or char in "\u200b\u200c\u200d\ufe0f":
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width
