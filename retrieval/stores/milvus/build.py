"""A Milvus index version being built, as a `ChunkStore`: the rows it inserts are born with its
build number, the rows it deletes die with it, and versions before it see neither.

Deleting a row that an earlier build inserted marks it (`died = build`: an upsert of the row,
vectors and all, as Milvus has no partial update here); a row inserted by this same build is
removed outright. Inserts go in batches of at most INSERT_BYTES: Milvus Lite ingests ~3,800
rows/s in requests of up to ~1,500 1024-d rows, and falls to ~150 rows/s past ~10 MB per
request (measured, bench/milvus.py).

Milvus has no transaction: `add` inserts the new rows before it marks the rows they replace,
and removes what it inserted when a step fails, so a failed add leaves the build as it was
(or, when even that fails, a build that is discarded whole: the indexer never publishes it).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from retrieval.stores.base import FileRecord
from retrieval.stores.milvus.connection import Milvus, MilvusError
from retrieval.stores.milvus.reader import ID_BATCH, MilvusReader
from retrieval.stores.milvus.schema import (
    CHUNKS,
    DIED_NEVER,
    DUMMY_VECTOR,
    FILES,
    MAX_TEXT_BYTES,
    in_list,
    key64,
    row_id,
)

logger = logging.getLogger(__name__)

INSERT_BYTES = 4 << 20
INSERT_ROWS = 1_000


def chunk_row(row: int, build: int, chunk_id: str, text: str, metadata: dict[str, Any],
              dense: np.ndarray, sparse: dict[int, float]) -> dict[str, Any]:
    """One `<prefix>_chunks` row: the citation fields as columns, the metadata whole."""
    if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
        raise ValueError(f"chunk {chunk_id}: its text is over Milvus' {MAX_TEXT_BYTES}-byte "
                         "limit; index with a smaller KOTAE_CHUNK_SIZE")
    source = str(metadata.get("source", ""))
    return {
        "id": row, "born": build, "died": DIED_NEVER,
        "chunk_key": key64(chunk_id), "source_key": key64(source),
        "chunk_id": chunk_id, "source": source, "title": str(metadata.get("title", "")),
        "heading_path": json.dumps(list(metadata.get("heading_path") or []),
                                   ensure_ascii=False),
        "chunk_number": int(metadata.get("chunk_number", -1)),
        "file_hash": str(metadata.get("file_hash", "")),
        "content_hash": str(metadata.get("content_hash", "")),
        "url": str(metadata.get("url", "") or ""),
        "text": text, "metadata": metadata,
        "dense": np.asarray(dense, np.float32),
        "sparse": {int(t): float(w) for t, w in sparse.items()},
    }


def _row_bytes(row: dict[str, Any]) -> int:
    return (row["dense"].nbytes + 12 * len(row["sparse"]) + len(row["text"].encode("utf-8"))
            + len(json.dumps(row["metadata"], ensure_ascii=False).encode("utf-8")) + 256)


def insert_batched(milvus: Milvus, kind: str, rows: Iterable[dict[str, Any]]) -> None:
    """Insert in requests of at most INSERT_ROWS rows and INSERT_BYTES (see module doc)."""
    batch: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        row_size = _row_bytes(row) if kind == CHUNKS else 512
        if batch and (len(batch) >= INSERT_ROWS or size + row_size > INSERT_BYTES):
            milvus.insert(kind, batch)
            batch, size = [], 0
        batch.append(row)
        size += row_size
    milvus.insert(kind, batch)


class MilvusBuildStore(MilvusReader):
    """Build `build` over the rows it starts from (floor .. build)."""

    def __init__(self, milvus: Milvus, version: str, floor: int, build: int, dim: int,
                 check_meta: Any = None) -> None:
        super().__init__(milvus, version, floor, build, dim)
        self._next = itertools.count()
        self._check_meta = check_meta
        # A build from nothing sees only its own rows: a chunk id it never inserted needs no
        # lookup before an add (a migration or --full skips one query per batch).
        self._own_chunk_ids: set[str] | None = set() if floor == build else None
        self._own_sources: set[str] = set()  # of the chunks and file rows it wrote
        self._pending_files: dict[str, FileRecord] = {}  # written in one batch (see files)

    @property
    def count(self) -> int:
        return self.milvus.count(CHUNKS, self.where)

    def _new_ids(self, n: int) -> list[int]:
        return [row_id(self.build, next(self._next)) for _ in range(n)]

    # --- writing -------------------------------------------------------------------------------

    def add(self, chunk_ids: Sequence[str], texts: Sequence[str],
            metadatas: Sequence[dict[str, Any]], dense: np.ndarray,
            sparse: Sequence[dict[int, float]]) -> list[int]:
        if not (len(chunk_ids) == len(texts) == len(metadatas) == len(dense) == len(sparse)):
            raise ValueError("chunk_ids, texts, metadatas, dense and sparse differ in length")
        if len(set(chunk_ids)) != len(chunk_ids):
            raise ValueError("duplicate chunk ids in one add")
        if not len(chunk_ids):
            return []
        vectors = np.asarray(dense, np.float32).reshape(len(chunk_ids), self.dim)
        known = self._own_chunk_ids
        replaced = [] if known is not None and known.isdisjoint(chunk_ids) else \
            self._alive_rows(CHUNKS, "chunk_key", [key64(c) for c in chunk_ids], "chunk_id",
                             set(chunk_ids))
        ids = self._new_ids(len(chunk_ids))
        rows = [chunk_row(r, self.build, c, t, dict(m), v, s) for r, c, t, m, v, s in zip(
            ids, chunk_ids, texts, metadatas, vectors, sparse, strict=True)]
        try:
            insert_batched(self.milvus, CHUNKS, rows)
            self._kill(CHUNKS, replaced)
        except BaseException:
            self._undo_insert(ids)
            raise
        if known is not None:
            known.update(chunk_ids)
        self._own_sources.update(str(m.get("source", "")) for m in metadatas)
        return ids

    def _undo_insert(self, ids: list[int]) -> None:
        try:
            self.milvus.delete(CHUNKS, ids=ids)
        except MilvusError as error:  # the build is discarded whole; its rows go with it
            logger.warning("could not take back a failed insert: %s", error)

    def _alive_rows(self, kind: str, key_field: str, keys: list[int], name_field: str,
                    names: set[str]) -> list[dict[str, Any]]:
        """Rows of this build's view whose `name_field` is in `names` (found by hash)."""
        found: list[dict[str, Any]] = []
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), ID_BATCH):
            batch = unique[start:start + ID_BATCH]
            found += [r for r in self.milvus.query(
                kind, f"{self.where} and {in_list(key_field, batch)}",
                ["id", "born", name_field]) if r[name_field] in names]
        return found

    def _kill(self, kind: str, rows: list[dict[str, Any]]) -> None:
        """Delete `rows` from this build: mark those of earlier builds, remove its own."""
        own = [int(r["id"]) for r in rows if int(r["born"]) == self.build]
        older = [int(r["id"]) for r in rows if int(r["born"]) != self.build]
        self.milvus.delete(kind, ids=own)
        for start in range(0, len(older), ID_BATCH // 4):
            batch = older[start:start + ID_BATCH // 4]
            full = self.milvus.query(kind, in_list("id", batch), ["*"], limit=len(batch))
            for row in full:
                row["died"] = self.build
            self.milvus.upsert(kind, full)
        with self._cache_lock:  # no longer in this build's view
            for row in own + older:
                self._cache.pop(row, None)
                self._chunk_cache.pop(row, None)

    def delete_chunks(self, chunk_ids: Iterable[str]) -> int:
        names = set(chunk_ids)
        if self._own_chunk_ids is not None and self._own_chunk_ids.isdisjoint(names):
            return 0
        rows = self._alive_rows(CHUNKS, "chunk_key", [key64(c) for c in names], "chunk_id",
                                names)
        self._kill(CHUNKS, rows)
        return len(rows)

    def delete_source(self, source: str) -> int:
        self._pending_files.pop(source, None)  # never written: nothing to take back
        if self._own_chunk_ids is not None and source not in self._own_sources:
            return 0  # a build from nothing holds only what it wrote
        rows = self._alive_rows(CHUNKS, "source_key", [key64(source)], "source", {source})
        self._kill(CHUNKS, rows)
        self._kill(FILES, self._alive_rows(FILES, "source_key", [key64(source)], "source",
                                           {source}))
        return len(rows)

    def record_file(self, record: FileRecord) -> None:
        """Kept until the build is saved (or its files are read): file records then go in one
        insert instead of a lookup and an insert each."""
        self._pending_files[record.source] = record

    def _write_files(self) -> None:
        pending, self._pending_files = self._pending_files, {}
        if not pending:
            return
        old = self._alive_rows(FILES, "source_key", [key64(s) for s in pending], "source",
                               set(pending))
        insert_batched(self.milvus, FILES, [{
            "id": row, "born": self.build, "died": DIED_NEVER,
            "source_key": key64(record.source), "source": record.source,
            "file_hash": record.file_hash, "mtime": float(record.mtime), "title": record.title,
            "chunk_count": int(record.chunk_count), "indexed_at": float(record.indexed_at),
            "vec": DUMMY_VECTOR} for row, record in zip(self._new_ids(len(pending)),
                                                        pending.values(), strict=True)])
        self._kill(FILES, old)
        self._own_sources.update(pending)

    def files(self) -> dict[str, FileRecord]:
        self._write_files()
        return super().files()

    def set_meta(self, **values: Any) -> None:
        """Kept with the version when it is published; a model other than the collections'
        is refused here, before anything is switched."""
        if self._check_meta is not None:
            self._check_meta(values)
        self._meta.update(json.loads(json.dumps(values)))

    def save(self) -> None:
        self._write_files()
        self.milvus.flush(CHUNKS)
        self.milvus.flush(FILES)

    def close(self) -> None:
        """Nothing to close: the client belongs to the versions."""
