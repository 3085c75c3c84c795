"""Headings as a reader sees them: the plain text of a Markdown heading, for titles and heading
paths that end up in citations.

Docs generators (VitePress, MkDocs, Pandoc) let a heading carry an attribute block such as
`{#reactive}` or `{.badge}`; Markdown inline syntax (code spans, emphasis, links, images, HTML
tags, backslash escapes) is markup, not words. markdown-it-py parses the inline syntax; only the
attribute blocks, which CommonMark does not know, are removed by pattern, and only from text
(never from a code span).
"""

from __future__ import annotations

import functools
import itertools
import re

from markdown_it import MarkdownIt
from markdown_it.token import Token

# `{#id}`, `{.class}`, `{#id .class key=value}`: Pandoc / markdown-it-attrs syntax.
_ATTRIBUTE_BLOCK = re.compile(r"\s*\{\s*[#.][^\s{}][^{}]*\}")
# "## Heading ##": the closing sequence is decoration (CommonMark needs a space before it).
_CLOSING_HASHES = re.compile(r"(?:^|\s+)#+\s*$")
# Emphasis markers left over at the end, unmatched: "`reactive()` **".
_TRAILING_MARKERS = re.compile(r"(?:\s+[*_]+|\*{2,})$")


@functools.cache
def markdown_parser() -> MarkdownIt:
    """CommonMark plus the GFM tables and strikethrough that docs use; built once, it holds
    no per-document state."""
    return MarkdownIt("commonmark").enable(["table", "strikethrough"])


@functools.cache
def markdown_block_parser() -> MarkdownIt:
    """Block structure only (headings, fences, HTML blocks): inline tokens keep their source in
    `content` without being parsed, which is most of the cost on a large file."""
    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).disable("inline")


@functools.lru_cache(maxsize=4096)  # chunking asks again for every section below a heading
def plain_heading(raw: str) -> str:
    """The words of a heading's source text: "`reactive()` \\*\\* {#reactive}" -> "reactive()"."""
    source = _CLOSING_HASHES.sub("", raw.strip())
    inline = markdown_parser().parseInline(source)
    words: list[str] = []
    last_is_text = False
    for token in (inline[0].children or []) if inline else []:
        if token.type == "text":
            words.append(_ATTRIBUTE_BLOCK.sub("", token.content))
        elif token.type == "code_inline":
            words.append(token.content)
        elif token.type in ("softbreak", "hardbreak"):
            words.append(" ")
        else:  # images, inline HTML, the open/close tokens of emphasis and links: no words
            continue
        last_is_text = token.type == "text"
    if last_is_text:  # stray markers in a code span are code
        words[-1] = _TRAILING_MARKERS.sub("", words[-1].rstrip())
    return " ".join("".join(words).split())


def title_heading(tokens: list[Token]) -> str | None:
    """The first heading of the highest level present, from `markdown_block_parser()` tokens:
    a file that starts at `##` (a chapter of a book, say) is titled by its first `##`, not by
    its file name. Headings with no words (`# ![logo](x.png)`) do not count."""
    headings = [
        (int(opening.tag[1:]), inline.content)
        for opening, inline in itertools.pairwise(tokens)
        if opening.type == "heading_open"
    ]
    for level in sorted({level for level, _source in headings}):
        for words in (plain_heading(source) for lvl, source in headings if lvl == level):
            if words:
                return words
    return None
