"""The embedding cache: every chunk's dense and sparse vectors by (model identity, max passage
tokens, the exact embedded text), in one SQLite file beside the index versions.

Why: a one-line edit should re-embed one chunk, not the whole file; and a build killed at 90%
should resume, not start over. Batches are committed as they complete (WAL: a killed process
loses at most the batch in flight). Nothing is unpickled: vectors are little-endian float32 and
int32 arrays, each entry checked against its SHA-256 when read; an entry that fails the check
is dropped and embedded again. A file that is not this cache (corrupt, another program's, a
newer format) is set aside with a warning and a new cache started.

Which versions use which entries is kept too (`uses`), so entries no kept version uses are
pruned after each publish.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from retrieval.errors import IndexDiskFull

if TYPE_CHECKING:
    from retrieval.embeddings import BGEM3Embeddings

logger = logging.getLogger(__name__)

CACHE_FILE = "embedding-cache.sqlite3"
FORMAT = "kotae-embedding-cache"
SCHEMA = 1
PROBE_TEXT = "kotae embedding cache probe: 経費精算の締め切りは毎月25日です。"

SparseWeights = dict[int, float]


class EmbeddingCacheFull(IndexDiskFull):
    """The disk filled up while the cache was written; the build fails, the index is as it was
    (`Indexer.run` says so in its own words, naming the index folder)."""


@dataclass(frozen=True)
class CachedVectors:
    dense: np.ndarray  # (dim,) float32
    sparse: SparseWeights


@dataclass(frozen=True)
class CacheSize:
    bytes: int
    chunks: int

    def describe(self) -> str:
        """`3.2 MiB, 1200 chunks` (binary units, as the loaders' size limit)."""
        size = f"{self.bytes} bytes"
        for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if self.bytes >= scale:
                size = f"{self.bytes / scale:.1f} {unit}"
                break
        return f"{size}, {self.chunks} chunks"


def cache_path(index_dir: Path) -> Path:
    return Path(index_dir) / CACHE_FILE


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def model_identity(embeddings: BGEM3Embeddings) -> str:
    """What makes two embeddings of one text equal: the checkpoint, the passage token limit and
    the outputs themselves (a probe text's vectors), so a retrained checkpoint under the same
    name, another device or fp16 never shares entries. Loads the model."""
    probe = embeddings.encode_passages([PROBE_TEXT])
    digest = hashlib.sha256(np.ascontiguousarray(probe.dense, "<f4").tobytes())
    digest.update(json.dumps(sorted(probe.sparse[0].items())).encode())
    return json.dumps({"model": embeddings.model_name_or_path,
                       "passage_max_tokens": embeddings.passage_max_tokens,
                       "dim": int(probe.dense.shape[1]), "probe": digest.hexdigest()},
                      sort_keys=True)


def _checksum(dense: bytes, ids: bytes, weights: bytes) -> bytes:
    digest = hashlib.sha256(dense)
    digest.update(ids)
    digest.update(weights)
    return digest.digest()


_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (id INTEGER PRIMARY KEY, identity TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS entries (
    model INTEGER NOT NULL, text_key BLOB NOT NULL, dim INTEGER NOT NULL,
    dense BLOB NOT NULL, sparse_ids BLOB NOT NULL, sparse_weights BLOB NOT NULL,
    checksum BLOB NOT NULL, PRIMARY KEY (model, text_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uses (
    version TEXT NOT NULL, source TEXT NOT NULL, model INTEGER NOT NULL, text_key BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS uses_by_version ON uses (version, source);
CREATE INDEX IF NOT EXISTS uses_by_entry ON uses (model, text_key);
"""


class EmbeddingCache:
    """One cache file, opened by the indexer while it holds the index lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = self._open()

    # --- opening -------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._connect_checked()
        except (sqlite3.DatabaseError, _NotThisCache) as error:
            if not self.path.exists() or not _damaged(error):
                raise  # cannot open or locked: not a reason to throw a cache away
            aside = self.path.with_name(self.path.name + ".bad")
            logger.warning("embedding cache %s is not usable (%s); set aside as %s and "
                           "started anew: chunks are embedded again", self.path, error,
                           aside.name)
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            os.replace(self.path, aside)
            return self._connect_checked()

    def _connect_checked(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a killed process loses nothing committed
            tables = {row[0] for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")
                db.execute("VACUUM")  # auto_vacuum takes effect on an empty file only so
                db.executescript(_SCHEMA_SQL)
                db.executemany("INSERT INTO meta VALUES (?, ?)",
                               [("format", FORMAT), ("schema", str(SCHEMA))])
            else:
                meta = dict(db.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
                if meta.get("format") != FORMAT or meta.get("schema") != str(SCHEMA):
                    raise _NotThisCache(f"format {meta.get('format')!r} schema "
                                        f"{meta.get('schema')!r}, expected {FORMAT!r} {SCHEMA}")
                missing = {"models", "entries", "uses"} - tables
                if missing:
                    raise _NotThisCache(f"tables missing: {', '.join(sorted(missing))}")
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        self._db.close()

    # --- entries -------------------------------------------------------------------------------

    def model_id(self, identity: str) -> int:
        """The number entries of `identity` are stored under (created on first use)."""
        with self._writing():
            self._db.execute("INSERT OR IGNORE INTO models (identity) VALUES (?)", (identity,))
        return int(self._db.execute("SELECT id FROM models WHERE identity = ?",
                                    (identity,)).fetchone()[0])

    def get_many(self, model: int, keys: Sequence[bytes]) -> dict[bytes, CachedVectors]:
        """Entries found and intact; a damaged one is dropped (and so embedded again)."""
        found: dict[bytes, CachedVectors] = {}
        damaged: list[bytes] = []
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            part = unique[start:start + 500]
            rows = self._db.execute(
                "SELECT text_key, dim, dense, sparse_ids, sparse_weights, checksum FROM entries "
                f"WHERE model = ? AND text_key IN ({','.join('?' * len(part))})", (model, *part))
            for key, dim, dense, ids, weights, checksum in rows:
                vectors = _decode(dim, dense, ids, weights, checksum)
                if vectors is None:
                    damaged.append(key)
                else:
                    found[key] = vectors
        if damaged:
            logger.warning("embedding cache %s: %d entries failed their checksum; embedding "
                           "them again", self.path, len(damaged))
            with self._writing():
                self._db.executemany("DELETE FROM entries WHERE model = ? AND text_key = ?",
                                     [(model, key) for key in damaged])
        return found

    def put_many(self, model: int, keys: Sequence[bytes], dense: np.ndarray,
                 sparse: Sequence[SparseWeights]) -> None:
        """One transaction: a batch is in the cache whole or not at all."""
        rows = []
        for key, vector, weights in zip(keys, dense, sparse, strict=True):
            dense_bytes = np.ascontiguousarray(vector, "<f4").tobytes()
            ids = np.fromiter(weights.keys(), "<i4", len(weights)).tobytes()
            values = np.fromiter(weights.values(), "<f4", len(weights)).tobytes()
            rows.append((model, key, int(vector.shape[0]), dense_bytes, ids, values,
                         _checksum(dense_bytes, ids, values)))
        with self._writing():
            self._db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 rows)

    # --- which versions use what ---------------------------------------------------------------

    def start_version(self, version: str, base: str | None) -> None:
        """`version` begins as a copy of what `base` uses (a build edits the served version)."""
        with self._writing():
            self._db.execute("DELETE FROM uses WHERE version = ?", (version,))
            if base is not None:
                self._db.execute("INSERT INTO uses SELECT ?, source, model, text_key FROM uses "
                                 "WHERE version = ?", (version, base))

    def drop_source(self, version: str, source: str) -> None:
        with self._writing():
            self._db.execute("DELETE FROM uses WHERE version = ? AND source = ?",
                             (version, source))

    def use(self, version: str, source: str, model: int, keys: Iterable[bytes]) -> None:
        with self._writing():
            self._db.execute("DELETE FROM uses WHERE version = ? AND source = ?",
                             (version, source))
            self._db.executemany("INSERT INTO uses VALUES (?, ?, ?, ?)",
                                 [(version, source, model, key) for key in keys])

    def prune(self, keep_versions: Iterable[str]) -> int:
        """Forget versions not in `keep_versions` and every entry no kept version uses
        (what an unfinished build embedded and nothing published took up goes too)."""
        keep = sorted(set(keep_versions))
        with self._writing():
            self._db.execute(f"DELETE FROM uses WHERE version NOT IN ({','.join('?' * len(keep))})",
                             keep)
            removed = self._db.execute(
                "DELETE FROM entries WHERE NOT EXISTS (SELECT 1 FROM uses WHERE "
                "uses.model = entries.model AND uses.text_key = entries.text_key)").rowcount
        self._db.execute("PRAGMA incremental_vacuum")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if removed:
            logger.info("embedding cache: pruned %d entries no index version uses", removed)
        return int(removed)

    def entry_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM entries").fetchone()[0])

    # --- writing -------------------------------------------------------------------------------

    def _writing(self) -> _Transaction:
        return _Transaction(self._db, self.path)


def _damaged(error: Exception) -> bool:
    """Whether `error` says the file is not (or no longer) a readable cache."""
    if isinstance(error, _NotThisCache):
        return True
    text = str(error).lower()
    return any(word in text for word in ("not a database", "malformed", "corrupt",
                                          "no such table", "file is encrypted"))


class _NotThisCache(Exception):
    """The file is SQLite but not a kotae embedding cache of this schema."""


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT; a full disk becomes EmbeddingCacheFull, said once."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db, self._path = db, path

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 _tb: object) -> None:
        if kind is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.OperationalError as failed:
                error = failed
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        if isinstance(error, sqlite3.OperationalError) and "full" in str(error).lower():
            raise EmbeddingCacheFull(
                f"The disk holding {self._path} is full: the build stopped and the index keeps "
                "serving its current version. Free some space and run the index again; what "
                "was embedded so far is kept.") from error
        if kind is None and error is not None:
            raise error


def _decode(dim: int, dense: bytes, ids: bytes, weights: bytes,
            checksum: bytes) -> CachedVectors | None:
    if (len(dense) != dim * 4 or len(ids) != len(weights)
            or _checksum(dense, ids, weights) != checksum):
        return None
    vector = np.frombuffer(dense, "<f4").astype(np.float32)
    tokens = np.frombuffer(ids, "<i4").tolist()
    values = np.frombuffer(weights, "<f4").tolist()
    return CachedVectors(dense=vector, sparse=dict(zip(tokens, values, strict=True)))


def cache_size(index_dir: Path) -> CacheSize | None:
    """Bytes on disk (with the WAL) and entries, read-only; None when there is no cache yet.
    For `kotae status`: never creates or repairs anything."""
    path = cache_path(index_dir)
    if not path.exists():
        return None
    size = sum(Path(f"{path}{suffix}").stat().st_size for suffix in ("", "-wal")
               if Path(f"{path}{suffix}").exists())
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2)
        try:
            chunks = int(db.execute("SELECT count(*) FROM entries").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        chunks = 0  # unreadable: the next build sets it aside
    return CacheSize(bytes=size, chunks=chunks)

