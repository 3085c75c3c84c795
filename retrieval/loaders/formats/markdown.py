"""Markdown: front matter gives the title and url; HTML comments are not text.

A translated book keeps the original text in `<!-- ... -->` next to the translation: indexing it
would answer from the original. markdown-it-py finds the comments (HTML blocks, and inline HTML
inside paragraphs and headings), so a comment shown inside a code block or code span stays.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import yaml
from markdown_it.token import Token

from retrieval.loaders.formats.base import Format, Parsed, RawFile
from retrieval.loaders.headings import markdown_block_parser, markdown_parser, title_heading

logger = logging.getLogger(__name__)

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)?(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# In a paragraph: a code span (kept as is) or a comment (dropped), whichever starts first, as
# CommonMark reads them left to right.
_CODE_SPAN_OR_COMMENT = re.compile(
    r"(?P<code>(?<!`)(?P<ticks>`+)(?!`).*?(?<!`)(?P=ticks)(?!`))|<!--.*?-->", re.DOTALL
)


def parse(raw: RawFile) -> Parsed:
    """Title, text without front matter or comments, url. Front matter `title:` wins over the
    first heading of the highest level."""
    meta: dict[str, Any] = {}
    text = raw.text
    match = _FRONT_MATTER.match(text)
    if match:
        try:
            loaded = yaml.safe_load(match.group(1) or "")
        except yaml.YAMLError as error:
            logger.debug("front matter is not YAML, keeping it as text: %s", error)
        else:
            if isinstance(loaded, dict):
                meta = loaded
                text = text[match.end() :]
    title = meta.get("title")
    url = meta.get("url")
    tokens = markdown_block_parser().parse(text)
    return Parsed(
        title=str(title) if title else title_heading(tokens),
        text=without_comments(text, tokens),
        url=str(url) if url else None,
    )


def without_comments(text: str, tokens: list[Token]) -> str:
    """`text` without its HTML comments (`tokens`: its block structure); lines that held
    nothing else go too."""
    if "<!--" not in text:
        return text
    lines = text.split("\n")
    changed: dict[int, str] = {}  # first line of a block -> its new text
    spans: dict[int, int] = {}  # first line -> end line (exclusive) of the blocks rewritten
    for token in tokens:
        if not token.map or "<!--" not in token.content:
            continue
        start, end = token.map
        block = "\n".join(lines[start:end])
        if token.type == "html_block":
            changed[start] = _COMMENT.sub("", block)
        elif token.type == "inline" and _has_inline_comment(token.content):
            changed[start] = _CODE_SPAN_OR_COMMENT.sub(lambda m: m.group("code") or "", block)
        else:
            continue  # code blocks and fences keep their text
        spans[start] = end
    out: list[str] = []
    i = 0
    while i < len(lines):
        if i in changed:
            out.extend(line.rstrip() for line in changed[i].split("\n") if line.strip())
            i = spans[i]
        else:
            out.append(lines[i])
            i += 1
    return "\n".join(out)


def _has_inline_comment(source: str) -> bool:
    inline = markdown_parser().parseInline(source)
    return any(
        token.type == "html_inline" and token.content.startswith("<!--")
        for token in (inline[0].children or []) if inline
    )


FORMAT = Format(kind="markdown", suffixes=(".md", ".markdown"), parse=parse, headings=True)
