"""Where the local index versions used to live; they are `retrieval.stores.local` now. The
names stay importable from here (bench scripts and tests use them). Does not import FAISS."""

from retrieval.stores.local.layout import BUILDING_PREFIX, MANIFEST_FILE, IndexLayout
from retrieval.stores.local.versions import LiveIndex

__all__ = ["BUILDING_PREFIX", "MANIFEST_FILE", "IndexLayout", "LiveIndex"]
