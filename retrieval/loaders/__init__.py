"""Turn files on disk into `SourceFile`s: decoded text plus what the indexer needs to see changes.

Our own small loader rather than langchain_community's: that package is not a runtime dependency,
and we need one place that decides how Japanese encodings are guessed and why a file is skipped.

- `walking`: which files a run reads, and which inputs it will not (with the symlink rule);
  `hash_file`.
- `decoding`: bytes to text (UTF-8, cp932, EUC-JP, damaged UTF-8 with a warning).
- `formats/`: one module per format, listed in `registry` by suffix.
- `loading`: `load_file` / `load_path`, which turn a bad file into a `SkippedFile`.

HTML and reStructuredText are converted to Markdown-like text with `#` headings, so chunking needs
one structural splitter (Markdown headings) for all three; see `HEADING_KINDS`.
"""

from retrieval.loaders.decoding import decode_text
from retrieval.loaders.headings import plain_heading
from retrieval.loaders.loading import load_file, load_path
from retrieval.loaders.model import (
    MAX_FILE_BYTES,
    NO_TEXT_REASON,
    LoadResult,
    SkippedFile,
    SourceFile,
    SourceKind,
    UnloadableFile,
)
from retrieval.loaders.registry import HEADING_KINDS, SUFFIX_KINDS
from retrieval.loaders.walking import find_sources, hash_file, iter_source_paths

__all__ = [
    "HEADING_KINDS",
    "MAX_FILE_BYTES",
    "NO_TEXT_REASON",
    "SUFFIX_KINDS",
    "LoadResult",
    "SkippedFile",
    "SourceFile",
    "SourceKind",
    "UnloadableFile",
    "decode_text",
    "find_sources",
    "hash_file",
    "iter_source_paths",
    "load_file",
    "load_path",
    "plain_heading",
]
