"""The store seam: what retrieval, indexing and status need from an index backend.

Two protocols per backend. A `ChunkStore` is one index version's chunks — dense vectors,
sparse lexical weights, text and metadata under one integer row id — plus the files they came
from; the served version is read through its `ChunkReader` half. `IndexVersions` keeps the
versions: which one is served, its manifest, a lock for the one indexer, and builds that are
published with one switch (readers keep the old version until the new one is complete).

Callers (`HybridRetriever`, `Indexer`, `HybridVectorStore`, `KotaeService`, `ServedIndex`)
depend on these protocols only; file names, folders and copies are the backend's business.
Nothing here imports FAISS: `kotae status` reads a manifest without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from retrieval.errors import KotaeError

if TYPE_CHECKING:
    import numpy as np


class IndexDamaged(KotaeError):
    """A file of an index version is missing or not what was written (a torn copy, a full
    disk, a bad block). Detected when the version is opened; the version served before it
    keeps serving, and `kotae index --full` rebuilds from the documents."""

    def __init__(self, message: str, path: object = None) -> None:
        super().__init__(message + "; `kotae index --full` rebuilds the index from the "
                         "documents")
        self.path = path


@dataclass
class StoredChunk:
    row_id: int
    chunk_id: str
    text: str
    metadata: dict[str, Any]


@dataclass
class FileRecord:
    """One indexed file: what an incremental run compares against (content hash)."""

    source: str
    file_hash: str
    mtime: float
    title: str
    chunk_count: int
    indexed_at: float


@runtime_checkable
class ChunkReader(Protocol):
    """A version being served: searched by many threads at once."""

    @property
    def count(self) -> int:
        """Chunks (dense vectors) in the version."""
        ...

    def search_dense(self, queries: np.ndarray, k: int, *,
                     rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, row ids) per query row; cosine similarities, -1 ids pad. With
        `rows` (ascending row ids), only those are searched: the top-k among them, not a
        filtered top-k of all (access control, before ranking)."""
        ...

    def search_sparse(self, query: dict[int, float], k: int, *,
                      rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The top-k positive lexical scores for one query (token id -> weight): (scores,
        float, best first; row ids, int64), at most k, fewer when fewer chunks share a token.
        With `rows` (ascending row ids), only among those rows. A backend need not score every
        chunk to answer (an inverted index reads only the query's tokens)."""
        ...

    def sparse_scores_of(self, query: dict[int, float], row_ids: np.ndarray) -> np.ndarray:
        """The exact lexical score of each of `row_ids`, in that order: bge-m3's, the sum over
        shared token ids of query weight x stored weight; 0.0 where nothing is shared or the
        row is unknown. The retriever scores its dense candidates with it."""
        ...

    def rows_of(self, sources: Sequence[str]) -> np.ndarray:
        """The row ids (int64, ascending) of the chunks of `sources`."""
        ...

    def vectors(self, row_ids: Sequence[int]) -> np.ndarray:
        """The stored dense vectors of `row_ids`, in that order."""
        ...

    def get_rows(self, row_ids: Sequence[int]) -> dict[int, StoredChunk]:
        """Chunks by row id; ids no longer stored are left out."""
        ...

    def get_by_chunk_ids(self, chunk_ids: Sequence[str]) -> list[StoredChunk]:
        """Chunks by chunk id, in the order asked; unknown ids are left out."""
        ...

    def chunks_of(self, source: str) -> list[StoredChunk]:
        ...

    def sparse_of(self, row_ids: Sequence[int]) -> dict[int, dict[int, float]]:
        """Stored sparse weights (token id -> weight) by row id."""
        ...

    def files(self) -> dict[str, FileRecord]:
        ...

    def meta(self) -> dict[str, Any]:
        ...


@runtime_checkable
class ChunkStore(ChunkReader, Protocol):
    """A version being built (or a standalone store): vectors and rows change together."""

    def add(self, chunk_ids: Sequence[str], texts: Sequence[str],
            metadatas: Sequence[dict[str, Any]], dense: np.ndarray,
            sparse: Sequence[dict[int, float]]) -> list[int]:
        """Insert or replace chunks by chunk id, all or none; returns their row ids."""
        ...

    def delete_chunks(self, chunk_ids: Iterable[str]) -> int:
        ...

    def delete_source(self, source: str) -> int:
        """Remove a file's chunks and its file record; returns the chunks removed."""
        ...

    def record_file(self, record: FileRecord) -> None:
        ...

    def set_meta(self, **values: Any) -> None:
        ...

    def save(self) -> None:
        """Make everything added so far durable."""
        ...

    def close(self) -> None:
        ...


@runtime_checkable
class IndexBuild(Protocol):
    """A version being built; readers do not see it until `publish`."""

    @property
    def version(self) -> str:
        ...

    @property
    def store(self) -> ChunkStore:
        ...

    def publish(self, manifest: Mapping[str, Any]) -> None:
        """Save the store, keep `manifest` with it and make it the served version."""
        ...

    def discard(self) -> None:
        """Throw the build away; the served version stays as it was."""
        ...


@runtime_checkable
class IndexVersions(Protocol):
    """The versions of one index and the switch between them."""

    @property
    def location(self) -> str:
        """Where the index lives, for messages (a folder, a server)."""
        ...

    def current_version(self) -> str | None:
        """The served version, or None before the first build."""
        ...

    def manifest(self, version: str) -> dict[str, Any]:
        """What the indexer recorded with `version` (cheap: no vectors are loaded)."""
        ...

    def file_records(self, version: str) -> dict[str, FileRecord]:
        """The files of `version`, without opening its vectors."""
        ...

    def lock(self, holder: str) -> AbstractContextManager[None]:
        """One indexer at a time; a second gets IndexLocked naming `holder`."""
        ...

    def remove_stale_builds(self) -> None:
        """Discard builds a crash left behind; only while holding the lock."""
        ...

    def begin_build(self, dim: int, *, base: str | None = None) -> IndexBuild:
        """A new build, empty or holding what version `base` holds (to be edited)."""
        ...

    def prune(self, keep_previous: int = 1) -> None:
        """Remove old versions, keeping the served one and `keep_previous` before it."""
        ...

    def open_version(self, version: str) -> ChunkReader:
        """A version opened read-only for searching."""
        ...
