"""The local backend's `ChunkStore`: one index version on disk, dense vectors in FAISS,
text/metadata/sparse weights in SQLite, and a sparse inverted index for lexical search.

Why not langchain_community's FAISS? It pickles its docstore (unsafe to load from a folder a
user can replace), lets the index and docstore drift apart on a duplicate id, has no GPU
support, reports inverted relevance scores for inner product, and langchain-community is being
sunset. So this is a VectorStore on faiss directly:

- FAISS over L2-normalised vectors (scores are cosine similarities), ids = SQLite row ids, so
  vectors and rows share one key. A store is edited as an exact `IndexIDMap2(IndexFlatIP)`;
  `save()` writes an IVF index instead from `DenseChoice.ivf_min_chunks` chunks on
  (`retrieval.stores.local.dense`). A read-only store maps its files (FAISS
  `IO_FLAG_MMAP_IFC`, the `.npz` arrays with `np.memmap`): opening copies nothing.
- A read-only store can `hide` rows: the rows a later index version deleted from this
  segment (`retrieval.stores.local.segments`); every read then behaves as if they were gone.
- On a GPU the index is cloned there for search; the CPU copy stays authoritative for
  persistence and deletes (GPU indexes support neither `write_index` nor `remove_ids`), and GPU
  searches are serialised because GPU resources are not thread-safe.
- Sparse weights are stored per chunk as two little blobs (token ids, weights) and assembled
  into a scipy CSR matrix (tokens x chunks: an inverted index, a query reads only its tokens'
  postings) for lexical search; saved as a plain uncompressed `.npz`. Scoring adds each query
  token's postings into one array in place (`retrieval.stores.local.impact`, no copy of the
  postings); opt-in, a large segment's unfiltered top-k can read only the heaviest postings of
  each query token (saved beside the CSR arrays in descending weight).
- Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from scipy import sparse as sp

from retrieval.devices import faiss_gpu_available as faiss_has_gpu  # one answer, cached
from retrieval.stores.base import FileRecord, StoredChunk
from retrieval.stores.local.arrays import load_npz_mapped
from retrieval.stores.local.choice import DenseChoice
from retrieval.stores.local.dense import (
    build_ivf,
    empty_flat,
    is_ivf,
    read_dense,
    read_dense_writable,
    search_params,
    stored_ids,
)
from retrieval.stores.local.docstore import (
    CHUNK_COLUMNS,
    DENSE_FILE,
    DOCSTORE_FILE,
    SCHEMA,
    SPARSE_FILE,
    connect_read_only,
    file_records,
    placeholders,
    stored_chunks,
)
from retrieval.stores.local.impact import (
    LexicalChoice,
    all_scores,
    exact_scores,
    impact_order,
    impact_top,
    top_positive,
)

logger = logging.getLogger(__name__)

_SQL_BATCH = 900  # values per `IN (...)`: under SQLite's oldest bound-parameter limit
# Read-only flat segments up to this size are scored with one NumPy product instead of a FAISS
# call: FAISS starts its OpenMP team for every search, which costs milliseconds on a busy
# 2-core machine for the few vectors of a delta segment.
_SMALL_FLAT = 4096


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _sparse_arrays(ids: bytes, weights: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A chunk's stored sparse blobs as (token ids, weights)."""
    return np.frombuffer(ids, np.int32), np.frombuffer(weights, np.float32)


class HybridStore:
    """Dense + sparse + docstore for one index version folder. Thread-safe for readers."""

    def __init__(self, folder: Path, dim: int, *, device: str = "auto", gpu_fp16: bool = False,
                 read_only: bool = False, dense: DenseChoice | None = None, first_row: int = 1,
                 quantizer: Any = None) -> None:
        """`dense`: which index `save()` writes (and a read-only IVF's nprobe); `first_row`:
        the lowest row id new chunks get (a segment's ids stay above its version's others);
        `quantizer`: trained IVF centroids `save()` reuses instead of training anew."""
        self.folder = Path(folder)
        self.dim = dim
        self.read_only = read_only
        self.dense_choice = dense or DenseChoice()
        self._first_row = first_row
        self._quantizer = quantizer
        self._lock = threading.RLock()
        self._gpu_lock = threading.Lock()
        self._db = self._connect()
        dense_path = self.folder / DENSE_FILE
        if dense_path.exists():
            self._index = read_dense(dense_path) if read_only else read_dense_writable(dense_path)
            if self._index.d != dim:
                raise ValueError(f"{dense_path} holds {self._index.d}-d vectors, expected {dim}")
        else:
            self._index = empty_flat(dim)
        self._hidden = np.zeros(0, np.int64)  # rows a later version deleted (see `hide`)
        self._hidden_selector: Any = None
        self._hidden_positions = np.zeros(0, np.int64)
        self._flat_view: tuple[np.ndarray, np.ndarray] | None = None  # see _search_small_flat
        self._sparse_matrix: sp.csr_matrix | None = None
        # the matrix's postings by descending weight per token (see `impact`), made at save or
        # on the first search of a segment saved without them
        self._impact: tuple[np.ndarray, np.ndarray] | None = None
        self.lexical = LexicalChoice()
        # the last filter's FAISS selector and sparse positions (see `_selector`)
        self._selectors: tuple[np.ndarray, Any] | None = None
        self._positions_cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._sparse_rows = np.zeros(0, np.int64)
        self._load_sparse()
        self._gpu_index: Any = None
        self._gpu_resources: Any = None
        self.on_gpu = self._want_gpu(device) and not is_ivf(self._index)
        self._gpu_fp16 = gpu_fp16
        self._gpu_stale = False  # the CPU copy changed since the GPU clone was made
        self._sync_gpu()

    # --- setup ---------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / DOCSTORE_FILE
        if self.read_only:
            db = connect_read_only(path, check_same_thread=False)
        else:
            db = sqlite3.connect(str(path), check_same_thread=False)
            # A store is written only while a version is built; a crashed build is thrown
            # away, so per-commit fsyncs buy nothing. `save()` syncs the finished file once.
            db.execute("PRAGMA synchronous=OFF")
            db.executescript(SCHEMA)
        return db

    @staticmethod
    def _want_gpu(device: str) -> bool:
        if device == "cpu":
            return False
        available = faiss_has_gpu()
        if device == "cuda" and not available:
            raise RuntimeError(
                "KOTAE_FAISS_DEVICE=cuda but this FAISS build has no GPU support or sees no GPU; "
                "install faiss-gpu or set KOTAE_FAISS_DEVICE=cpu"
            )
        return available

    def _sync_gpu(self) -> None:
        """(Re)clone the CPU index onto the GPU after it changed."""
        if not self.on_gpu:
            return
        if self._gpu_resources is None:
            self._gpu_resources = faiss.StandardGpuResources()
        options = faiss.GpuClonerOptions()
        options.useFloat16 = self._gpu_fp16
        with self._gpu_lock:
            self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._index, options)
            self._gpu_stale = False

    # --- writing -------------------------------------------------------------------------------

    def add(
        self,
        chunk_ids: Sequence[str],
        texts: Sequence[str],
        metadatas: Sequence[dict[str, Any]],
        dense: np.ndarray,
        sparse: Sequence[dict[int, float]],
    ) -> list[int]:
        """Insert or replace chunks. Rows and vectors change together or not at all."""
        if not (len(chunk_ids) == len(texts) == len(metadatas) == len(dense) == len(sparse)):
            raise ValueError("chunk_ids, texts, metadatas, dense and sparse differ in length")
        if len(set(chunk_ids)) != len(chunk_ids):
            raise ValueError("duplicate chunk ids in one add")
        vectors = np.ascontiguousarray(dense, dtype=np.float32)
        self._refuse_if_read_only()
        with self._lock:
            replaced = self._row_ids_for(chunk_ids)
            old_vectors: np.ndarray | None = None  # set once the replaced ones left FAISS
            row_ids: list[int] = []
            added = False
            try:
                with self._db:  # one transaction
                    if replaced:
                        self._db.executemany("DELETE FROM chunks WHERE id = ?",
                                             [(r,) for r in replaced])
                    (highest,) = self._db.execute("SELECT MAX(id) FROM chunks").fetchone()
                    next_row = max(self._first_row, (highest or 0) + 1)
                    for chunk_id, text, meta, weights in zip(chunk_ids, texts, metadatas, sparse,
                                                             strict=True):
                        ids = np.fromiter(weights.keys(), np.int32, len(weights))
                        vals = np.fromiter(weights.values(), np.float32, len(weights))
                        self._db.execute(
                            "INSERT INTO chunks (id, chunk_id, source, text, metadata, "
                            "sparse_ids, sparse_weights) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (next_row, chunk_id, str(meta.get("source", "")), text,
                             json.dumps(meta, ensure_ascii=False), ids.tobytes(), vals.tobytes()),
                        )
                        row_ids.append(next_row)
                        next_row += 1
                    # The replaced vectors leave first: SQLite may hand their row ids to the
                    # new rows. Kept aside, they come back if FAISS refuses the new ones, to
                    # match the rows the rollback restores.
                    if replaced:
                        replaced_ids = np.asarray(replaced, np.int64)
                        kept = self._index.reconstruct_batch(replaced_ids)
                        self._index.remove_ids(replaced_ids)
                        old_vectors = kept
                    self._index.add_with_ids(vectors, np.asarray(row_ids, np.int64))
                    added = True
                    self._gpu_stale = self.on_gpu
            except Exception:
                # keep FAISS consistent with the rolled-back rows
                if added:
                    self._index.remove_ids(np.asarray(row_ids, np.int64))
                if old_vectors is not None:
                    self._index.add_with_ids(old_vectors, np.asarray(replaced, np.int64))
                raise
            self._sparse_matrix = None
            self._impact = None
        return row_ids

    def delete_chunks(self, chunk_ids: Iterable[str]) -> int:
        self._refuse_if_read_only()
        with self._lock:
            rows = self._row_ids_for(list(chunk_ids))
            return self._delete_rows(rows)

    def delete_source(self, source: str) -> int:
        self._refuse_if_read_only()
        with self._lock:
            rows = [r for (r,) in self._db.execute("SELECT id FROM chunks WHERE source = ?",
                                                   (source,))]
            removed = self._delete_rows(rows)
            with self._db:
                self._db.execute("DELETE FROM files WHERE source = ?", (source,))
            return removed

    def _delete_rows(self, rows: list[int]) -> int:
        if not rows:
            return 0
        with self._db:
            self._db.executemany("DELETE FROM chunks WHERE id = ?", [(r,) for r in rows])
            self._index.remove_ids(np.asarray(rows, np.int64))
        self._gpu_stale = self.on_gpu
        self._sparse_matrix = None
        self._impact = None
        return len(rows)

    def absorb(self, other: HybridStore) -> int:
        """Copy every row `other` serves (not its hidden ones) into this store, keeping their
        row ids: compaction. Vectors go over in slices (no second full copy)."""
        self._refuse_if_read_only()
        rows = other.stored_rows()
        with self._lock:
            self._db.execute("ATTACH DATABASE ? AS other", (str(other.folder / DOCSTORE_FILE),))
            try:
                with self._db:
                    self._db.execute("CREATE TEMP TABLE IF NOT EXISTS hidden (id INTEGER)")
                    self._db.execute("DELETE FROM temp.hidden")
                    self._db.executemany("INSERT INTO temp.hidden VALUES (?)",
                                         [(int(r),) for r in other.hidden])
                    self._db.execute(
                        "INSERT INTO chunks SELECT * FROM other.chunks "
                        "WHERE id NOT IN (SELECT id FROM temp.hidden)")
            finally:
                self._db.execute("DETACH DATABASE other")
            for start in range(0, len(rows), 65_536):
                batch = rows[start:start + 65_536]
                self._index.add_with_ids(other.vectors(batch), batch)
            self._gpu_stale = self.on_gpu
            self._sparse_matrix = None
            self._impact = None
        return len(rows)

    def _refuse_if_read_only(self) -> None:
        # a mapped FAISS index must never be edited (FAISS would write through freed pages)
        if self.read_only:
            raise sqlite3.OperationalError(f"{self.folder}: attempt to write a readonly store")

    def record_file(self, record: FileRecord) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                (record.source, record.file_hash, record.mtime, record.title,
                 record.chunk_count, record.indexed_at),
            )

    def set_meta(self, **values: Any) -> None:
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in values.items()])

    def save(self) -> None:
        """Write FAISS (CPU copy; IVF when `dense_choice` wants it for this many chunks) and
        the sparse matrix; SQLite is already durable. The store itself keeps its flat index."""
        self._refuse_if_read_only()
        with self._lock:
            self._build_sparse()
            tmp = self.folder / (DENSE_FILE + ".tmp")
            if self.dense_choice.wants_ivf(self.count):
                faiss.write_index(build_ivf(self._index, self.dense_choice, self._quantizer),
                                  str(tmp))
            else:
                faiss.write_index(self._index, str(tmp))
            _fsync(tmp)
            tmp.replace(self.folder / DENSE_FILE)
            matrix = self._sparse_matrix
            assert matrix is not None
            with open(self.folder / (SPARSE_FILE + ".tmp"), "wb") as handle:
                impact = {}  # only where the lexical choice reads them
                if self.lexical.wants_impact(matrix.shape[1]):
                    impact_positions, impact_weights = self._impact_postings()
                    impact = {"impact_positions": impact_positions,
                              "impact_weights": impact_weights}
                np.savez(handle, data=matrix.data, indices=matrix.indices, indptr=matrix.indptr,
                         shape=np.asarray(matrix.shape), rows=self._sparse_rows, **impact)
                handle.flush()
                os.fsync(handle.fileno())
            (self.folder / (SPARSE_FILE + ".tmp")).replace(self.folder / SPARSE_FILE)
            self._db.commit()
            _fsync(self.folder / DOCSTORE_FILE)
            self._sync_gpu()

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._gpu_index = None

    # --- sparse matrix -------------------------------------------------------------------------

    def _load_sparse(self) -> None:
        path = self.folder / SPARSE_FILE
        if not path.exists():
            return
        if self.read_only:  # mapped, not read: no copy, pages shared with other versions
            arrays = load_npz_mapped(path)
        else:
            with np.load(path, allow_pickle=False) as saved:
                arrays = {name: saved[name] for name in saved.files}
        shape = tuple(int(x) for x in arrays["shape"])
        # scipy keeps the given arrays (same dtypes, no copy=True)
        self._sparse_matrix = sp.csr_matrix(
            (arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape)
        self._sparse_rows = np.asarray(arrays["rows"])
        if "impact_positions" in arrays and "impact_weights" in arrays:
            self._impact = (arrays["impact_positions"], arrays["impact_weights"])

    def _impact_postings(self) -> tuple[np.ndarray, np.ndarray]:
        """The impact-ordered postings, made from the matrix if this store has none yet (a
        segment saved before they existed: made once, in memory)."""
        matrix, _rows = self._sparse()
        with self._lock:
            if self._impact is None:
                if self.read_only:
                    logger.info("%s: ordering %d postings by weight (saved without them)",
                                self.folder, matrix.nnz)
                self._impact = impact_order(matrix)
            return self._impact

    def _build_sparse(self) -> None:
        """Rebuild the (tokens x chunks) CSR matrix from the docstore."""
        rows, cols, vals, row_ids = [], [], [], []
        for position, (row_id, ids, weights) in enumerate(self._db.execute(
                "SELECT id, sparse_ids, sparse_weights FROM chunks ORDER BY id")):
            token_ids, token_weights = _sparse_arrays(ids, weights)
            rows.append(token_ids)
            cols.append(np.full(len(token_ids), position, np.int32))
            vals.append(token_weights)
            row_ids.append(row_id)
        vocab = int(max((r.max() for r in rows if len(r)), default=-1)) + 1
        matrix = sp.coo_matrix(
            (np.concatenate(vals) if vals else np.zeros(0, np.float32),
             (np.concatenate(rows) if rows else np.zeros(0, np.int32),
              np.concatenate(cols) if cols else np.zeros(0, np.int32))),
            shape=(vocab, len(row_ids)),
        )
        # Row-major over tokens: a query reads a few token rows across all chunks. Positions
        # ascend within a token's row (sparse_scores_of binary-searches them).
        csr = matrix.tocsr()
        csr.sort_indices()
        self._sparse_matrix = csr
        self._impact = None
        self._sparse_rows = np.asarray(row_ids, np.int64)

    # --- reading -------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return int(self._index.ntotal) - len(self._hidden)

    @property
    def is_ivf(self) -> bool:
        return is_ivf(self._index)

    def hide(self, rows: np.ndarray) -> None:
        """Treat `rows` (row ids of this store) as deleted, in memory only: how a read-only
        segment serves a version that deleted some of its chunks without rewriting it."""
        if not self.read_only:
            raise ValueError("hide() is for read-only segments; delete from a writable store")
        hidden = np.unique(np.asarray(rows, np.int64))
        with self._lock:
            self._hidden = hidden
            self._hidden_selector = None
            if len(hidden):
                mask = np.zeros(int(hidden.max()) + 1, bool)
                mask[hidden] = True
                bitmap = np.packbits(mask, bitorder="little")
                inner = faiss.IDSelectorBitmap(bitmap)
                selector = faiss.IDSelectorNot(inner)
                selector.kotae_keep = (bitmap, inner)  # FAISS keeps pointers to both
                self._hidden_selector = selector
            self._hidden_positions = self._positions_of(hidden, self._sparse_rows)
            self._selectors = None
            self._positions_cache = None

    @property
    def hidden(self) -> np.ndarray:
        return self._hidden

    def stored_rows(self) -> np.ndarray:
        """Every row id this store holds (hidden ones left out), ascending."""
        with self._lock:
            ids = stored_ids(self._index)
        return np.setdiff1d(ids, self._hidden, assume_unique=True) if len(self._hidden) else ids

    def search_dense(self, queries: np.ndarray, k: int, *,
                     rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, row ids) per query; scores are cosine similarities, -1 ids pad.

        With `rows`, FAISS searches those ids only (a bitmap selector in the search
        parameters), so the k results are the best k of them however few they are; on an IVF
        index a filter smaller than what `nprobe` cells hold is scored exactly instead (a probe
        would miss visible rows in other cells). That runs on the CPU copy: GPU flat indexes
        take no selector. An IVF index scans `dense_choice.nprobe` cells: approximate."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if self.read_only and not self.is_ivf and self._index.ntotal <= _SMALL_FLAT:
            return self._search_small_flat(queries, k, rows)
        if rows is not None:
            return self._search_dense_among(queries, k, rows)
        k = max(1, min(k, self.count or 1))
        if self._gpu_stale:
            with self._lock:
                self._sync_gpu()
        if self._gpu_index is not None and not len(self._hidden):
            with self._gpu_lock:  # GPU resources are not thread-safe
                return self._gpu_index.search(queries, k)
        params = search_params(self._index, self.dense_choice.nprobe, self._hidden_selector)
        return self._index.search(queries, k, params=params)

    def _search_small_flat(self, queries: np.ndarray, k: int,
                           rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over a small read-only flat index with NumPy (same scores as FAISS's
        inner product), hidden rows and rows outside `rows` left out."""
        if self._flat_view is None:
            count = int(self._index.ntotal)
            inner = faiss.downcast_index(self._index.index)
            vectors = faiss.rev_swig_ptr(inner.get_xb(), count * self.dim).reshape(
                count, self.dim) if count else np.zeros((0, self.dim), np.float32)
            self._flat_view = (vectors, faiss.vector_to_array(self._index.id_map))
        vectors, ids = self._flat_view
        k = max(1, k)
        keep = np.ones(len(ids), bool)
        if len(self._hidden):
            keep &= ~np.isin(ids, self._hidden)
        if rows is not None:
            keep &= np.isin(ids, rows)
        candidates, candidate_ids = vectors[keep], ids[keep]
        # as many columns as the FAISS calls return: min(k, count), min(k, len(rows)), or k
        # for an empty filter
        columns = (max(1, min(k, self.count or 1)) if rows is None
                   else min(k, len(rows)) if len(rows) else k)
        scores = np.full((len(queries), columns), -np.inf, np.float32)
        found = np.full((len(queries), columns), -1, np.int64)
        top = min(columns, len(candidate_ids))
        if top:
            similarities = queries @ candidates.T
            for q, row in enumerate(similarities):
                best = np.argsort(-row, kind="stable")[:top]
                scores[q, :top], found[q, :top] = row[best], candidate_ids[best]
        return scores, found

    def _search_dense_among(self, queries: np.ndarray, k: int,
                            rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = max(1, k)
        if not len(rows):
            return (np.full((len(queries), k), -np.inf, np.float32),
                    np.full((len(queries), k), -1, np.int64))
        if self.is_ivf and len(rows) <= self._ivf_scanned_per_query():
            return self._search_exact(queries, k, rows)
        params = search_params(self._index, self.dense_choice.nprobe, self._selector(rows))
        return self._index.search(queries, min(k, len(rows)), params=params)

    def _ivf_scanned_per_query(self) -> int:
        """About how many vectors an IVF search reads (nprobe cells of average size) x4:
        scoring that many chosen rows exactly costs about the same."""
        lists = max(1, int(self._index.nlist))
        return 4 * min(self.dense_choice.nprobe, lists) * int(self._index.ntotal) // lists

    def _search_exact(self, queries: np.ndarray, k: int,
                      rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wanted = np.asarray(rows, np.int64)
        if len(self._hidden):
            wanted = wanted[~np.isin(wanted, self._hidden)]
        wanted = wanted[self._holds(wanted)]
        columns = min(k, len(rows))  # what the FAISS search with a selector returns
        scores = np.full((len(queries), columns), -np.inf, np.float32)
        ids = np.full((len(queries), columns), -1, np.int64)
        if not len(wanted):
            return scores, ids
        similarities = queries @ self.vectors(wanted).T
        top = min(columns, len(wanted))
        for q, row in enumerate(similarities):
            best = np.argsort(-row, kind="stable")[:top]
            scores[q, :top], ids[q, :top] = row[best], wanted[best]
        return scores, ids

    def _holds(self, rows: np.ndarray) -> np.ndarray:
        """Which of `rows` this store's sparse matrix (= its docstore at save) lists."""
        _matrix, stored = self._sparse()
        if not len(stored):
            return np.zeros(len(rows), bool)
        positions = np.minimum(np.searchsorted(stored, rows), len(stored) - 1)
        return stored[positions] == rows

    def _selector(self, rows: np.ndarray) -> Any:
        """A bitmap over row ids (cheap to build, one bit test a vector), hidden rows cleared,
        reused while the caller passes the same array (access control caches one per
        audience)."""
        cached = self._selectors
        if cached is not None and cached[0] is rows:
            return cached[1]
        mask = np.zeros(int(rows.max()) + 1, bool)
        mask[rows] = True
        hidden = self._hidden[self._hidden < len(mask)]
        mask[hidden] = False
        bitmap = np.packbits(mask, bitorder="little")
        selector = faiss.IDSelectorBitmap(bitmap)
        selector.kotae_bitmap = bitmap  # FAISS keeps a pointer: the bytes must outlive it
        self._selectors = (rows, selector)
        return selector

    def search_sparse(self, query: dict[int, float], k: int, *, rows: np.ndarray | None = None,
                      exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The top-k positive lexical scores (best first) and their row ids; with `rows`, only
        among those (the others are masked out before ranking). Reads only the postings of
        the query's tokens (added in place, `all_scores`), then `top_positive`.

        Opt-in (`lexical.min_positions`), unfiltered, in a segment that large: only the heaviest
        postings of each query token, their best chunks rescored exactly (`impact_top`; the
        scores returned are exact, the set may miss a chunk that no token ranks high).
        `exact=True` always takes the full path."""
        matrix, row_ids = self._sparse()
        if rows is None and not exact and self.lexical.wants_impact(matrix.shape[1]):
            scores, positions = impact_top(matrix, self._impact_postings(), query, max(1, k),
                                           self.lexical, self._hidden_positions)
            return scores, row_ids[positions]
        scores, row_ids = self._lexical_scores(query, rows)
        top = top_positive(scores, max(1, k))
        return scores[top], row_ids[top]

    def sparse_scores_of(self, query: dict[int, float], row_ids: np.ndarray) -> np.ndarray:
        """The exact lexical score of each of `row_ids`, in that order (0.0 when unknown or
        hidden): each query token's postings (ascending positions) are binary-searched for
        the rows asked, so nothing is copied or scored beyond them."""
        wanted = np.asarray(row_ids, np.int64)
        out = np.zeros(len(wanted), np.float32)
        matrix, stored = self._sparse()
        tokens = [t for t in query if 0 <= t < matrix.shape[0]]
        if not len(wanted) or not tokens or not len(stored):
            return out
        positions = np.minimum(np.searchsorted(stored, wanted), len(stored) - 1)
        known = stored[positions] == wanted
        if len(self._hidden):
            known &= ~np.isin(wanted, self._hidden)
        if not known.any():
            return out
        out[known] = exact_scores(matrix, query, positions[known])
        return out

    def _sparse(self) -> tuple[sp.csr_matrix, np.ndarray]:
        with self._lock:
            if self._sparse_matrix is None:
                self._build_sparse()
            assert self._sparse_matrix is not None
            return self._sparse_matrix, self._sparse_rows

    def _lexical_scores(self, query: dict[int, float],
                        rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Lexical score of every chunk (of `rows`, when given): (scores, row ids), aligned;
        hidden rows score 0.0 (never a top result)."""
        matrix, row_ids = self._sparse()
        positions = None if rows is None else self._positions(rows, row_ids)
        scores = all_scores(matrix, query)
        if len(self._hidden_positions):
            scores[self._hidden_positions] = 0.0
        if positions is None:
            return scores, row_ids
        return scores[positions], row_ids[positions]

    def _positions(self, rows: np.ndarray, row_ids: np.ndarray) -> np.ndarray:
        """Where `rows` sit among the sparse matrix's columns (rows no longer stored left
        out), reused while the same arrays come back."""
        cached = self._positions_cache
        if cached is not None and cached[0] is rows and cached[1] is row_ids:
            return cached[2]
        positions = self._positions_of(rows, row_ids)
        self._positions_cache = (rows, row_ids, positions)
        return positions

    @staticmethod
    def _positions_of(rows: np.ndarray, row_ids: np.ndarray) -> np.ndarray:
        positions = np.searchsorted(row_ids, rows)
        inside = positions < len(row_ids)
        positions = positions[inside]
        return positions[row_ids[positions] == rows[inside]]

    def rows_of(self, sources: Sequence[str]) -> np.ndarray:
        found = [r for (r,) in self._select_in("SELECT id FROM chunks WHERE source IN",
                                               list(dict.fromkeys(sources)))]
        return self._visible(np.unique(np.asarray(found, np.int64)))

    def _visible(self, rows: np.ndarray) -> np.ndarray:
        return rows[~np.isin(rows, self._hidden)] if len(self._hidden) else rows

    def vectors(self, row_ids: Sequence[int]) -> np.ndarray:
        """Stored dense vectors for `row_ids` (from the CPU copy)."""
        if not len(row_ids):
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            return self._index.reconstruct_batch(np.asarray(row_ids, np.int64))

    def get_rows(self, row_ids: Sequence[int]) -> dict[int, StoredChunk]:
        if not len(row_ids):
            return {}
        wanted = self._visible(np.asarray(row_ids, np.int64)).tolist()
        found = self._select_in(f"SELECT {CHUNK_COLUMNS} FROM chunks WHERE id IN", wanted)
        return {chunk.row_id: chunk for chunk in stored_chunks(found)}

    def get_by_chunk_ids(self, chunk_ids: Sequence[str]) -> list[StoredChunk]:
        rows = self.get_rows(self._row_ids_for(chunk_ids))
        by_id = {c.chunk_id: c for c in rows.values()}
        return [by_id[c] for c in chunk_ids if c in by_id]

    def row_ids_for(self, chunk_ids: Sequence[str]) -> list[int]:
        """Row ids of `chunk_ids` that this store serves (hidden ones left out)."""
        return self._visible(np.asarray(self._row_ids_for(chunk_ids), np.int64)).tolist()

    def _row_ids_for(self, chunk_ids: Sequence[str]) -> list[int]:
        return [r for (r,) in self._select_in("SELECT id FROM chunks WHERE chunk_id IN",
                                               list(chunk_ids))]

    def _select_in(self, query: str, values: Sequence[Any]) -> list[Any]:
        """Rows of `query` + ` (?, …)` over `values`, _SQL_BATCH at a time (SQLite caps the
        number of parameters of one statement)."""
        found: list[Any] = []
        with self._lock:
            for start in range(0, len(values), _SQL_BATCH):
                batch = values[start:start + _SQL_BATCH]
                found += self._db.execute(f"{query} ({placeholders(len(batch))})",
                                          batch).fetchall()
        return found

    def files(self) -> dict[str, FileRecord]:
        with self._lock:
            return file_records(self._db)

    def meta(self) -> dict[str, Any]:
        with self._lock:
            return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")}

    def chunks_of(self, source: str) -> list[StoredChunk]:
        with self._lock:
            found = self._db.execute(
                f"SELECT {CHUNK_COLUMNS} FROM chunks WHERE source = ? ORDER BY id",
                (source,)).fetchall()
        hidden = set(self._hidden.tolist())
        return [c for c in stored_chunks(found) if c.row_id not in hidden]

    def sparse_of(self, row_ids: Sequence[int]) -> dict[int, dict[int, float]]:
        if not len(row_ids):
            return {}
        wanted = self._visible(np.asarray(row_ids, np.int64)).tolist()
        found = self._select_in("SELECT id, sparse_ids, sparse_weights FROM chunks WHERE id IN",
                                wanted)
        weights = {r: _sparse_arrays(i, w) for r, i, w in found}
        return {r: dict(zip(ids.tolist(), values.tolist(), strict=True))
                for r, (ids, values) in weights.items()}

    # --- sizes ---------------------------------------------------------------------------------

    def memory_bytes(self) -> int:
        """What the searches read: the dense index file and the sparse arrays (mapped or in
        memory; SQLite rows are read per hit and not counted)."""
        total = 0
        dense = self.folder / DENSE_FILE
        if self.read_only and dense.exists():
            total += dense.stat().st_size
        else:
            total += int(self._index.ntotal) * (self.dim * 4 + 8)
        matrix = self._sparse_matrix
        if matrix is not None:
            total += matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes
        return total + self._sparse_rows.nbytes
