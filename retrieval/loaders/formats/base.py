"""What every format module builds on: the file a parser receives, what it returns, and the
`Format` record that registers it (see `retrieval.loaders.registry`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from retrieval.loaders.decoding import decode, normalize_newlines
from retrieval.loaders.model import NO_TEXT_REASON, SourceKind


class RawFile:
    """A file's bytes as a parser receives them; `text` decodes them on first use, so a binary
    format (PDF) never pays for nor fails on decoding. Decoding warnings land in `warnings`."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.warnings: list[str] = []

    @functools.cached_property
    def text(self) -> str:
        decoded = decode(self.data)
        self.warnings.extend(decoded.warnings)
        return normalize_newlines(decoded.text)


@dataclass(frozen=True)
class Parsed:
    """What a parser found in a file; the loader adds the path, hashes and defaults."""

    text: str
    title: str | None = None
    url: str | None = None
    pages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


Parser = Callable[[RawFile], Parsed]


@dataclass(frozen=True)
class Format:
    kind: SourceKind
    suffixes: tuple[str, ...]
    parse: Parser
    # Its text carries Markdown `#` headings that chunking may split on.
    headings: bool = False
    # The reason given when it yields no text.
    no_text_reason: str = NO_TEXT_REASON
    # Loggers of the libraries it calls, whose warnings are the file's, not the terminal's.
    library_loggers: tuple[str, ...] = ()
