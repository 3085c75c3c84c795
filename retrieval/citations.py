"""Turn the model's [n] markers into citations: keep the valid ones, drop invented ones, and
renumber by first appearance so the answer reads [1], [2], … in order."""

from __future__ import annotations

import re

from retrieval.context import PackedSource
from retrieval.types import Citation, SearchHit

# [1]  [1, 2]  [1,2,3]  ［1］  [1、2]
MARKER = re.compile(r"([ \t]?)[\[［]\s*(\d{1,3}(?:\s*[,、，]\s*\d{1,3})*)\s*[\]］]")
SNIPPET_CHARS = 240


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

    cleaned = MARKER.sub(rewrite, text).strip()
    citations = [citation_for(new, by_number[old].hit, cited=True)
                 for old, new in sorted(renumbered.items(), key=lambda item: item[1])]
    return cleaned, citations


def related_citations(hits: list[SearchHit], limit: int) -> list[Citation]:
    """Top hits shown as 'related' when the model cited nothing or did not run."""
    return [citation_for(i, hit, cited=False) for i, hit in enumerate(hits[:limit], start=1)]
