"""Text as Slack sees it: its three control characters, its URLs, and its way of counting.

Shared by the Markdown conversion, the splitter and the blocks, so that all three escape and
measure the same way.
"""

from __future__ import annotations

import time
import unicodedata
from urllib.parse import urlsplit

ZWSP = "\u200b"
ELLIPSIS = "…"
_LINK_SCHEMES = frozenset({"http", "https", "mailto"})


def escape_mrkdwn(text: str) -> str:
    """Slack's three control characters, so `<!channel>`, `<@U123>` or `<url|label>` written by
    the model or quoted from a document stay text. Character by character, so escaping the
    pieces of a text one at a time gives the same result as escaping it whole."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_date(epoch: float, tokens: str = "{time}", fallback: str = "%H:%M:%S") -> str:
    """A time as Slack's date token: each reader sees it in their own time zone (a team in
    Tokyo and a server in UTC). `fallback` (strftime, the server's zone) is what clients that
    cannot format it show."""
    return f"<!date^{int(epoch)}^{tokens}|{time.strftime(fallback, time.localtime(epoch))}>"


def slack_url(href: str) -> str | None:
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


def single_line(text: str) -> str:
    return " ".join(text.split())


def slack_len(text: str) -> int:
    """Length as Slack counts it (UTF-16 code units), which is never less than `len`."""
    return len(text.encode("utf-16-le")) // 2


def fit(text: str, budget: int) -> int:
    """The longest prefix length of `text` within `budget` Slack characters."""
    used = 0
    for index, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > budget:
            return index
    return len(text)


def truncate_plain(text: str, limit: int) -> str:
    """`text` in at most `limit` Slack characters, ending in "…" when something was cut."""
    if slack_len(text) <= limit:
        return text
    return text[: fit(text, limit - 1)] + ELLIPSIS


def joins_previous(char: str) -> bool:
    """Combining marks, joiners and variation selectors belong to the character before them."""
    return (
        bool(unicodedata.combining(char))
        or char in "\u200d\u200c\ufe0e\ufe0f"
        or "\U000e0100" <= char <= "\U000e01ef"
    )
