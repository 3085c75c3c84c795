"""The local backend: FAISS (exact flat, or IVF for large segments) + SQLite docstore + sparse
CSR `.npz` in immutable segment folders; an index version lists its segments and the rows it
deleted from them (`versions`, `segments`). `HybridStore` lives in
`retrieval.stores.local.store` (it imports FAISS); what this package exports does not."""

from retrieval.stores.local.docstore import (
    DENSE_FILE,
    DOCSTORE_FILE,
    SPARSE_FILE,
    read_file_records,
)
from retrieval.stores.local.layout import BUILDING_PREFIX, MANIFEST_FILE, IndexLayout
from retrieval.stores.local.versions import LiveIndex, LocalBuild, LocalVersions

__all__ = [
    "BUILDING_PREFIX",
    "DENSE_FILE",
    "DOCSTORE_FILE",
    "MANIFEST_FILE",
    "SPARSE_FILE",
    "IndexLayout",
    "LiveIndex",
    "LocalBuild",
    "LocalVersions",
    "read_file_records",
]
