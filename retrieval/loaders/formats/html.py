"""HTML: converted to Markdown-like text with `#` headings, so chunking splits it like Markdown.

Hand-written rather than markdownify's: the heading lines and paragraph breaks are what chunking
needs, and inline markup (`**bold**`, `[text](url)`) would only be noise in the indexed text.
"""

from __future__ import annotations

import re

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import PreformattedString

from retrieval.loaders.formats.base import Format, Parsed, RawFile

# Not text a reader would ask about: code, embedded media, and navigation menus.
_DROP = ("script", "style", "noscript", "template", "svg", "iframe", "canvas", "head", "nav")
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "details", "dd", "div", "dl", "dt",
        "fieldset", "figcaption", "figure", "footer", "form", "header", "hr", "main", "ol", "p",
        "section", "summary", "table", "tbody", "thead", "tfoot", "tr", "ul",
    }
)  # fmt: skip
# Inside these, whitespace between children is layout, not text (it would split list items).
_CONTAINERS = frozenset({"ul", "ol", "dl", "table", "thead", "tbody", "tfoot", "tr"})


def parse(raw: RawFile) -> Parsed:
    """Title (<title>, else the first heading of the highest level), text, canonical url.

    Headings become `#` lines; blocks become paragraphs; <pre> becomes a fenced block so a `#`
    inside code is not taken for a heading.
    """
    soup = BeautifulSoup(raw.text, "lxml")
    title = _clean(soup.title.get_text()) if soup.title else None
    if not title:
        title = _first_top_heading(soup)

    url: str | None = None
    canonical = soup.find("link", rel="canonical")
    og_url = soup.find("meta", attrs={"property": "og:url"})
    if isinstance(canonical, Tag) and canonical.get("href"):
        url = str(canonical["href"])
    elif isinstance(og_url, Tag) and og_url.get("content"):
        url = str(og_url["content"])

    for tag in soup.find_all(_DROP):
        tag.decompose()
    parts: list[str] = []
    _to_markdown(soup.body or soup, parts)
    lines = [line.strip() for line in "".join(parts).split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return Parsed(title=title, text=text, url=url)


def _first_top_heading(soup: BeautifulSoup) -> str | None:
    for name in _HEADINGS:  # h1 first
        for heading in soup.find_all(name):
            text = _clean(heading.get_text(" "))
            if text:
                return text
    return None


def _to_markdown(node: Tag, out: list[str]) -> None:
    for child in node.children:
        if isinstance(child, PreformattedString):  # comments, doctype, CDATA
            continue
        if isinstance(child, NavigableString):
            if node.name in _CONTAINERS and not child.strip():
                continue
            out.append(re.sub(r"\s+", " ", str(child)))
        elif isinstance(child, Tag):
            name = child.name
            if name in _HEADINGS:
                heading = _clean(child.get_text(" "))
                if heading:
                    out.append(f"\n\n{'#' * _HEADINGS[name]} {heading}\n\n")
            elif name == "br":
                out.append("\n")
            elif name == "pre":
                code = child.get_text().strip("\n")
                out.append(f"\n\n```\n{code}\n```\n\n")
            elif name == "li":
                out.append("\n- ")
                _to_markdown(child, out)
            elif name in ("td", "th"):
                _to_markdown(child, out)
                out.append(" | ")
            elif name in _BLOCKS:
                out.append("\n\n")
                _to_markdown(child, out)
                out.append("\n\n")
            else:
                _to_markdown(child, out)


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


FORMAT = Format(kind="html", suffixes=(".html", ".htm"), parse=parse, headings=True)
