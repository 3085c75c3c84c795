"""A Milvus index version read through `ChunkReader`: every search and query carries the
version's visibility expression (`schema.visible`), so a reader never sees a build in progress
nor rows a later version deleted.

Candidates come from Milvus — the dense top-k (FLOAT_VECTOR, IP) and the lexical top-k
(SPARSE_FLOAT_VECTOR, IP over bge-m3's weights: exactly the lexical score) — and the retriever
computes the final weighted sum itself, as with the local backend (no `WeightedRanker`, which
normalises scores). A dense search returns its hits' sparse weights and a lexical search its
hits' dense vectors, and both their text and metadata, kept in a small cache by row id (a
row's content never changes), so the retriever's `vectors`, `sparse_scores_of` and `get_rows`
on the candidates cost no further round trip: two per question.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from retrieval.stores.base import FileRecord, StoredChunk
from retrieval.stores.milvus.connection import Milvus
from retrieval.stores.milvus.schema import (
    CHUNKS,
    FILES,
    SPARSE_SEARCH_PARAMS,
    dense_search_params,
    in_list,
    key64,
    visible,
)

MAX_LIMIT = 16_384  # Milvus' top-k and query window
ID_BATCH = 1_000  # ids per fetch (1,000 dense vectors of 1024 floats: 4 MB)
CACHE_ROWS = 8_192
IN_FILTER_ROWS = 2_000  # up to this many given rows, an `id in [...]` filter (see _search)
CHUNK_FIELDS = ["id", "chunk_id", "text", "metadata"]
FILE_FIELDS = ["source", "file_hash", "mtime", "title", "chunk_count", "indexed_at"]


class MilvusReader:
    """One version (floor, build) of the collections; thread-safe (the client is)."""

    def __init__(self, milvus: Milvus, version: str, floor: int, build: int, dim: int,
                 meta: dict[str, Any] | None = None) -> None:
        self.milvus = milvus
        self.version = version
        self.floor, self.build = floor, build
        self.dim = dim
        self._meta = dict(meta or {})
        self.where = visible(floor, build)
        self._cache: OrderedDict[int, tuple[np.ndarray, dict[int, float]]] = OrderedDict()
        self._chunk_cache: OrderedDict[int, StoredChunk] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._rows_filter: tuple[np.ndarray, str, set[int]] | None = None
        self._count: int | None = None

    # --- size ----------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Counted once: a published version never changes."""
        if self._count is None:
            self._count = self.milvus.count(CHUNKS, self.where)
        return self._count

    # --- searching -----------------------------------------------------------------------------

    def _among(self, rows: np.ndarray) -> tuple[str, set[int]]:
        """The version's expression narrowed to `rows`, and `rows` as a set (built once per
        rows array: access control passes the same array for one audience)."""
        cached = self._rows_filter
        if cached is not None and cached[0] is rows:
            return cached[1], cached[2]
        where = f"{self.where} and {in_list('id', rows)}"
        allowed = {int(r) for r in rows}
        self._rows_filter = (rows, where, allowed)
        return where, allowed

    def _search(self, data: list[Any], field: str, k: int, rows: np.ndarray | None,
                params: Any, fields: list[str]) -> list[list[dict[str, Any]]]:
        """The top k hits per query, among `rows` when given.

        Milvus parses an `id in [...]` list on every search: ~4 ms for 500 ids, ~100 ms for
        45,000 (measured at 50k chunks). Past IN_FILTER_ROWS the search runs over the whole
        version, k / share x 2 deep, and keeps the hits among `rows`, deepening until k are
        kept or every match came back: the same top k (the k-th kept hit outranks every row
        of `rows` not returned), without the list."""
        if rows is None:
            return self.milvus.search(CHUNKS, data, field, k, self.where, params(k), fields)
        where, allowed = self._among(rows)
        if len(rows) <= IN_FILTER_ROWS:
            return self.milvus.search(CHUNKS, data, field, k, where, params(k), fields)
        limit = min(MAX_LIMIT, max(k, 2 * k * max(self.count, 1) // len(rows) + 1))
        while True:
            found = self.milvus.search(CHUNKS, data, field, limit, self.where, params(limit),
                                       [])
            kept = [[h for h in hits if int(h["id"]) in allowed][:k] for hits in found]
            if all(len(hits) >= k for hits in kept) or all(
                    len(hits) < limit for hits in found):
                return kept
            if limit >= MAX_LIMIT:  # too few of `rows` near the top: search among them
                return self.milvus.search(CHUNKS, data, field, k, where, params(k), fields)
            limit = min(MAX_LIMIT, limit * 4)

    def search_dense(self, queries: np.ndarray, k: int, *,
                     rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, min(k, MAX_LIMIT))
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        if (rows is not None and not len(rows)) or not len(queries):
            return scores, ids
        index_type = self.milvus.config.index_type
        found = self._search([q for q in queries], "dense", k, rows,
                             lambda limit: dense_search_params(index_type, limit),
                             ["sparse", *CHUNK_FIELDS])
        for i, hits in enumerate(found):
            for j, hit in enumerate(hits[:k]):
                ids[i, j], scores[i, j] = int(hit["id"]), float(hit["distance"])
                self._remember(int(hit["id"]), None, hit.get("entity", {}).get("sparse"))
                self._remember_chunk(int(hit["id"]), hit.get("entity", {}))
        return scores, ids

    def search_sparse(self, query: dict[int, float], k: int, *,
                      rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The top-k positive lexical scores, best first; ties go to the lower row id (as the
        local backend orders them)."""
        weights = {int(t): float(w) for t, w in query.items() if w > 0}
        if not weights or (rows is not None and not len(rows)):
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        k = max(1, min(k, MAX_LIMIT))
        hits = self._search([weights], "sparse", k, rows, lambda _limit: SPARSE_SEARCH_PARAMS,
                            ["dense", *CHUNK_FIELDS])[0]
        ids = np.asarray([int(h["id"]) for h in hits], np.int64)
        scores = np.asarray([float(h["distance"]) for h in hits], np.float32)
        for hit in hits:
            self._remember(int(hit["id"]), hit.get("entity", {}).get("dense"), None)
            self._remember_chunk(int(hit["id"]), hit.get("entity", {}))
        keep = scores > 0
        ids, scores = ids[keep], scores[keep]
        order = np.lexsort((ids, -scores))
        return scores[order], ids[order]

    def sparse_scores_of(self, query: dict[int, float], row_ids: np.ndarray) -> np.ndarray:
        """Query weight x stored weight over shared tokens, from the stored weights."""
        wanted = [int(r) for r in np.asarray(row_ids, np.int64)]
        stored = self._vectors_of(wanted, need="sparse")
        out = np.zeros(len(wanted), np.float32)
        for i, row in enumerate(wanted):
            if row in stored:
                weights = stored[row][1]
                out[i] = sum(w * weights[t] for t, w in query.items() if t in weights)
        return out

    # --- rows ----------------------------------------------------------------------------------

    def _remember(self, row: int, dense: Any, sparse: Any) -> None:
        with self._cache_lock:
            known = self._cache.pop(row, None)
            if dense is None and sparse is None:
                return
            old_dense, old_sparse = known if known else (None, None)
            self._cache[row] = (
                np.asarray(dense, np.float32) if dense is not None else old_dense,
                {int(t): float(w) for t, w in sparse.items()} if sparse is not None
                else old_sparse)
            while len(self._cache) > CACHE_ROWS:
                self._cache.popitem(last=False)

    def _remember_chunk(self, row: int, entity: dict[str, Any]) -> None:
        if "text" not in entity:
            return
        chunk = StoredChunk(row, entity["chunk_id"], entity["text"], dict(entity["metadata"]))
        with self._cache_lock:
            self._chunk_cache.pop(row, None)
            self._chunk_cache[row] = chunk
            while len(self._chunk_cache) > CACHE_ROWS:
                self._chunk_cache.popitem(last=False)

    def _vectors_of(self, rows: list[int], *, need: str) -> dict[int, tuple[np.ndarray, dict]]:
        """(dense, sparse) of `rows` in this version, from the cache or one fetch per batch of
        the missing ones (both views at once); rows not in the version are left out."""
        have: dict[int, tuple[Any, Any]] = {}
        missing: list[int] = []
        with self._cache_lock:
            for row in dict.fromkeys(rows):
                entry = self._cache.get(row)
                if entry is not None and entry[0 if need == "dense" else 1] is not None:
                    have[row] = entry
                else:
                    missing.append(row)
        for start in range(0, len(missing), ID_BATCH):
            batch = missing[start:start + ID_BATCH]
            for found in self.milvus.query(CHUNKS, f"{self.where} and {in_list('id', batch)}",
                                           ["id", "dense", "sparse"], limit=len(batch)):
                row = int(found["id"])
                self._remember(row, found["dense"], found["sparse"])
                have[row] = (np.asarray(found["dense"], np.float32),
                             {int(t): float(w) for t, w in found["sparse"].items()})
        return have

    def vectors(self, row_ids: Sequence[int]) -> np.ndarray:
        rows = [int(r) for r in row_ids]
        if not rows:
            return np.zeros((0, self.dim), np.float32)
        found = self._vectors_of(rows, need="dense")
        missing = [r for r in rows if r not in found]
        if missing:
            raise KeyError(f"rows not in index version {self.version}: {missing[:5]}")
        return np.stack([found[r][0] for r in rows]).astype(np.float32)

    def sparse_of(self, row_ids: Sequence[int]) -> dict[int, dict[int, float]]:
        found = self._vectors_of([int(r) for r in row_ids], need="sparse")
        return {row: dict(views[1]) for row, views in found.items()}

    def _chunks(self, where: str, limit: int | None = None) -> list[StoredChunk]:
        rows = self.milvus.query(CHUNKS, f"{self.where} and {where}", CHUNK_FIELDS,
                                 limit=limit)
        return sorted((StoredChunk(int(r["id"]), r["chunk_id"], r["text"], dict(r["metadata"]))
                       for r in rows), key=lambda c: c.row_id)

    def get_rows(self, row_ids: Sequence[int]) -> dict[int, StoredChunk]:
        """Copies: a caller may edit what it gets (metadata is a dict)."""
        found: dict[int, StoredChunk] = {}
        with self._cache_lock:
            for row in dict.fromkeys(int(r) for r in row_ids):
                if (chunk := self._chunk_cache.get(row)) is not None:
                    found[row] = StoredChunk(row, chunk.chunk_id, chunk.text,
                                             json.loads(json.dumps(chunk.metadata)))
        rows = [r for r in dict.fromkeys(int(r) for r in row_ids) if r not in found]
        for start in range(0, len(rows), ID_BATCH):
            batch = rows[start:start + ID_BATCH]
            found.update((c.row_id, c) for c in self._chunks(in_list("id", batch), len(batch)))
        return found

    def get_by_chunk_ids(self, chunk_ids: Sequence[str]) -> list[StoredChunk]:
        wanted = list(dict.fromkeys(chunk_ids))
        by_id: dict[str, StoredChunk] = {}
        for start in range(0, len(wanted), ID_BATCH):
            batch = wanted[start:start + ID_BATCH]
            for chunk in self._chunks(in_list("chunk_key", map(key64, batch))):
                if chunk.chunk_id in batch:  # a hash collision is not a match
                    by_id[chunk.chunk_id] = chunk
        return [by_id[c] for c in chunk_ids if c in by_id]

    def chunks_of(self, source: str) -> list[StoredChunk]:
        return [c for c in self._chunks(f"source_key == {key64(source)}")
                if c.metadata.get("source", "") == source]

    def rows_of(self, sources: Sequence[str]) -> np.ndarray:
        unique = list(dict.fromkeys(sources))
        found: list[int] = []
        for start in range(0, len(unique), ID_BATCH):
            batch = set(unique[start:start + ID_BATCH])
            rows = self.milvus.query(
                CHUNKS, f"{self.where} and {in_list('source_key', map(key64, batch))}",
                ["id", "source"])
            found += [int(r["id"]) for r in rows if r["source"] in batch]
        return np.unique(np.asarray(found, np.int64))

    # --- files and meta ------------------------------------------------------------------------

    def files(self) -> dict[str, FileRecord]:
        rows = self.milvus.query(FILES, self.where, FILE_FIELDS)
        return {r["source"]: FileRecord(r["source"], r["file_hash"], float(r["mtime"]),
                                        r["title"], int(r["chunk_count"]),
                                        float(r["indexed_at"])) for r in rows}

    def meta(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._meta))
