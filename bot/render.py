"""Turn an `Answer` into Slack messages.

Three things make this more than string formatting:

* The model writes CommonMark; Slack reads *mrkdwn*, which disagrees on emphasis, links, headings
  and tables, and treats `<...>` as control sequences. We parse with markdown-it-py (token stream,
  so code spans, fences and tables are found the way a Markdown reader would find them) and
  escape every `&`, `<`, `>` we did not write ourselves, so neither the model nor a quoted document
  can post `<!channel>`, `<@U123>` or `<!here>`.
* Slack only sees `*bold*` at word boundaries, and Japanese has no spaces between words; a
  zero-width space on the outer side of a marker gives Slack the boundary it needs.
* Block Kit has hard limits (below). Long answers are split at paragraph, line and sentence
  boundaries; a split inside a code fence closes and reopens the fence, and never falls inside a
  `<url|text>` link, an `&amp;` entity or a surrogate pair.
"""

from __future__ import annotations

import functools
import itertools
import re
import string
import unicodedata
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

from retrieval.types import Answer, Citation

# --- Slack limits (https://docs.slack.dev/reference/block-kit) ---
SECTION_TEXT_LIMIT = 3_000  # characters in a section block's text object
MAX_BLOCKS_PER_MESSAGE = 50
MAX_BODY_BLOCKS_PER_MESSAGE = 45  # leaves room for the notice, sources and buttons
MESSAGE_TEXT_LIMIT = 40_000  # Slack truncates the top-level `text` beyond this
MAX_CONTEXT_ELEMENTS = 10
BUTTON_TEXT_LIMIT = 75
# We send mrkdwn `section` blocks, not `markdown` blocks: we have to escape and split the text
# ourselves anyway, and `markdown` blocks share this cap across the whole payload.
MARKDOWN_BLOCK_LIMIT = 12_000

PROGRESS_TEXT_LIMIT = SECTION_TEXT_LIMIT
SNIPPET_CHARS = 300  # a retrieval-only snippet is a teaser, not the passage
TITLE_CHARS = 200  # per source title or heading, so one odd document cannot fill a section

FEEDBACK_BLOCK_ID = "kotae_feedback"
FEEDBACK_UP_ACTION_ID = "kotae_feedback_up"
FEEDBACK_DOWN_ACTION_ID = "kotae_feedback_down"

Block = dict[str, Any]

ZWSP = "\u200b"
ELLIPSIS = "…"
FENCE = "```"
_INDENT = "    "
_HR = "─" * 10
_LINK_SCHEMES = frozenset({"http", "https", "mailto"})
_FENCE_RESERVE = 32  # room for closing a fence at the end of a chunk ("\n" + quote prefix + ```)

# A whole fence line as we emit it: optional blockquote prefix, then ``` and nothing else.
_FENCE_LINE = re.compile(r"^((?:> ?)*)```$")
# Spans a cut must not fall inside: our links, entities we escaped, inline code.
_UNSPLITTABLE = re.compile(r"<[^<>\n]*>|&(?:amp|lt|gt);|`[^`\n]+`")
_SENTENCE_END = re.compile(r"[。！？]|[.!?](?= )")
_CITATION_LABEL = re.compile(r"\d+(?:\s*,\s*\d+)*")
# Bare URLs get linked by us because we send text with `verbatim: true` (see `_mrkdwn`). ASCII
# only, and no brackets, so `https://x.example/a[1]` keeps its citation marker.
_BARE_URL = re.compile(r"https?://[A-Za-z0-9\-._~:/?#@!$&'()*+,;=%]+")


@dataclass(frozen=True)
class SlackMessage:
    """One `chat.postMessage` worth of content: fallback `text` plus Block Kit `blocks`.

    `trailer` is the part of `blocks` that is not the answer text (notice, sources, feedback
    buttons): what a reply streamed as raw text still needs when its stream is stopped.
    """

    text: str
    blocks: list[Block]
    trailer: list[Block] = field(default_factory=list)


# --- public API ---


def markdown_to_mrkdwn(markdown: str) -> str:
    """Convert model-written Markdown to Slack mrkdwn that is safe to post."""
    tree = SyntaxTreeNode(_parser().parse(markdown))
    return _join_blocks(tree.children, "\n\n")


def render_answer(answer: Answer, *, feedback: bool = True) -> list[SlackMessage]:
    """Render an answer as one message, or several when Slack's block limits demand it.

    The feedback buttons go in the last message so they sit under the whole answer.
    """
    head: list[Block] = []
    if answer.notice:
        head.append(_context(f":warning: {escape_mrkdwn(_single_line(answer.notice))}"))

    body = [_section(text) for text in split_mrkdwn(markdown_to_mrkdwn(answer.text))]

    tail: list[Block] = []
    full_answer = answer.kind in ("answer", "retrieval_only")
    if full_answer and answer.citations:
        with_snippets = answer.kind == "retrieval_only"
        tail.append({"type": "divider"})
        sources = _sources_mrkdwn(answer.citations, with_snippets=with_snippets)
        tail.extend(_section(text) for text in split_mrkdwn(sources))
    if feedback and full_answer:
        tail.append(_feedback_actions(answer.answer_id))

    body_texts = {id(block): block["text"]["text"] for block in body}
    return [_message(blocks, body_texts) for blocks in _pack(head, body, tail)]


def render_progress(partial_markdown: str) -> str:
    """Text for the message being edited while an answer streams in.

    The partial text is made well-formed first (an open `**` is closed, a trailing half marker
    dropped; markdown-it closes an open fence), and when it is too long its *end* is kept,
    because that is what the reader is waiting for.
    """
    text = markdown_to_mrkdwn(_close_open_emphasis(partial_markdown))
    if not text:
        return ELLIPSIS
    if _slack_len(text) <= PROGRESS_TEXT_LIMIT:
        return text
    return _keep_end(text, PROGRESS_TEXT_LIMIT)


def render_apology(reason: str) -> SlackMessage:
    """A short apology, wherever it goes (thread, response URL): the bot must never go silent
    on a failure. `reason` is shown as plain text."""
    text = f":warning: Sorry — I couldn't answer that: {escape_mrkdwn(_single_line(reason))}"
    text = _truncate_plain(text, SECTION_TEXT_LIMIT)
    return SlackMessage(text=text, blocks=[_section(text)])


def split_mrkdwn(text: str, limit: int = SECTION_TEXT_LIMIT) -> list[str]:
    """Split mrkdwn into pieces of at most `limit` Slack characters, each valid on its own.

    Preference: paragraph break, line break, line break inside a code fence, sentence end, and
    only then a hard cut. A cut is taken only in the last two thirds of the window, so pieces do
    not come out tiny just because an early paragraph break was available.
    """
    pieces: list[str] = []
    rest = text.strip("\n")
    while rest:
        if _slack_len(rest) <= limit:
            pieces.append(rest)
            break
        cut = _choose_cut(rest, _fit(rest, limit - _FENCE_RESERVE))
        head = rest[: cut.at].rstrip()
        if cut.fence_prefix is None:
            rest = cut.carry + rest[cut.resume :].lstrip("\n")
        else:
            head += f"\n{cut.fence_prefix}{FENCE}"
            rest = f"{cut.fence_prefix}{FENCE}\n{rest[cut.resume :]}"
        if head.strip():
            pieces.append(head)
    return pieces


# --- Markdown -> mrkdwn: blocks ---


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
        return _inline(node.children[0]) if node.children else ""
    if kind == "heading":
        # Slack has no headings; a bold line is the usual stand-in. Emphasis inside is dropped
        # because `*` cannot nest in `*`.
        text = _inline(node.children[0], emphasis=False).strip() if node.children else ""
        return f"*{text}*" if text else ""
    if kind in ("bullet_list", "ordered_list"):
        return "\n".join(_list_item(item) for item in node.children)
    if kind == "blockquote":
        return _prefix_lines(_join_blocks(node.children, "\n"), "> ")
    if kind in ("fence", "code_block"):
        return _fence(node.content)
    if kind == "table":
        return _table(node)
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
    if _FENCE_LINE.match(first.split("\n", 1)[0]):
        # Fence lines stay whole lines, so the splitter and Slack both recognise them.
        lines = [marker.rstrip(), first]
    else:
        lines = [marker + _indent(first, skip_first=True)]
    lines.extend(_indent(part) for part in others)
    return "\n".join(lines)


def _indent(text: str, *, skip_first: bool = False) -> str:
    """Indent nested list content, leaving code fences and their contents flush left."""
    out: list[str] = []
    in_fence = False
    for index, line in enumerate(text.split("\n")):
        is_fence = bool(_FENCE_LINE.match(line))
        keep = in_fence or is_fence or not line or (skip_first and index == 0)
        out.append(line if keep else _INDENT + line)
        if is_fence:
            in_fence = not in_fence
    return "\n".join(out)


def _prefix_lines(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else prefix.rstrip() for line in text.split("\n"))


def _fence(code: str) -> str:
    # The language tag is dropped: Slack would show it as the first line of code.
    body = escape_mrkdwn(code.rstrip("\n"))
    return f"{FENCE}\n{body}\n{FENCE}" if body.strip() else ""


def _table(table: SyntaxTreeNode) -> str:
    """Slack has no tables; a code block with padded columns is the closest readable form."""
    rows: list[list[str]] = []
    aligns: list[str] = []
    for section in table.children:  # thead, tbody
        for row in section.children:
            cells = row.children
            if not aligns:
                aligns = [_cell_align(cell) for cell in cells]
            rows.append([_plain(cell.children[0]) if cell.children else "" for cell in cells])
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


# --- Markdown -> mrkdwn: inline ---


@dataclass(eq=False)
class _Marker:
    """An emphasis or code delimiter whose final spelling depends on its neighbours."""

    slack: str  # what Slack reads: "*", "_", "~" or "`"
    source: str  # what the model wrote, used when the emphasis has to stay literal
    opening: bool
    arithmetic_guard: bool = False  # `*` emphasis may be arithmetic: see _inside_ascii_word
    partner: _Marker | None = None


_Piece = str | _Marker


def _inline(node: SyntaxTreeNode, *, emphasis: bool = True) -> str:
    return _join_pieces(_pieces(node.children, emphasis=emphasis))


def _pieces(nodes: list[SyntaxTreeNode], *, emphasis: bool) -> list[_Piece]:
    out: list[_Piece] = []
    for node in nodes:
        kind = node.type
        if kind == "text":
            out.append(_linkify(node.content))
        elif kind in ("softbreak", "hardbreak"):
            out.append("\n")
        elif kind == "code_inline":
            opening, closing = _marker_pair("`", "`")
            out += [opening, escape_mrkdwn(node.content), closing]
        elif kind in ("em", "strong", "s"):
            inner = _pieces(node.children, emphasis=emphasis)
            if emphasis:
                slack = {"em": "_", "strong": "*", "s": "~"}[kind]
                opening, closing = _marker_pair(slack, node.markup)
                out += [opening, *inner, closing]
            else:
                out += inner
        elif kind == "link":
            out.append(_link(str(node.attrs.get("href", "")), _plain(node)))
        elif kind == "image":
            out.append(_link(str(node.attrs.get("src", "")), _plain(node)))
        elif node.children:
            out += _pieces(node.children, emphasis=emphasis)
        else:
            out.append(escape_mrkdwn(node.content))
    return out


def _marker_pair(slack: str, source: str) -> tuple[_Marker, _Marker]:
    guard = source.startswith("*")
    opening = _Marker(slack, source, opening=True, arithmetic_guard=guard)
    closing = _Marker(slack, source, opening=False, arithmetic_guard=guard, partner=opening)
    opening.partner = closing
    return opening, closing


def _join_pieces(pieces: list[_Piece]) -> str:
    """Spell the markers: literal for `2*3*4`, with a zero-width space where Slack needs one."""
    pieces = [piece for piece in pieces if piece != ""]
    for index, piece in enumerate(pieces):
        if isinstance(piece, _Marker) and piece.opening and piece.arithmetic_guard:
            end = next(i for i in range(index, len(pieces)) if pieces[i] is piece.partner)
            if _inside_ascii_word(pieces, index) or _inside_ascii_word(pieces, end):
                pieces[index] = pieces[end] = piece.source

    out: list[str] = []
    for index, piece in enumerate(pieces):
        if isinstance(piece, str):
            out.append(piece)
        elif piece.opening:
            gap = _needs_boundary(_neighbour(pieces, index, -1))
            out.append(ZWSP + piece.slack if gap else piece.slack)
        else:
            gap = _needs_boundary(_neighbour(pieces, index, +1))
            out.append(piece.slack + ZWSP if gap else piece.slack)
    return "".join(out)


def _neighbour(pieces: list[_Piece], index: int, step: int) -> str | None:
    """The character next to a marker, or None at the edge or when another marker is there."""
    at = index + step
    if not 0 <= at < len(pieces):
        return None
    piece = pieces[at]
    if isinstance(piece, _Marker):
        return None
    return piece[-1] if step < 0 else piece[0]


def _inside_ascii_word(pieces: list[_Piece], index: int) -> bool:
    """`2*3*4`, `a**b**c`: a delimiter with ASCII letters/digits on both sides is not emphasis.

    CommonMark allows intraword `*` emphasis (which Japanese needs: `これは**重要**です`), but in
    ASCII it is almost always arithmetic or an identifier.
    """
    return all(
        char is not None and char.isascii() and char.isalnum()
        for char in (_neighbour(pieces, index, -1), _neighbour(pieces, index, +1))
    )


def _needs_boundary(char: str | None) -> bool:
    # CJK punctuation counts as "no boundary" too: Slack only trusts spaces and ASCII punctuation.
    return char is not None and not char.isspace() and char not in string.punctuation


def _link(href: str, label: str) -> str:
    if _CITATION_LABEL.fullmatch(label):
        return f"[{label}]"  # `[1](...)`: keep the citation marker, not a link
    url = _slack_url(href)
    if url is None:
        return escape_mrkdwn(label)
    if not label or label in (href, href.removeprefix("mailto:")):
        return f"<{url}>"
    return f"<{url}|{escape_mrkdwn(label)}>"


def _slack_url(href: str) -> str | None:
    """A URL safe inside `<...|...>`, or None for schemes we do not link (javascript:, file:)."""
    href = href.strip()
    try:
        scheme = urlsplit(href).scheme.lower()
    except ValueError:
        return None
    if scheme not in _LINK_SCHEMES:
        return None
    for char, encoded in ((" ", "%20"), ("|", "%7C"), ("<", "%3C"), (">", "%3E"), ('"', "%22")):
        href = href.replace(char, encoded)
    return href.replace("&", "&amp;")


def _linkify(text: str) -> str:
    """Escape text and wrap bare http(s) URLs in `<...>`, leaving trailing punctuation out."""
    out: list[str] = []
    start = 0
    for match in _BARE_URL.finditer(text):
        url = match.group().rstrip(".,:;!?'\"")
        while url.endswith(")") and url.count(")") > url.count("("):
            url = url[:-1]
        end = match.start() + len(url)
        out += [escape_mrkdwn(text[start : match.start()]), f"<{_slack_url(url)}>"]
        start = end
    out.append(escape_mrkdwn(text[start:]))
    return "".join(out)


def _plain(node: SyntaxTreeNode) -> str:
    """Text of an inline subtree without any markup, on one line (link labels, table cells)."""
    if node.type in ("text", "code_inline"):
        return node.content
    if node.type in ("softbreak", "hardbreak"):
        return " "
    return "".join(_plain(child) for child in node.children)


def escape_mrkdwn(text: str) -> str:
    """Slack's three control characters, so `<!channel>`, `<@U123>` or `<url|label>` written by
    the model or quoted from a document stay text. Character by character, so escaping the
    pieces of a text one at a time gives the same result as escaping it whole."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _single_line(text: str) -> str:
    return " ".join(text.split())


# --- splitting ---


class _Line(NamedTuple):
    start: int
    end: int  # index of the "\n" ending the line, or len(text)
    is_fence: bool
    fence_before: str | None  # blockquote prefix of the fence open before this line, if any
    fence_after: str | None  # ... and after it


@dataclass(frozen=True)
class _Cut:
    at: int  # the current piece ends here
    resume: int  # the next piece starts here
    fence_prefix: str | None = None  # cut inside a fence: close it here, reopen it after
    carry: str = ""  # blockquote prefix to repeat when a quoted line is cut in the middle


def _lines(text: str, until: int | None = None) -> list[_Line]:
    """Lines with their code-fence state, up to the line after position `until`."""
    lines: list[_Line] = []
    fence: str | None = None
    start = 0
    stop = len(text) if until is None else min(len(text), until)
    while start <= len(text) and (not lines or lines[-1].start <= stop):
        end = text.find("\n", start)
        end = len(text) if end == -1 else end
        match = _FENCE_LINE.match(text[start:end])
        before = fence
        if match:
            fence = None if fence is not None else match.group(1)[: _FENCE_RESERVE - 8]
        lines.append(_Line(start, end, bool(match), before, fence))
        start = end + 1
    return lines


def _line_at(lines: list[_Line], position: int) -> _Line:
    return next(line for line in lines if line.start <= position <= line.end)


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
_HEADING_LINE = re.compile(r"\*[^*\n]+\*")


def _choose_cut(text: str, window: int) -> _Cut:
    """Pick where to end a piece of at most `window` characters of `text`."""
    lines = _lines(text, until=window)
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
            at = match.end()
            if not _inside(at, unsplittable):
                resume = at
                while resume < line.end and text[resume] == " ":
                    resume += 1
                carry = _quote_prefix(text[line.start : line.end])
                candidates[_SENTENCE].append(_Cut(at, resume, carry=carry))

    earliest = window // 3
    for kind, early_ok in _CUT_PREFERENCE:
        acceptable = [cut for cut in candidates[kind] if early_ok or cut.at >= earliest]
        if acceptable:
            return acceptable[-1]
    return _hard_cut(text, window, lines, unsplittable)


def _hard_cut(
    text: str, window: int, lines: list[_Line], unsplittable: list[tuple[int, int]]
) -> _Cut:
    at = window
    for start, end in unsplittable:
        if start < at < end:
            at = start
    while at > 0 and _joins_previous(text[at]):
        at -= 1
    if at < window // 3:
        at = window  # one unsplittable run longer than a whole piece: cut it anyway
    line = _line_at(lines, at)
    if line.is_fence:  # never cut a ``` line; end the piece before or after it
        at = line.start if line.fence_before is None else line.end
        return _Cut(at, at)
    if line.fence_before is not None:
        return _Cut(at, at, fence_prefix=line.fence_before)
    # Outside code, a space between words beats a cut mid-word (Japanese has none to offer).
    space = text.rfind(" ", max(line.start, window // 3), at + 1)
    if space > 0 and not _inside(space, unsplittable):
        at = space
    resume = at
    while resume < line.end and text[resume] == " ":
        resume += 1
    return _Cut(at, resume, carry=_quote_prefix(text[line.start : line.end]))


def _quote_prefix(line: str) -> str:
    match = re.match(r"(?:> ?)+", line)
    return match.group() if match else ""


def _inside(position: int, spans: list[tuple[int, int]]) -> bool:
    return any(start < position < end for start, end in spans)


def _joins_previous(char: str) -> bool:
    """Combining marks, joiners and variation selectors belong to the character before them."""
    return (
        bool(unicodedata.combining(char))
        or char in "\u200d\u200c\ufe0e\ufe0f"
        or "\U000e0100" <= char <= "\U000e01ef"
    )


def _slack_len(text: str) -> int:
    """Length as Slack counts it (UTF-16 code units), which is never less than `len`."""
    return len(text.encode("utf-16-le")) // 2


def _fit(text: str, budget: int) -> int:
    """The longest prefix length of `text` within `budget` Slack characters."""
    used = 0
    for index, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > budget:
            return index
    return len(text)


def _keep_end(text: str, limit: int) -> str:
    """The end of `text` in at most `limit` characters, after "…" (and a fence reopen)."""
    budget = limit - _FENCE_RESERVE
    start = len(text) - _fit(text[::-1], budget)
    newline = text.find("\n", start, start + budget // 4)
    if newline != -1:
        start = newline + 1  # start on a whole line: no half emphasis or list marker
    else:
        for span_start, span_end in (m.span() for m in _UNSPLITTABLE.finditer(text)):
            if span_start < start < span_end:
                start = span_end
        while start < len(text) and _joins_previous(text[start]):
            start += 1
    line = _line_at(_lines(text), start)
    if line.is_fence:
        start, fence = min(line.end + 1, len(text)), line.fence_after
    else:
        fence = line.fence_before
    if fence is None:
        return ELLIPSIS + text[start:].lstrip(" ")
    return f"{ELLIPSIS}\n{fence}{FENCE}\n{text[start:]}"


def _truncate_plain(text: str, limit: int) -> str:
    if _slack_len(text) <= limit:
        return text
    return text[: _fit(text, limit - 1)] + ELLIPSIS


# --- partial (streaming) Markdown ---


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


# --- blocks ---


def _mrkdwn(text: str) -> Block:
    # verbatim: Slack must not auto-parse "@channel" or channel names in text we did not write.
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _section(text: str) -> Block:
    return {"type": "section", "text": _mrkdwn(text)}


def _context(*texts: str) -> Block:
    elements = [_mrkdwn(_truncate_plain(text, SECTION_TEXT_LIMIT)) for text in texts]
    return {"type": "context", "elements": elements[:MAX_CONTEXT_ELEMENTS]}


def _button(action_id: str, label: str, value: str, accessibility_label: str) -> Block:
    return {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label[:BUTTON_TEXT_LIMIT], "emoji": True},
        "value": value,
        "accessibility_label": accessibility_label[:BUTTON_TEXT_LIMIT],
    }


def _feedback_actions(answer_id: str) -> Block:
    return {
        "type": "actions",
        "block_id": FEEDBACK_BLOCK_ID,
        "elements": [
            _button(FEEDBACK_UP_ACTION_ID, "👍", answer_id, "This answer was helpful"),
            _button(FEEDBACK_DOWN_ACTION_ID, "👎", answer_id, "This answer was not helpful"),
        ],
    }


def _sources_mrkdwn(citations: list[Citation], *, with_snippets: bool) -> str:
    # When the model cited nothing, these are just the top passages: say so.
    heading = "*Sources*" if any(c.cited for c in citations) else "*Related sources*"
    lines = [heading]
    for citation in sorted(citations, key=lambda c: c.number):
        lines.append(_citation_line(citation))
        snippet = _single_line(citation.snippet)
        if with_snippets and snippet:
            # A snippet is document text: escaped, and no ``` that would open a code block.
            quoted = escape_mrkdwn(_truncate_plain(snippet, SNIPPET_CHARS)).replace(
                FENCE, "`\u200b``")
            lines.append(f"> {quoted}")
    return "\n".join(lines)


def _citation_line(citation: Citation) -> str:
    short = _short_source(citation.source)
    title = escape_mrkdwn(_label(citation.title) or short or "untitled")
    trail = "".join(f" › {escape_mrkdwn(h)}" for h in map(_label, citation.heading_path) if h)
    url = _slack_url(citation.url or "") or _slack_url(citation.source)
    if url:
        return f"[{citation.number}] <{url}|{title}>{trail}"
    path = f" · `{escape_mrkdwn(short.replace('`', ''))}`" if short and short != title else ""
    return f"[{citation.number}] *{title}*{trail}{path}"


def _label(text: str) -> str:
    return _truncate_plain(_single_line(text), TITLE_CHARS)


def _short_source(source: str) -> str:
    """`/srv/docs/handbook/expense.md` -> `handbook/expense.md`: enough to recognise the file."""
    parts = [part for part in PurePosixPath(source.strip().replace("\\", "/")).parts if part != "/"]
    return "/".join(parts[-2:])


def _pack(head: list[Block], body: list[Block], tail: list[Block]) -> list[list[Block]]:
    """Distribute blocks over messages: at most MAX_BODY_BLOCKS_PER_MESSAGE body blocks each,
    the notice first, and sources plus buttons after the last body block when they fit."""
    messages: list[list[Block]] = []
    current = list(head)
    for index in range(0, len(body), MAX_BODY_BLOCKS_PER_MESSAGE):
        if index:
            messages.append(current)
            current = []
        current.extend(body[index : index + MAX_BODY_BLOCKS_PER_MESSAGE])
    if len(current) + len(tail) > MAX_BLOCKS_PER_MESSAGE:
        messages.append(current)
        current = []
    for index in range(0, len(tail), MAX_BLOCKS_PER_MESSAGE):
        if index:
            messages.append(current)
            current = []
        current.extend(tail[index : index + MAX_BLOCKS_PER_MESSAGE])
    messages.append(current)
    return [blocks for blocks in messages if blocks] or [[]]


def _message(blocks: list[Block], body_texts: dict[int, str]) -> SlackMessage:
    """Fallback text (notifications, screen readers): the part of the answer this message holds;
    for a message holding only sources, the sources."""
    texts = [body_texts[id(b)] for b in blocks if id(b) in body_texts]
    texts = texts or [b["text"]["text"] for b in blocks if b["type"] == "section"]
    texts = texts or [e["text"] for b in blocks if b["type"] == "context" for e in b["elements"]]
    text = "\n\n".join(texts) or ELLIPSIS
    if _slack_len(text) > MESSAGE_TEXT_LIMIT:
        text = split_mrkdwn(text, MESSAGE_TEXT_LIMIT - 1)[0] + ELLIPSIS
    trailer = [block for block in blocks if id(block) not in body_texts]
    return SlackMessage(text=text, blocks=blocks, trailer=trailer)
