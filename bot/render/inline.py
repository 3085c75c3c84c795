"""Markdown inline content (emphasis, code spans, links) -> Slack mrkdwn.

Slack only sees `*bold*` at word boundaries, and Japanese has no spaces between words; a
zero-width space on the outer side of a marker gives Slack the boundary it needs. In ASCII, on
the other hand, `2*3*4` or `a**b**c` is arithmetic or an identifier, and stays literal.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from markdown_it.tree import SyntaxTreeNode

from bot.render.text import ZWSP, escape_mrkdwn, slack_url

_CITATION_LABEL = re.compile(r"\d+(?:\s*,\s*\d+)*")
# Bare URLs get linked by us because we send text with `verbatim: true` (see `blocks`). ASCII
# only, and no brackets, so `https://x.example/a[1]` keeps its citation marker.
_BARE_URL = re.compile(r"https?://[A-Za-z0-9\-._~:/?#@!$&'()*+,;=%]+")


@dataclass(eq=False)
class _Marker:
    """An emphasis or code delimiter whose final spelling depends on its neighbours."""

    slack: str  # what Slack reads: "*", "_", "~" or "`"
    source: str  # what the model wrote, used when the emphasis has to stay literal
    opening: bool
    arithmetic_guard: bool = False  # `*` emphasis may be arithmetic: see _inside_ascii_word
    partner: _Marker | None = None


_Piece = str | _Marker


def inline(node: SyntaxTreeNode, *, emphasis: bool = True) -> str:
    """mrkdwn for an `inline` node; `emphasis=False` drops the markers (for headings)."""
    return _join_pieces(_pieces(node.children, emphasis=emphasis))


def plain(node: SyntaxTreeNode) -> str:
    """Text of an inline subtree without any markup, on one line (link labels, table cells)."""
    if node.type in ("text", "code_inline"):
        return node.content
    if node.type in ("softbreak", "hardbreak"):
        return " "
    return "".join(plain(child) for child in node.children)


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
            out.append(_link(str(node.attrs.get("href", "")), plain(node)))
        elif kind == "image":
            out.append(_link(str(node.attrs.get("src", "")), plain(node)))
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
    url = slack_url(href)
    if url is None:
        return escape_mrkdwn(label)
    if not label or label in (href, href.removeprefix("mailto:")):
        return f"<{url}>"
    return f"<{url}|{escape_mrkdwn(label)}>"


def _linkify(text: str) -> str:
    """Escape text and wrap bare http(s) URLs in `<...>`, leaving trailing punctuation out."""
    out: list[str] = []
    start = 0
    for match in _BARE_URL.finditer(text):
        url = match.group().rstrip(".,:;!?'\"")
        while url.endswith(")") and url.count(")") > url.count("("):
            url = url[:-1]
        end = match.start() + len(url)
        out += [escape_mrkdwn(text[start : match.start()]), f"<{slack_url(url)}>"]
        start = end
    out.append(escape_mrkdwn(text[start:]))
    return "".join(out)
