"""The SQLite half of a local index version: file names, schema and the row readers that
`HybridStore` and `read_file_records` share. Imports neither FAISS nor NumPy."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from retrieval.stores.base import FileRecord, StoredChunk

DENSE_FILE = "dense.faiss"
SPARSE_FILE = "sparse.npz"
DOCSTORE_FILE = "docstore.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    chunk_id TEXT UNIQUE NOT NULL,
    source TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    sparse_ids BLOB NOT NULL,
    sparse_weights BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_source ON chunks(source);
CREATE TABLE IF NOT EXISTS files (
    source TEXT PRIMARY KEY,
    file_hash TEXT NOT NULL,
    mtime REAL NOT NULL,
    title TEXT NOT NULL,
    chunk_count INTEGER NOT NULL,
    indexed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

CHUNK_COLUMNS = "id, chunk_id, text, metadata"  # what `stored_chunks` reads


def connect_read_only(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=check_same_thread)


def file_records(db: sqlite3.Connection) -> dict[str, FileRecord]:
    return {row[0]: FileRecord(*row) for row in db.execute("SELECT * FROM files")}


def read_file_records(folder: Path) -> dict[str, FileRecord]:
    """The `files` table of a version, without loading its vectors or sparse matrix (an
    incremental index run needs only this)."""
    db = connect_read_only(Path(folder) / DOCSTORE_FILE)
    try:
        return file_records(db)
    finally:
        db.close()


def stored_chunks(found: Iterable[tuple[int, str, str, str]]) -> list[StoredChunk]:
    """Rows selected as CHUNK_COLUMNS, as chunks."""
    return [StoredChunk(r, cid, text, json.loads(meta)) for r, cid, text, meta in found]


def placeholders(count: int) -> str:
    """`?, ?, ...` for an `IN (...)` of `count` values."""
    return ",".join("?" * count)
