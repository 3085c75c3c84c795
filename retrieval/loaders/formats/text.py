"""Plain text: indexed as it is; a `#` line is text, not a heading."""

from __future__ import annotations

from retrieval.loaders.formats.base import Format, Parsed, RawFile


def parse(raw: RawFile) -> Parsed:
    return Parsed(text=raw.text)


FORMAT = Format(kind="text", suffixes=(".txt",), parse=parse)
