"""Index backends behind one seam (`retrieval.stores.base`): `open_store_backend(settings)`
gives the `IndexVersions` of the configured backend, and callers use nothing else.

Adding a backend is one module (a class with `IndexVersions`' methods, whose builds and opened
versions follow `IndexBuild`, `ChunkStore` and `ChunkReader`) and one entry in `BACKENDS`.
Openers import their backend when called, so importing this package costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from retrieval.stores.base import (
    ChunkReader,
    ChunkStore,
    FileRecord,
    IndexBuild,
    IndexVersions,
    StoredChunk,
)
from retrieval.stores.served import ServedIndex

if TYPE_CHECKING:
    from retrieval.settings import Settings

BackendOpener = Callable[["Settings"], IndexVersions]


def _open_local(settings: Settings) -> IndexVersions:
    from retrieval.stores.local import LocalVersions
    from retrieval.stores.local.choice import DenseChoice

    dense = DenseChoice(kind=settings.dense_index, ivf_min_chunks=settings.ivf_min_chunks,
                        nprobe=settings.ivf_nprobe, lists=settings.ivf_lists)
    return LocalVersions(settings.index_dir, device=settings.faiss_device, dense=dense)


def _open_milvus(settings: Settings) -> IndexVersions:
    from retrieval.stores.milvus import MilvusVersions

    return MilvusVersions.from_settings(settings)  # connects: unreachable fails at start


BACKENDS: dict[str, BackendOpener] = {"local": _open_local, "milvus": _open_milvus}
DEFAULT_BACKEND = "local"


def open_store_backend(settings: Settings, backend: str | None = None) -> IndexVersions:
    """The index versions of `backend` (default: KOTAE_STORE) as `settings` configure them;
    with KOTAE_REDIS_URL, their lock is in Redis, shared by every replica
    (`retrieval.redis_state`)."""
    from retrieval.redis_state import with_shared_lock

    backend = backend or settings.store
    try:
        opener = BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown index backend {backend!r}; known: "
                         f"{', '.join(sorted(BACKENDS))}") from None
    return with_shared_lock(opener(settings), settings)


__all__ = [
    "BACKENDS",
    "ChunkReader",
    "ChunkStore",
    "FileRecord",
    "IndexBuild",
    "IndexVersions",
    "ServedIndex",
    "StoredChunk",
    "open_store_backend",
]
