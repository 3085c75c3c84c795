"""What loading produces: a loaded `SourceFile`, a `SkippedFile` with its reason, and the error
that carries such a reason out of a parser."""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.documents import Document
from pydantic import BaseModel, ConfigDict, Field

# A new format adds its name here and registers its module in `registry.FORMATS`.
SourceKind = Literal["markdown", "html", "rst", "text", "pdf", "csv", "json"]

# A guard against someone pointing the indexer at a folder of logs or dumps.
MAX_FILE_BYTES = 50 * 1024 * 1024

# One wording for "nothing to index" wherever it is decided: the loader (a blank file) and the
# indexer (a file whose chunks come out empty).
NO_TEXT_REASON = "no text to index (empty or whitespace only)"


class SourceFile(BaseModel):
    """One loaded document. `text` is Markdown-like for `HEADING_KINDS`, plain otherwise.

    `pages` holds the text of each PDF page (page n is `pages[n - 1]`, blank pages kept as "")
    so chunks can cite a page; it is empty for other kinds. `warnings` says what was indexed
    imperfectly (bytes replaced, a parser's complaint), for the person indexing.
    """

    model_config = ConfigDict(frozen=True)

    source: str = Field(description="absolute POSIX path of the file")
    title: str
    content_hash: str = Field(description="sha256 of the raw bytes, as `hash_file` computes it")
    mtime: float
    kind: SourceKind
    text: str
    pages: list[str] = Field(default_factory=list)
    url: str | None = Field(
        None, description="from Markdown front matter `url:` or an HTML canonical link"
    )
    warnings: list[str] = Field(default_factory=list)

    def to_document(self) -> Document:
        """The whole file as a LangChain `Document`, for code that wants LangChain's type."""
        metadata: dict[str, Any] = {
            "source": self.source,
            "title": self.title,
            "content_hash": self.content_hash,
            "mtime": self.mtime,
            "kind": self.kind,
        }
        if self.url:
            metadata["url"] = self.url
        return Document(page_content=self.text, metadata=metadata)


class SkippedFile(BaseModel):
    """A file that was named or found but not loaded, and why (written for the person indexing)."""

    model_config = ConfigDict(frozen=True)

    path: str
    reason: str


class LoadResult(BaseModel):
    documents: list[SourceFile] = Field(default_factory=list)
    skipped: list[SkippedFile] = Field(default_factory=list)


class UnloadableFile(Exception):
    """Raised by `load_file` and the format parsers; `load_path` turns it into a `SkippedFile`.

    `str(error)` is the reason shown to the person indexing.
    """
