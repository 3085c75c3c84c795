"""Code fences in mrkdwn we wrote: which lines are fences and which lines sit inside one.

The converter needs this to keep fenced code flush left inside list items; the splitter needs it
to close a fence at the end of a piece and reopen it (with its blockquote prefix) in the next.
"""

from __future__ import annotations

import re
from typing import NamedTuple

FENCE = "```"
# A whole fence line as we emit it: optional blockquote prefix, then ``` and nothing else.
FENCE_LINE = re.compile(r"^((?:> ?)*)```$")
FENCE_RESERVE = 32  # room for closing a fence at the end of a piece ("\n" + quote prefix + ```)


class Line(NamedTuple):
    start: int
    end: int  # index of the "\n" ending the line, or len(text)
    is_fence: bool
    fence_before: str | None  # blockquote prefix of the fence open before this line, if any
    fence_after: str | None  # ... and after it


def lines(text: str, until: int | None = None) -> list[Line]:
    """Lines with their code-fence state, up to the line after position `until`."""
    found: list[Line] = []
    fence: str | None = None
    start = 0
    stop = len(text) if until is None else min(len(text), until)
    while start <= len(text) and (not found or found[-1].start <= stop):
        end = text.find("\n", start)
        end = len(text) if end == -1 else end
        match = FENCE_LINE.match(text[start:end])
        before = fence
        if match:
            # The prefix is capped so that closing and reopening a fence fits in FENCE_RESERVE.
            fence = None if fence is not None else match.group(1)[: FENCE_RESERVE - 8]
        found.append(Line(start, end, bool(match), before, fence))
        start = end + 1
    return found


def line_at(text_lines: list[Line], position: int) -> Line:
    return next(line for line in text_lines if line.start <= position <= line.end)
