"""The local backend: FAISS `IndexFlatIP` + SQLite docstore + sparse CSR `.npz`, one folder per
index version. `HybridStore` lives in `retrieval.stores.local.store` (it imports FAISS); what
this package exports does not."""

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
