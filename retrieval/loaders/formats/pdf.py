"""PDF: the text of each page (kept per page so a chunk can cite it) and the metadata title."""

from __future__ import annotations

import io

from pypdf import PdfReader

from retrieval.loaders.decoding import normalize_newlines
from retrieval.loaders.formats.base import Format, Parsed, RawFile
from retrieval.loaders.model import UnloadableFile


def parse(raw: RawFile) -> Parsed:
    try:
        reader = PdfReader(io.BytesIO(raw.data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnloadableFile("encrypted PDF (needs a password)")
        pages = [normalize_newlines(page.extract_text() or "").strip() for page in reader.pages]
        metadata = reader.metadata
        title = metadata.title if metadata else None
    except UnloadableFile:
        raise
    except Exception as error:  # pypdf raises many exception types on malformed files
        raise UnloadableFile(f"unreadable PDF: {type(error).__name__}: {error}") from error
    return Parsed(
        title=str(title) if title else None,
        text="\n\n".join(page for page in pages if page),
        pages=pages,
    )


FORMAT = Format(
    kind="pdf",
    suffixes=(".pdf",),
    parse=parse,
    no_text_reason="no extractable text (a scanned PDF? run OCR first)",
    library_loggers=("pypdf",),
)
