"""Turn the model's [n] markers into citations: keep the valid ones, drop invented ones, and
renumber by first appearance so the answer reads [1], [2], … in order.

Code is left exactly as written: `items[0]` or `a[1] = b[3]` in a fenced block is an index,
not a citation, and rewriting it would corrupt the code the user copies.
"""

from __future__ import annotations

import functools
import re

from markdown_it import MarkdownIt

from retrieval.context import PackedSource
from retrieval.types import Citation, SearchHit

# [1]  [1, 2]  [1,2,3]  ［1］  [1、2]
MARKER = re.compile(r"([ \t]?)[\[［]\s*(\d{1,3}(?:\s*[,、，]\s*\d{1,3})*)\s*[\]］]")
SNIPPET_CHARS = 240
# An inline code span: a run of backticks up to the next run of the same length, within one
# paragraph (CommonMark: a span cannot cross a blank line).
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(?:[^\n]|\n(?![ \t]*(?:\n|\Z)))+?(?<!`)\1(?!`)")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def citation_for(number: int, hit: SearchHit, *, cited: bool) -> Citation:
    return Citation(
        number=number, title=hit.title, heading_path=hit.section_path, source=hit.source,
        url=hit.url, chunk_id=hit.chunk_id, score=hit.score, snippet=snippet(hit.text),
        cited=cited,
    )


def resolve_citations(text: str, sources: list[PackedSource]) -> tuple[str, list[Citation]]:
    """Rewrite markers in `text`; return it with the citations it actually uses."""
    by_number = {source.number: source for source in sources}
    renumbered: dict[int, int] = {}

    def rewrite(match: re.Match[str]) -> str:
        numbers = [int(n) for n in re.split(r"\s*[,、，]\s*", match.group(2).strip())]
        kept = []
        for number in numbers:
            if number not in by_number:
                continue
            new = renumbered.setdefault(number, len(renumbered) + 1)
            if new not in kept:
                kept.append(new)
        if not kept:  # an invented marker goes, with the space before it
            return ""
        return match.group(1) + "".join(f"[{n}]" for n in kept)

    pieces, end = [], 0
    for start, stop in code_ranges(text):
        pieces += [MARKER.sub(rewrite, text[end:start]), text[start:stop]]
        end = stop
    pieces.append(MARKER.sub(rewrite, text[end:]))
    cleaned = "".join(pieces).strip()
    citations = [citation_for(new, by_number[old].hit, cited=True)
                 for old, new in sorted(renumbered.items(), key=lambda item: item[1])]
    return cleaned, citations


@functools.cache
def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark")


def code_ranges(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of the code in Markdown `text`, in order: fenced and
    indented blocks (found by a CommonMark parser, so a fence inside a list item or quote
    counts; an unclosed fence runs to the end) and inline code spans between them."""
    line_starts = [0] + [match.end() for match in _LINE_BREAK.finditer(text)]
    line_starts.append(len(text))
    blocks = [(line_starts[token.map[0]], line_starts[min(token.map[1], len(line_starts) - 1)])
              for token in _markdown().parse(text)
              if token.type in ("fence", "code_block") and token.map]
    ranges: list[tuple[int, int]] = []
    end = 0
    for start, stop in [*blocks, (len(text), len(text))]:
        ranges += [(end + span.start(), end + span.end())
                   for span in _CODE_SPAN.finditer(text[end:start])]
        if stop > start:
            ranges.append((start, stop))
        end = max(end, stop)
    return ranges


def related_citations(hits: list[SearchHit], limit: int) -> list[Citation]:
    """Top hits shown as 'related' when the model cited nothing or did not run."""
    return [citation_for(i, hit, cited=False) for i, hit in enumerate(hits[:limit], start=1)]
