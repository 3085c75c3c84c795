"""Split a `SourceFile` into chunks sized in embedding-model tokens, keeping each chunk's headings.

Structure first: Markdown-like kinds (Markdown, and HTML/reStructuredText that the loader already
rewrote with `#` headings) are cut at headings by LangChain's `MarkdownHeaderTextSplitter`, and
each section remembers its heading path. PDFs are cut per page so a chunk can cite its page.
Then size: `RecursiveCharacterTextSplitter` cuts sections that are too long, trying paragraph,
line and sentence ends before spaces. Japanese has no spaces between words, so the sentence ends
include 。！？ and the comma 、, each kept at the end of the sentence it closes.

Sizes are in tokens of the embedding model, through the `token_length` the caller passes in,
because the model truncates by tokens, not characters. It should count content tokens only
(no [CLS]/[SEP]); the heading prefix of `Chunk.embedding_text` comes on top of `chunk_size`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections.abc import Callable
from typing import Any

from langchain_core.documents import Document
from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter
from pydantic import BaseModel, ConfigDict, Field

from retrieval.embedding_text import embedding_text_for
from retrieval.loaders import HEADING_KINDS, SourceFile, plain_heading

logger = logging.getLogger(__name__)

TokenLength = Callable[[str], int]

# Coarse to fine. "．" is the full-width period of Japanese technical writing.
SEPARATORS: list[str] = [
    "\n\n", "\n", "。", "．", "！", "？", "!", "?", ". ", "、", ", ", " ", "",
]  # fmt: skip

_HEADERS = [("#" * level, f"h{level}") for level in range(1, 7)]


class Chunk(BaseModel):
    """A piece of a file, the unit that is embedded, retrieved and cited.

    `metadata` holds: source, title, kind, file_hash, mtime, heading_path, chunk_number,
    content_hash, and url / page where the file has them. It is plain JSON so
    stores can keep it as is.
    """

    model_config = ConfigDict(frozen=True)

    chunk_id: str = Field(description="sha1(source)[:12]:chunk_number, the same on every run")
    text: str
    metadata: dict[str, Any]

    @property
    def title(self) -> str:
        return str(self.metadata.get("title", ""))

    @property
    def heading_path(self) -> list[str]:
        return list(self.metadata.get("heading_path") or [])

    @property
    def embedding_text(self) -> str:
        """`title › heading › sub-heading` then the text: a chunk that says "by the 25th" under
        "Expenses › Deadline" should be found by "expense deadline" even though its text never
        says so. A first heading equal to the title is not repeated."""
        return embedding_text_for(self.title, self.heading_path, self.text)

    def to_document(self) -> Document:
        return Document(id=self.chunk_id, page_content=self.text, metadata=dict(self.metadata))


def chunk_source(
    source: SourceFile, *, token_length: TokenLength, chunk_size: int, chunk_overlap: int
) -> list[Chunk]:
    """Chunks of `source`, none longer than `chunk_size` tokens and none empty.

    Up to `chunk_overlap` tokens of the end of a chunk start the next one when a section is cut
    by size, never across headings or pages (a new section starts clean). The overlap is made of
    whole pieces (lines, sentences) at the level the splitter cut at, so it is smaller, or empty,
    when those pieces are longer than `chunk_overlap`.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1 token, not {chunk_size}")
    if not 0 <= chunk_overlap < chunk_size:
        raise ValueError(
            f"chunk_overlap must be at least 0 and below chunk_size ({chunk_size}), "
            f"not {chunk_overlap}"
        )
    length = _cached_length(token_length)
    splitter = RecursiveCharacterTextSplitter(
        separators=SEPARATORS,
        keep_separator="end",
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        length_function=length,
        strip_whitespace=True,
    )
    base: dict[str, Any] = {
        "source": source.source,
        "title": source.title,
        "kind": source.kind,
        "file_hash": source.content_hash,
        "mtime": source.mtime,
    }
    if source.url:
        base["url"] = source.url
    id_prefix = hashlib.sha1(source.source.encode("utf-8"), usedforsecurity=False).hexdigest()[:12]

    chunks: list[Chunk] = []
    sections = _sections(source)
    if source.kind in HEADING_KINDS and not any(text.strip() for _path, text, _page in sections):
        sections = _headings_only(source)
    for heading_path, section, page in sections:
        for piece in splitter.split_text(section):
            for text in _within_limit(piece, length, chunk_size):
                if not text.strip():
                    continue
                number = len(chunks)
                metadata = {
                    **base,
                    "heading_path": heading_path,
                    "chunk_number": number,
                    "content_hash": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                }
                if page is not None:
                    metadata["page"] = page
                chunks.append(Chunk(chunk_id=f"{id_prefix}:{number}", text=text, metadata=metadata))
    logger.debug("%s: %d chunks", source.source, len(chunks))
    return chunks


def _sections(source: SourceFile) -> list[tuple[list[str], str, int | None]]:
    """(heading path, text, 1-based PDF page or None) for each structural section."""
    if source.kind == "pdf" and source.pages:
        return [([], text, number) for number, text in enumerate(source.pages, start=1) if text]
    if source.kind not in HEADING_KINDS:
        return [([], source.text, None)]
    splitter = MarkdownHeaderTextSplitter(_HEADERS, strip_headers=True)
    sections = []
    for document in splitter.split_text(_printable_whitespace(source.text)):
        heading_path = [
            _heading_text(document.metadata[name])
            for _marker, name in _HEADERS
            if document.metadata.get(name)
        ]
        # The splitter joins the paragraphs of a section with "  \n" (it strips every line, so
        # that sequence means nothing else); give them back their blank line so the size
        # splitter can still prefer paragraph ends.
        text = document.page_content.replace("  \n", "\n\n")
        sections.append((heading_path, text, None))
    return sections


def _headings_only(source: SourceFile) -> list[tuple[list[str], str, int | None]]:
    """A file that is only headings ("# Vue 2 vs. Vue 3 FAQ") still says something: its
    headings are its text, one per line, so it can be found and cited."""
    splitter = MarkdownHeaderTextSplitter(_HEADERS, strip_headers=False)
    lines = [
        _heading_text(line.lstrip("#"))
        for document in splitter.split_text(_printable_whitespace(source.text))
        for line in document.page_content.split("\n")
        if line.lstrip().startswith("#")
    ]
    text = "\n".join(line for line in lines if line)
    return [([], text, None)] if text else []


def _printable_whitespace(text: str) -> str:
    """Tabs and full-width spaces as plain spaces: MarkdownHeaderTextSplitter drops every
    character that `str.isprintable()` rejects, which would glue words together."""
    return re.sub(r"[^\S\n]", lambda m: m.group() if m.group().isprintable() else " ", text)


def _heading_text(raw: str) -> str:
    """What a reader sees of a heading: no closing hashes, `{#id}` anchors or inline Markdown,
    so citations say "Reactivity › reactive()", not "… `reactive()` \\*\\* {#reactive}"."""
    return plain_heading(raw)


def _within_limit(text: str, length: TokenLength, chunk_size: int) -> list[str]:
    """Cut `text` by characters where it still exceeds `chunk_size`.

    The recursive splitter adds up the token counts of pieces, but real tokenizers are not
    additive (a merge can span a cut, SentencePiece adds a word-start marker), so a merged chunk
    can come out a few tokens over. Rare; cut at the longest prefix that fits.
    """
    if length(text) <= chunk_size:
        return [text]
    logger.debug("chunk over %d tokens after splitting; cutting by characters", chunk_size)
    pieces: list[str] = []
    rest = text
    while rest and length(rest) > chunk_size:
        low, high = 1, len(rest)  # invariant: rest[:low] fits (or low == 1), rest[:high] does not
        while low + 1 < high:
            middle = (low + high) // 2
            if length(rest[:middle]) <= chunk_size:
                low = middle
            else:
                high = middle
        pieces.append(rest[:low])
        rest = rest[low:]
    if rest:
        pieces.append(rest)
    return [piece.strip() for piece in pieces if piece.strip()]


def _cached_length(token_length: TokenLength) -> TokenLength:
    """The splitter measures the same separators and characters again and again; a tokenizer
    call costs far more than a dict lookup. "" is 0 whatever the tokenizer says."""

    @functools.lru_cache(maxsize=8192)
    def length(text: str) -> int:
        return token_length(text) if text else 0

    return length
