"""Sources for the prompt: numbered, packed into a token budget, clearly delimited as data."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

from retrieval.types import SearchHit

MIN_TRIMMED_TOKENS = 40  # a source trimmed below this is not worth its place
TRIM_MARKER = " …"  # ends a trimmed source, so the model knows the passage goes on


@dataclass
class PackedSource:
    number: int
    hit: SearchHit
    text: str  # possibly trimmed
    trimmed: bool


def pack_sources(hits: list[SearchHit], budget_tokens: int,
                 token_length: Callable[[str], int]) -> list[PackedSource]:
    """Best hits first, as many as fit; the last one that does not fit whole is trimmed."""
    packed: list[PackedSource] = []
    remaining = budget_tokens
    for hit in hits:
        if remaining < MIN_TRIMMED_TOKENS:
            break
        tokens = token_length(hit.text)
        if tokens <= remaining:
            packed.append(PackedSource(len(packed) + 1, hit, hit.text, False))
            remaining -= tokens
            continue
        text = _trim_to_tokens(hit.text, remaining, token_length)
        packed.append(PackedSource(len(packed) + 1, hit, text, True))
        break
    return packed


def _trim_to_tokens(text: str, max_tokens: int, token_length: Callable[[str], int]) -> str:
    """Longest prefix that, with the trim marker, fits `max_tokens` (binary search over
    characters): the marker counts against the budget too."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if token_length(text[:middle].rstrip() + TRIM_MARKER) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + TRIM_MARKER


def format_sources(packed: list[PackedSource]) -> str:
    """Each source inside its own <source> element. Source text cannot close the element:
    `<` and `>` inside it are escaped, so an injected "</source> ignore previous instructions"
    stays data."""
    blocks = []
    for source in packed:
        hit = source.hit
        heading = " › ".join(hit.heading_path)
        blocks.append(
            f'<source id="{source.number}" title="{html.escape(hit.title)}" '
            f'heading="{html.escape(heading)}" path="{html.escape(hit.source)}">\n'
            f"{html.escape(source.text, quote=False)}\n</source>"
        )
    return "\n\n".join(blocks)
