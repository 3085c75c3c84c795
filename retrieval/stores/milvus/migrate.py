"""`kotae migrate-to-milvus`: the served local version (KOTAE_INDEX_DIR) copied into Milvus as
its served version, vectors and all — nothing is re-embedded, no model is loaded.

The copy is an ordinary Milvus build from nothing, under the index lock: a failure or Ctrl-C
discards it and Milvus serves what it served before. The manifest goes along (folders, chunk
settings, files that failed), so the next `kotae index` on Milvus is incremental; the embedding
cache learns that the new version uses what the local one did, so it keeps those entries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from retrieval.errors import IndexMissing
from retrieval.settings import Settings
from retrieval.stores.base import ChunkReader, IndexVersions
from retrieval.stores.milvus.connection import MilvusError, MilvusIncompatible

BATCH = 500  # chunks per read from the local store and per insert into Milvus


@dataclass
class MigrationSummary:
    source_version: str
    version: str
    chunks: int
    files: int
    seconds: float


def _all_rows(store: ChunkReader) -> np.ndarray:
    """The rows of every indexed file; refused when some chunk belongs to none (added through
    the LangChain VectorStore), rather than leaving it behind unsaid."""
    rows = store.rows_of(list(store.files()))
    if len(rows) != store.count:
        raise MilvusError(
            f"{store.count - len(rows)} chunks of the local index belong to no indexed file "
            "(added through the LangChain VectorStore?); nothing was copied. Add them again "
            "with KOTAE_STORE=milvus, or run `kotae index --full` first.")
    return rows


def migrate_local_to_milvus(settings: Settings, *, target: IndexVersions | None = None,
                            progress: Callable[[int, int], None] | None = None,
                            holder: str = "migrate-to-milvus") -> MigrationSummary:
    """Copy the served local version into the Milvus of `settings` (or `target`)."""
    from retrieval.stores import open_store_backend

    started = time.perf_counter()
    local = open_store_backend(settings, "local")
    source_version = local.current_version()
    if source_version is None:
        raise IndexMissing(f"No local index in {local.location} to migrate: build it with "
                           "`kotae index`, or index straight into Milvus with KOTAE_STORE=milvus.")
    manifest = local.manifest(source_version)
    if manifest.get("model") not in (None, settings.embedding_model):
        raise MilvusIncompatible(
            f"The local index {source_version} was built with {manifest.get('model')}, but "
            f"KOTAE_EMBEDDING_MODEL is {settings.embedding_model}: set it to the index's model "
            "to migrate (vectors of two models are never mixed).")
    source = local.open_version(source_version)
    rows = _all_rows(source)
    milvus = target or open_store_backend(settings, "milvus")
    report = progress or (lambda _done, _total: None)
    with milvus.lock(holder):
        milvus.remove_stale_builds()
        dim = int(manifest["dim"])
        build = milvus.begin_build(dim)
        try:
            for start in range(0, len(rows), BATCH):
                batch = rows[start:start + BATCH].tolist()
                chunks = source.get_rows(batch)
                present = [r for r in batch if r in chunks]
                vectors = source.vectors(present)
                weights = source.sparse_of(present)
                build.store.add([chunks[r].chunk_id for r in present],
                                [chunks[r].text for r in present],
                                [chunks[r].metadata for r in present], vectors,
                                [weights.get(r, {}) for r in present])
                report(min(start + BATCH, len(rows)), len(rows))
            files = source.files()
            for record in files.values():
                build.store.record_file(record)
            meta = source.meta()
            build.store.set_meta(**({"model": manifest.get("model")} | meta))
            count = build.store.count
            build.publish({**manifest, "version": build.version, "chunks": count,
                           "files": len(files), "created_at": time.time(),
                           "migrated_from": {"location": local.location,
                                             "version": source_version}})
        except BaseException:
            build.discard()
            raise
        milvus.prune()
        _share_cache_entries(settings, source_version, build.version)
    return MigrationSummary(source_version, build.version, count, len(files),
                            time.perf_counter() - started)


def _share_cache_entries(settings: Settings, source_version: str, version: str) -> None:
    """The embedding cache keeps what the local version used for the Milvus one too."""
    from retrieval.indexing.cache import EmbeddingCache, cache_path

    path = cache_path(settings.index_dir)
    if not path.exists():
        return
    cache = EmbeddingCache(path)
    try:
        cache.start_version(version, base=source_version)
    finally:
        cache.close()
