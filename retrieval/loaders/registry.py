"""The file formats: which suffixes each reads, and the parser that turns a file into text.

A new format is one module in `retrieval.loaders.formats` that defines `FORMAT`, plus its line in
`FORMATS` below (and its name in `model.SourceKind`). Nothing else dispatches on the kind.
"""

from __future__ import annotations

from retrieval.loaders.formats import csv, html, json, markdown, pdf, rst, text
from retrieval.loaders.formats.base import Format
from retrieval.loaders.model import SourceKind

FORMATS: tuple[Format, ...] = (
    markdown.FORMAT, text.FORMAT, rst.FORMAT, html.FORMAT, pdf.FORMAT, csv.FORMAT, json.FORMAT,
)  # fmt: skip

SUFFIX_FORMATS: dict[str, Format] = {
    suffix: fmt for fmt in FORMATS for suffix in fmt.suffixes
}
SUFFIX_KINDS: dict[str, SourceKind] = {suffix: fmt.kind for suffix, fmt in SUFFIX_FORMATS.items()}

# Kinds whose `SourceFile.text` carries Markdown `#` headings that chunking may split on.
HEADING_KINDS: frozenset[str] = frozenset(fmt.kind for fmt in FORMATS if fmt.headings)


def format_for(suffix: str) -> Format | None:
    """The format that reads files ending in `suffix` (any case), if one does."""
    return SUFFIX_FORMATS.get(suffix.lower())


def supported_suffixes() -> str:
    return ", ".join(sorted(SUFFIX_FORMATS))
