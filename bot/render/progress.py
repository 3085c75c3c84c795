"""The message edited while an answer streams in: partial Markdown, shown well-formed."""

from __future__ import annotations

import re

from bot.render.fences import FENCE
from bot.render.limits import SECTION_TEXT_LIMIT
from bot.render.mrkdwn import markdown_to_mrkdwn
from bot.render.split import keep_end
from bot.render.text import ELLIPSIS, slack_len

PROGRESS_TEXT_LIMIT = SECTION_TEXT_LIMIT


def render_progress(partial_markdown: str) -> str:
    """Text for the message being edited while an answer streams in.

    The partial text is made well-formed first (an open `**` is closed, a trailing half marker
    dropped; markdown-it closes an open fence), and when it is too long its *end* is kept,
    because that is what the reader is waiting for.
    """
    text = markdown_to_mrkdwn(_close_open_emphasis(partial_markdown))
    if not text:
        return ELLIPSIS
    if slack_len(text) <= PROGRESS_TEXT_LIMIT:
        return text
    return keep_end(text, PROGRESS_TEXT_LIMIT)


def _close_open_emphasis(markdown: str) -> str:
    """Close `**`, `__`, `~~` and inline code left open at the end of a streamed-in text."""
    fences = [line for line in markdown.split("\n") if line.lstrip().startswith((FENCE, "~~~"))]
    if len(fences) % 2:
        return markdown  # inside a code fence; markdown-it closes the fence itself
    cut = markdown.rfind("\n\n") + 1
    head, tail = markdown[:cut], markdown[cut:].rstrip("*_~")
    if tail.count("`") % 2:
        return head + tail + "`"
    outside_code = re.sub(r"`[^`]*`", "", tail)
    open_markers = [m for m in ("**", "__", "~~") if outside_code.count(m) % 2]
    open_markers.sort(key=outside_code.rfind, reverse=True)  # innermost closes first
    return head + tail + "".join(open_markers)
