"""Cutting mrkdwn to Slack's limits without breaking it.

Long answers are split at paragraph, line and sentence boundaries; a cut inside a code fence
closes the fence and reopens it in the next piece, and a cut never falls inside a `<url|text>`
link, an `&amp;` entity, inline code or a surrogate pair, nor before a combining mark. `keep_end`
is the same care applied from the other side, for the progress message that shows the end.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from bot.render import fences
from bot.render.fences import FENCE, FENCE_RESERVE, Line
from bot.render.limits import SECTION_TEXT_LIMIT
from bot.render.text import ELLIPSIS, fit, joins_previous, slack_len

# Spans a cut must not fall inside: our links, entities we escaped, inline code.
_UNSPLITTABLE = re.compile(r"<[^<>\n]*>|&(?:amp|lt|gt);|`[^`\n]+`")
_SENTENCE_END = re.compile(r"[。！？]|[.!?](?= )")
_HEADING_LINE = re.compile(r"\*[^*\n]+\*")

# Where to end a piece, best first: (kind of boundary, may it fall in the first third?).
# Breaking outside code early beats splitting a code fence or a sentence; a short piece costs
# one more block, a split fence costs readability.
_PARAGRAPH, _LINE, _CODE_LINE, _SENTENCE = "paragraph", "line", "code line", "sentence"
_CUT_PREFERENCE = (
    (_PARAGRAPH, False),
    (_LINE, False),
    (_PARAGRAPH, True),
    (_LINE, True),
    (_CODE_LINE, False),
    (_SENTENCE, False),
)

_Span = tuple[int, int]


@dataclass(frozen=True)
class _Cut:
    at: int  # the current piece ends here
    resume: int  # the next piece starts here
    fence_prefix: str | None = None  # cut inside a fence: close it here, reopen it after
    carry: str = ""  # blockquote prefix to repeat when a quoted line is cut in the middle


def split_mrkdwn(text: str, limit: int = SECTION_TEXT_LIMIT) -> list[str]:
    """Split mrkdwn into pieces of at most `limit` Slack characters, each valid on its own.

    Preference: paragraph break, line break, line break inside a code fence, sentence end, and
    only then a hard cut. A cut is taken only in the last two thirds of the window, so pieces do
    not come out tiny just because an early paragraph break was available.
    """
    pieces: list[str] = []
    rest = text.strip("\n")
    while rest:
        if slack_len(rest) <= limit:
            pieces.append(rest)
            break
        cut = _choose_cut(rest, fit(rest, limit - FENCE_RESERVE))
        head = rest[: cut.at].rstrip()
        if cut.fence_prefix is None:
            rest = cut.carry + rest[cut.resume :].lstrip("\n")
        else:
            head += f"\n{cut.fence_prefix}{FENCE}"
            rest = f"{cut.fence_prefix}{FENCE}\n{rest[cut.resume :]}"
        if head.strip():
            pieces.append(head)
    return pieces


def keep_end(text: str, limit: int) -> str:
    """The end of `text` in at most `limit` characters, after "…" (and a fence reopen)."""
    budget = limit - FENCE_RESERVE
    start = len(text) - fit(text[::-1], budget)
    newline = text.find("\n", start, start + budget // 4)
    if newline != -1:
        start = newline + 1  # start on a whole line: no half emphasis or list marker
    else:
        span = _span_around(start, [m.span() for m in _UNSPLITTABLE.finditer(text)])
        if span:
            start = span[1]
        while start < len(text) and joins_previous(text[start]):
            start += 1
    line = fences.line_at(fences.lines(text), start)
    if line.is_fence:
        start, fence = min(line.end + 1, len(text)), line.fence_after
    else:
        fence = line.fence_before
    if fence is None:
        return ELLIPSIS + text[start:].lstrip(" ")
    return f"{ELLIPSIS}\n{fence}{FENCE}\n{text[start:]}"


def _choose_cut(text: str, window: int) -> _Cut:
    """Pick where to end a piece of at most `window` characters of `text`."""
    lines = fences.lines(text, until=window)
    candidates: dict[str, list[_Cut]] = {kind: [] for kind, _ in _CUT_PREFERENCE}

    for line, following in itertools.pairwise(lines):
        if line.end > window:
            break
        if line.end == 0:
            continue
        if line.fence_after is None:
            if _HEADING_LINE.fullmatch(text[line.start : line.end]):
                continue  # a heading stays with what it heads
            blank = text.startswith("\n\n", line.end)
            candidates[_PARAGRAPH if blank else _LINE].append(_Cut(line.end, line.end + 1))
        elif not line.is_fence and not following.is_fence:
            cut = _Cut(line.end, line.end + 1, fence_prefix=line.fence_after)
            candidates[_CODE_LINE].append(cut)

    unsplittable = [m.span() for m in _UNSPLITTABLE.finditer(text, 0, window + 256)]
    for line in lines:
        if line.start >= window:
            break
        if line.fence_after is not None or line.is_fence:
            continue
        for match in _SENTENCE_END.finditer(text, line.start, min(line.end, window)):
            if not _span_around(match.end(), unsplittable):
                candidates[_SENTENCE].append(_cut_in_line(text, line, match.end()))

    earliest = window // 3
    for kind, early_ok in _CUT_PREFERENCE:
        acceptable = [cut for cut in candidates[kind] if early_ok or cut.at >= earliest]
        if acceptable:
            return acceptable[-1]
    return _hard_cut(text, window, lines, unsplittable)


def _hard_cut(text: str, window: int, lines: list[Line], unsplittable: list[_Span]) -> _Cut:
    at = window
    span = _span_around(at, unsplittable)
    if span:
        at = span[0]
    while at > 0 and joins_previous(text[at]):
        at -= 1
    if at < window // 3:
        at = window  # one unsplittable run longer than a whole piece: cut it anyway
    line = fences.line_at(lines, at)
    if line.is_fence:  # never cut a ``` line; end the piece before or after it
        at = line.start if line.fence_before is None else line.end
        return _Cut(at, at)
    if line.fence_before is not None:
        return _Cut(at, at, fence_prefix=line.fence_before)
    # Outside code, a space between words beats a cut mid-word (Japanese has none to offer).
    space = text.rfind(" ", max(line.start, window // 3), at + 1)
    if space > 0 and not _span_around(space, unsplittable):
        at = space
    return _cut_in_line(text, line, at)


def _cut_in_line(text: str, line: Line, at: int) -> _Cut:
    """A cut in the middle of a line outside code: the next piece starts after the spaces and
    repeats the line's blockquote prefix, so a quoted line stays quoted."""
    resume = at
    while resume < line.end and text[resume] == " ":
        resume += 1
    quote = re.match(r"(?:> ?)+", text[line.start : line.end])
    return _Cut(at, resume, carry=quote.group() if quote else "")


def _span_around(position: int, spans: list[_Span]) -> _Span | None:
    """The span that `position` falls strictly inside, if any (spans do not overlap)."""
    return next(((start, end) for start, end in spans if start < position < end), None)
