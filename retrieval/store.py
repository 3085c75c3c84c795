"""Where the local backend's store used to live; it is `retrieval.stores.local.store` now.
The names stay importable from here (bench scripts and tests use them). Imports FAISS."""

from retrieval.stores.base import FileRecord, StoredChunk
from retrieval.stores.local.docstore import (
    DENSE_FILE,
    DOCSTORE_FILE,
    SPARSE_FILE,
    read_file_records,
)
from retrieval.stores.local.store import HybridStore, faiss_has_gpu

__all__ = [
    "DENSE_FILE",
    "DOCSTORE_FILE",
    "SPARSE_FILE",
    "FileRecord",
    "HybridStore",
    "StoredChunk",
    "faiss_has_gpu",
    "read_file_records",
]
