"""The sources list under an answer: one line per citation, linked where it has a safe URL.

Titles, headings and snippets are document text, so they are escaped and shortened here: one
odd document must not fill a section or post a mention.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from bot.render.fences import FENCE
from bot.render.text import escape_mrkdwn, single_line, slack_url, truncate_plain
from retrieval.types import Citation

SNIPPET_CHARS = 300  # a retrieval-only snippet is a teaser, not the passage
TITLE_CHARS = 200  # per source title or heading


def sources_mrkdwn(citations: list[Citation], *, with_snippets: bool) -> str:
    # When the model cited nothing, these are just the top passages: say so.
    heading = "*Sources*" if any(c.cited for c in citations) else "*Related sources*"
    lines = [heading]
    for citation in sorted(citations, key=lambda c: c.number):
        lines.append(_citation_line(citation))
        snippet = single_line(citation.snippet)
        if with_snippets and snippet:
            # A snippet is document text: escaped, and no ``` that would open a code block.
            quoted = escape_mrkdwn(truncate_plain(snippet, SNIPPET_CHARS)).replace(
                FENCE, "`\u200b``")
            lines.append(f"> {quoted}")
    return "\n".join(lines)


def _citation_line(citation: Citation) -> str:
    short = _short_source(citation.source)
    title = escape_mrkdwn(_label(citation.title) or short or "untitled")
    trail = "".join(f" › {escape_mrkdwn(h)}" for h in map(_label, citation.heading_path) if h)
    url = slack_url(citation.url or "") or slack_url(citation.source)
    if url:
        return f"[{citation.number}] <{url}|{title}>{trail}"
    path = f" · `{escape_mrkdwn(short.replace('`', ''))}`" if short and short != title else ""
    return f"[{citation.number}] *{title}*{trail}{path}"


def _label(text: str) -> str:
    return truncate_plain(single_line(text), TITLE_CHARS)


def _short_source(source: str) -> str:
    """`/srv/docs/handbook/expense.md` -> `handbook/expense.md`: enough to recognise the file."""
    parts = [part for part in PurePosixPath(source.strip().replace("\\", "/")).parts if part != "/"]
    return "/".join(parts[-2:])
