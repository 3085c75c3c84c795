"""Read files into `SourceFile`s. One bad file never stops a run: it becomes a `SkippedFile` with
a reason a person can act on, and it is logged at debug level only, because the caller (the
indexer) reports every skipped file once."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from retrieval.loaders.formats.base import Parsed, RawFile
from retrieval.loaders.model import (
    MAX_FILE_BYTES,
    LoadResult,
    SkippedFile,
    SourceFile,
    UnloadableFile,
)
from retrieval.loaders.noise import captured_noise
from retrieval.loaders.registry import format_for
from retrieval.loaders.walking import Paths, find_sources

logger = logging.getLogger(__name__)


def load_path(paths: Paths, *, max_bytes: int = MAX_FILE_BYTES) -> LoadResult:
    """Load every supported file named in `paths` or found below them (see `find_sources`)."""
    files, skipped = find_sources(paths)
    documents: list[SourceFile] = []
    for file in files:
        try:
            documents.append(load_file(file, max_bytes=max_bytes))
        except UnloadableFile as error:
            skipped.append(SkippedFile(path=file.as_posix(), reason=str(error)))
        except Exception as error:  # a parser bug must cost one file, not the whole run
            logger.debug("unexpected error while loading %s", file, exc_info=True)
            skipped.append(
                SkippedFile(
                    path=file.as_posix(),
                    reason=f"unexpected error: {type(error).__name__}: {error}",
                )
            )
    for problem in skipped:
        logger.debug("skipped %s: %s", problem.path, problem.reason)
    logger.info("loaded %d files, skipped %d", len(documents), len(skipped))
    return LoadResult(documents=documents, skipped=skipped)


def load_file(path: Path, *, max_bytes: int = MAX_FILE_BYTES) -> SourceFile:
    """Load one supported file; raises `UnloadableFile` with the reason it cannot be used.

    The file is cited under `path` made absolute, a symlink as the link (see `find_sources`).
    """
    path = Path(os.path.abspath(Path(path).expanduser()))
    fmt = format_for(path.suffix)
    if fmt is None:
        raise UnloadableFile(f"unsupported file type '{path.suffix or path.name}'")
    try:
        stat = path.stat()
        if stat.st_size > max_bytes:
            raise UnloadableFile(
                f"too large ({format_size(stat.st_size)}; the limit is {format_size(max_bytes)})"
            )
        data = path.read_bytes()
    except OSError as error:
        raise UnloadableFile(f"cannot read: {error.strerror or error}") from error
    if not data:
        raise UnloadableFile("empty file (0 bytes)")

    raw = RawFile(data)
    notes: list[str] = []
    try:
        with captured_noise(fmt.library_loggers) as notes:
            parsed: Parsed = fmt.parse(raw)
    except UnloadableFile as error:
        raise UnloadableFile(_with_notes(str(error), notes)) from error
    if not parsed.text.strip():
        raise UnloadableFile(_with_notes(fmt.no_text_reason, notes))

    return SourceFile(
        source=path.as_posix(),
        title=(parsed.title or "").strip() or path.stem,
        content_hash=hashlib.sha256(data).hexdigest(),
        mtime=stat.st_mtime,
        kind=fmt.kind,
        text=parsed.text,
        pages=parsed.pages,
        url=parsed.url,
        warnings=list(dict.fromkeys([*raw.warnings, *parsed.warnings, *notes])),
    )


def format_size(size: int) -> str:
    """Binary units, as the limit is set: 52.4 MiB, 50 MiB, 900 bytes."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes" if size != 1 else "1 byte"


def _with_notes(reason: str, notes: list[str]) -> str:
    return f"{reason} ({'; '.join(notes)})" if notes else reason
