"""One local index version as segments: immutable `HybridStore` folders plus a delete list.

A version lists the segments it serves and the row ids it deleted from them
(`segments.json`, `deleted.npy`); its files and meta live in the version's own small
`docstore.sqlite3`. A build from a version opens that version's segments read-only (mapped,
shared with the readers), hides what it deletes, and writes what it adds into one new
segment — so publishing after a small change writes the new chunks, the delete list and the
files table, never the whole store. Segment row ids never overlap: a new segment's ids start
above every id of the version it edits (`next_row`).

Compaction folds every live row into the new segment once the deletes and the segments added
since the base pass a fraction of the chunks (or too many segments pile up); its IVF index
reuses the base's trained centroids. `kotae index --full` starts from nothing: one fresh
segment, trained anew.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.stores.base import FileRecord, IndexDamaged, StoredChunk
from retrieval.stores.local.arrays import check_files, file_facts
from retrieval.stores.local.choice import DenseChoice
from retrieval.stores.local.dense import trained_quantizer
from retrieval.stores.local.docstore import (
    DENSE_FILE,
    DOCSTORE_FILE,
    SCHEMA,
    SPARSE_FILE,
    connect_read_only,
    file_records,
)
from retrieval.stores.local.plan import DELETED_FILE, SEGMENTS_FILE, SegmentEntry, VersionPlan
from retrieval.stores.local.store import HybridStore

logger = logging.getLogger(__name__)

SEGMENT_FILES = (DENSE_FILE, SPARSE_FILE, DOCSTORE_FILE)


@dataclass
class CompactionPolicy:
    """When a build folds everything into its new segment instead of adding one more."""

    changed_fraction: float = 0.2  # deleted + added since the base, over live chunks
    max_segments: int = 8


def open_segment(folder: Path, entry: SegmentEntry, dim: int, *, device: str,
                 gpu_fp16: bool, dense: DenseChoice, deleted: np.ndarray) -> HybridStore:
    """A listed segment, read-only, its files checked against what was recorded at publish
    (IndexDamaged names the first one that differs)."""
    check_files(folder, entry.files)
    try:
        store = HybridStore(folder, dim, device=device, gpu_fp16=gpu_fp16, read_only=True,
                            dense=dense)
    except (RuntimeError, ValueError, OSError, sqlite3.DatabaseError) as error:
        # a file of the recorded size whose contents FAISS, NumPy or SQLite refuse
        raise IndexDamaged(f"{folder} cannot be read ({error})", folder) from error
    mine = deleted[(deleted >= entry.first_row) & (deleted < entry.end_row)]
    if len(mine):
        store.hide(mine)
    return store


@dataclass
class SegmentedStore:
    """A version's chunks across its segments: a `ChunkReader`, and with `delta` (a build) a
    `ChunkStore` whose edits go to the delta and the delete list only."""

    dim: int
    segments: list[HybridStore]
    entries: list[SegmentEntry]
    catalog: sqlite3.Connection
    next_row: int
    delta: HybridStore | None = None
    delta_first: int = 0  # the delta's lowest row id: `next_row`, or 0 once compacted
    read_only: bool = True
    _deleted: set[int] = field(default_factory=set)
    _catalog_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._deleted = set()
        for segment in self.segments:
            self._deleted.update(segment.hidden.tolist())

    # --- which store holds what ----------------------------------------------------------------

    @property
    def _stores(self) -> list[HybridStore]:
        return self.segments + ([self.delta] if self.delta is not None else [])

    @property
    def count(self) -> int:
        return sum(store.count for store in self._stores)

    def _split(self, row_ids: np.ndarray) -> list[tuple[HybridStore, np.ndarray]]:
        """`row_ids` by the store whose id range holds them (the delta: from `next_row`)."""
        starts = [entry.first_row for entry in self.entries]
        stores = list(self.segments)
        if self.delta is not None:
            starts.append(self.delta_first)
            stores.append(self.delta)
        owner = np.searchsorted(np.asarray(starts, np.int64), row_ids, side="right") - 1
        return [(store, np.flatnonzero(owner == i)) for i, store in enumerate(stores)
                if (owner == i).any()]

    # --- searching -----------------------------------------------------------------------------

    def search_dense(self, queries: np.ndarray, k: int, *,
                     rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        stores = self._stores
        if len(stores) == 1:
            return stores[0].search_dense(queries, k, rows=rows)
        found = [store.search_dense(queries, k, rows=rows) for store in stores if store.count]
        if not found:
            return stores[0].search_dense(queries, k, rows=rows)
        scores = np.concatenate([s for s, _ in found], axis=1)
        ids = np.concatenate([i for _, i in found], axis=1)
        scores = np.where(ids >= 0, scores, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :max(1, min(k, self.count or 1))]
        return (np.take_along_axis(scores, order, axis=1),
                np.take_along_axis(ids, order, axis=1))

    def search_sparse(self, query: dict[int, float], k: int, *, rows: np.ndarray | None = None,
                      exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Each segment's top-k, merged (`exact`: see `HybridStore.search_sparse`)."""
        found = [store.search_sparse(query, k, rows=rows, exact=exact) for store in self._stores]
        if len(found) == 1:
            return found[0]
        scores = np.concatenate([s for s, _ in found])
        ids = np.concatenate([i for _, i in found]).astype(np.int64)
        order = np.argsort(-scores, kind="stable")[:k]
        return scores[order], ids[order]

    def sparse_scores_of(self, query: dict[int, float], row_ids: np.ndarray) -> np.ndarray:
        wanted = np.asarray(row_ids, np.int64)
        out = np.zeros(len(wanted), np.float32)
        for store, positions in self._split(wanted):
            out[positions] = store.sparse_scores_of(query, wanted[positions])
        return out

    def vectors(self, row_ids: Sequence[int]) -> np.ndarray:
        wanted = np.asarray(row_ids, np.int64)
        out = np.zeros((len(wanted), self.dim), np.float32)
        for store, positions in self._split(wanted):
            out[positions] = store.vectors(wanted[positions])
        return out

    def rows_of(self, sources: Sequence[str]) -> np.ndarray:
        parts = [store.rows_of(sources) for store in self._stores]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def get_rows(self, row_ids: Sequence[int]) -> dict[int, StoredChunk]:
        wanted = np.asarray(row_ids, np.int64)
        found: dict[int, StoredChunk] = {}
        for store, positions in self._split(wanted):
            found.update(store.get_rows(wanted[positions].tolist()))
        return found

    def get_by_chunk_ids(self, chunk_ids: Sequence[str]) -> list[StoredChunk]:
        by_id = {c.chunk_id: c for store in self._stores
                 for c in store.get_by_chunk_ids(chunk_ids)}
        return [by_id[c] for c in chunk_ids if c in by_id]

    def chunks_of(self, source: str) -> list[StoredChunk]:
        return sorted((c for store in self._stores for c in store.chunks_of(source)),
                      key=lambda c: c.row_id)

    def sparse_of(self, row_ids: Sequence[int]) -> dict[int, dict[int, float]]:
        wanted = np.asarray(row_ids, np.int64)
        found: dict[int, dict[int, float]] = {}
        for store, positions in self._split(wanted):
            found.update(store.sparse_of(wanted[positions].tolist()))
        return found

    def files(self) -> dict[str, FileRecord]:
        with self._catalog_lock:
            return file_records(self.catalog)

    def meta(self) -> dict[str, Any]:
        with self._catalog_lock:
            return {k: json.loads(v)
                    for k, v in self.catalog.execute("SELECT key, value FROM meta")}

    def memory_bytes(self) -> int:
        return sum(store.memory_bytes() for store in self._stores)

    # --- editing (a build) ---------------------------------------------------------------------

    def _writable(self) -> HybridStore:
        if self.delta is None or self.read_only:
            raise sqlite3.OperationalError("attempt to write a readonly index version")
        return self.delta

    def _hide(self, segment: HybridStore, rows: Iterable[int]) -> None:
        segment.hide(np.union1d(segment.hidden, np.asarray(list(rows), np.int64)))
        self._deleted.update(int(r) for r in rows)

    def add(self, chunk_ids: Sequence[str], texts: Sequence[str],
            metadatas: Sequence[dict[str, Any]], dense: np.ndarray,
            sparse: Sequence[dict[int, float]]) -> list[int]:
        """New chunks go to the delta; a chunk id served by a base segment is hidden there
        (and shown again if the delta refuses the add: all or none)."""
        delta = self._writable()
        replaced = [(segment, segment.row_ids_for(chunk_ids)) for segment in self.segments]
        before = [(segment, segment.hidden) for segment, rows in replaced if rows]
        for segment, rows in replaced:
            if rows:
                self._hide(segment, rows)
        try:
            return delta.add(chunk_ids, texts, metadatas, dense, sparse)
        except BaseException:
            for segment, hidden in before:
                segment.hide(hidden)
            self._deleted = {int(r) for s in self.segments for r in s.hidden.tolist()}
            raise

    def delete_chunks(self, chunk_ids: Iterable[str]) -> int:
        delta, wanted = self._writable(), list(chunk_ids)
        removed = delta.delete_chunks(wanted)
        for segment in self.segments:
            rows = segment.row_ids_for(wanted)
            if rows:
                self._hide(segment, rows)
                removed += len(rows)
        return removed

    def delete_source(self, source: str) -> int:
        delta = self._writable()
        removed = delta.delete_source(source)
        for segment in self.segments:
            rows = segment.rows_of([source])
            if len(rows):
                self._hide(segment, rows.tolist())
                removed += len(rows)
        with self.catalog:
            self.catalog.execute("DELETE FROM files WHERE source = ?", (source,))
        return removed

    def record_file(self, record: FileRecord) -> None:
        self._writable()
        with self.catalog:
            self.catalog.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                (record.source, record.file_hash, record.mtime, record.title,
                 record.chunk_count, record.indexed_at))

    def set_meta(self, **values: Any) -> None:
        self._writable()
        with self.catalog:
            self.catalog.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                     [(k, json.dumps(v)) for k, v in values.items()])

    def save(self) -> None:
        """Write the delta segment; `finish` writes the version's plan."""
        self._writable().save()
        self.catalog.commit()

    def close(self) -> None:
        for store in self._stores:
            store.close()
        self.catalog.close()

    def quantizer(self) -> Any | None:
        """The trained centroids of the largest IVF segment, for the next one."""
        ivf = [s for s in self.segments if s.is_ivf]
        return trained_quantizer(max(ivf, key=lambda s: s.count)._index) if ivf else None

    def should_compact(self, policy: CompactionPolicy) -> bool:
        if not self.segments or self.delta is None:
            return False
        live = max(1, self.count)
        added = self.delta.count + sum(e.rows for e in self.entries[1:])
        changed = len(self._deleted) + added
        return (changed > policy.changed_fraction * live
                or len(self.segments) + 1 > policy.max_segments)

    def compact(self) -> None:
        """Copy every live row of the base segments into the delta: it becomes the only
        segment (rows keep their ids)."""
        delta = self._writable()
        for segment in self.segments:
            delta.absorb(segment)
        for segment in self.segments:
            segment.close()
        self.segments, self.entries, self._deleted = [], [], set()
        self.delta_first = 0

    def plan(self, delta_entry: SegmentEntry | None) -> VersionPlan:
        entries = list(self.entries) + ([delta_entry] if delta_entry is not None else [])
        next_row = max([self.next_row] + [e.end_row for e in entries])
        return VersionPlan(dim=self.dim, next_row=next_row, segments=entries,
                           deleted=np.asarray(sorted(self._deleted), np.int64))


def new_catalog(folder: Path, copy_from: Path | None) -> sqlite3.Connection:
    """The version's files + meta tables, copied from the base version's docstore (kilobytes
    to a few megabytes: never its chunks, even from a pre-segment version that holds them)."""
    db = sqlite3.connect(str(folder / DOCSTORE_FILE), check_same_thread=False)
    db.execute("PRAGMA synchronous=OFF")
    db.executescript(SCHEMA)
    if copy_from is not None:
        db.execute("ATTACH DATABASE ? AS base", (str(copy_from),))
        try:
            with db:
                db.execute("INSERT OR REPLACE INTO files SELECT * FROM base.files")
                db.execute("INSERT OR REPLACE INTO meta SELECT * FROM base.meta")
        finally:
            db.execute("DETACH DATABASE base")
    return db


def open_catalog(folder: Path) -> sqlite3.Connection:
    return connect_read_only(folder / DOCSTORE_FILE, check_same_thread=False)


def segment_entry(name: str, folder: Path, store: HybridStore, first_row: int,
                  end_row: int) -> SegmentEntry:
    return SegmentEntry(name=name, first_row=first_row, end_row=end_row, rows=store.count,
                        ivf=store.dense_choice.wants_ivf(store.count),
                        files=file_facts(folder, SEGMENT_FILES))


__all__ = ["DELETED_FILE", "SEGMENTS_FILE", "CompactionPolicy", "SegmentedStore",
           "new_catalog", "open_segment", "segment_entry"]
