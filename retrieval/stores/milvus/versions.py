"""The Milvus backend's `IndexVersions`: versions as views of shared rows (see `schema`), the
served one named by one pointer row.

    begin_build   reserves a build number and records the build as open (before any row)
    publish       flushes, writes the version record (manifest, floor, build), then upserts
                  the pointer row: the switch, one write; then closes the build record
    discard /     remove the rows an unpublished build inserted and undo the `died` marks it
    remove_stale  set; a crash or Ctrl-C leaves an open build record, cleaned under the lock
    prune         deletes the rows no kept version sees, and the records of dropped versions

Readers poll `current_version()` (one get of the pointer row by primary key) once a second.
Milvus Lite has no aliases (`create_alias` is UNIMPLEMENTED), so the switch is this row on
Lite and on a cluster alike: one code path, tested on Lite.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrieval.stores.base import FileRecord
from retrieval.stores.local.layout import IndexLayout
from retrieval.stores.milvus.build import MilvusBuildStore
from retrieval.stores.milvus.connection import (
    Milvus,
    MilvusConfig,
    MilvusError,
    MilvusIncompatible,
)
from retrieval.stores.milvus.meta import MetaRows
from retrieval.stores.milvus.reader import MilvusReader
from retrieval.stores.milvus.schema import (
    CHUNKS,
    DIED_NEVER,
    FILES,
    META,
    SCHEMA_VERSION,
    create_meta,
    create_missing,
    in_list,
    unseen_by,
    visible,
)

if TYPE_CHECKING:
    from retrieval.settings import Settings

logger = logging.getLogger(__name__)

POINTER, STORE, BUILDS, IDENTITY = "current", "store", "builds", "identity"


def _version_key(version: str) -> str:
    return f"version:{version}"


def _build_key(build: int) -> str:
    return f"build:{build}"


@dataclass
class MilvusBuild:
    """An open build: readers do not see its rows until `publish` moves the pointer."""

    version: str
    store: MilvusBuildStore
    versions: MilvusVersions

    def publish(self, manifest: Mapping[str, Any]) -> None:
        self.versions._publish(self, manifest)

    def discard(self) -> None:
        try:
            self.versions._clean_build(self.store.build)
        except MilvusError as error:  # Milvus went away: the next run's remove_stale cleans
            logger.warning("build %s not cleaned up yet (the next reindex does it): %s",
                           self.version, error)


class MilvusVersions:
    """The versions of one index in Milvus (KOTAE_MILVUS_URI, KOTAE_MILVUS_COLLECTION)."""

    def __init__(self, config: MilvusConfig, *, model: str, lock_dir: Path,
                 milvus: Milvus | None = None) -> None:
        self.config = config
        self.model = model
        self.milvus = milvus or Milvus(config)  # connects: unreachable fails here, at start
        self.meta_rows = MetaRows(self.milvus)
        self._lock_layout = IndexLayout(lock_dir)
        self._ready = False

    @classmethod
    def from_settings(cls, settings: Settings) -> MilvusVersions:
        config = MilvusConfig.from_settings(settings)
        return cls(config, model=settings.embedding_model,
                   lock_dir=config.lock_dir(settings.index_dir))

    @property
    def location(self) -> str:
        return self.config.location

    @property
    def lock_scope(self) -> str:
        """What names this index whatever URI reaches it (a service name, an IP, localhost
        through a port-forward): an id stored in its meta collection, made by the first
        process that asks (only one taking a lock asks: a build follows). For a lock shared
        through Redis (KOTAE_REDIS_URL)."""
        create_meta(self.milvus)
        identity = self.meta_rows.get(IDENTITY)
        if identity is None:
            self.meta_rows.put(IDENTITY, "identity", 0, {"index_id": uuid.uuid4().hex})
            identity = self.meta_rows.get(IDENTITY)  # a concurrent first writer may have won
        return f"milvus index {identity['index_id']}"

    # --- reading -------------------------------------------------------------------------------

    def _exists(self) -> bool:
        if not self._ready:
            self._ready = all(self.milvus.has(kind) for kind in (META, FILES, CHUNKS))
            if self._ready:
                for kind in (META, FILES, CHUNKS):
                    self.milvus.load(kind)
        return self._ready

    def _pointer(self) -> dict[str, Any] | None:
        return self.meta_rows.get(POINTER) if self._exists() else None

    def current_version(self) -> str | None:
        pointer = self._pointer()
        return None if pointer is None else str(pointer["version"])

    def _record(self, version: str) -> dict[str, Any]:
        record = self.meta_rows.get(_version_key(version)) if self._exists() else None
        if record is None:
            raise FileNotFoundError(f"no index version {version} in {self.location}")
        return record

    def manifest(self, version: str) -> dict[str, Any]:
        return dict(self._record(version)["manifest"])

    def file_records(self, version: str) -> dict[str, FileRecord]:
        return self.open_version(version, check_model=False).files()

    def open_version(self, version: str, *, check_model: bool = True) -> MilvusReader:
        record = self._record(version)
        store = self._store_record()
        if check_model:
            self._refuse_another_model(store.get("model"), int(store.get("dim", 0)))
        return MilvusReader(self.milvus, version, int(record["floor"]), int(record["build"]),
                            int(store.get("dim", 0)), record.get("meta"))

    def _store_record(self) -> dict[str, Any]:
        return self.meta_rows.get(STORE) or {}

    def _refuse_another_model(self, model: str | None, dim: int,
                              wanted_dim: int | None = None) -> None:
        if model is None:
            return
        if model != self.model or (wanted_dim is not None and dim != wanted_dim):
            names = ", ".join(self.milvus.name(k) for k in (CHUNKS, FILES, META))
            raise MilvusIncompatible(
                f"The Milvus collections {names} (KOTAE_MILVUS_COLLECTION="
                f"{self.config.prefix}) hold {dim}-d vectors of {model}, but this kotae embeds "
                f"{'' if wanted_dim is None else f'{wanted_dim}-d vectors '}with {self.model} "
                "(KOTAE_EMBEDDING_MODEL). Vectors of two models are never mixed: set another "
                "KOTAE_MILVUS_COLLECTION for a new index, or drop those collections.")

    # --- building ------------------------------------------------------------------------------

    def lock(self, holder: str) -> AbstractContextManager[None]:
        """A file lock beside the Lite file (or under KOTAE_INDEX_DIR for a server); replicas on
        several machines share the Redis lock that wraps this one (KOTAE_REDIS_URL)."""
        return self._lock_layout.lock(holder)

    def begin_build(self, dim: int, *, base: str | None = None) -> MilvusBuild:
        """A build from the served version (`base`, which must be it) or from nothing."""
        create_missing(self.milvus, dim)
        self._ready = False
        self._exists()
        store = self._store_record()
        if store:
            self._refuse_another_model(store.get("model"), int(store.get("dim", 0)), dim)
        else:
            self.meta_rows.put(STORE, "store", 0, {
                "model": self.model, "dim": dim, "index_type": self.config.index_type,
                "schema": SCHEMA_VERSION, "created_at": time.time()})
        pointer = self._pointer()
        if base is not None and (pointer is None or pointer["version"] != base):
            raise ValueError(f"a Milvus build starts from the served version or from nothing, "
                             f"not from {base}")
        builds = self.meta_rows.get(BUILDS) or {"next": 1}
        build = int(builds["next"])
        self.meta_rows.put(BUILDS, "counter", build, {"next": build + 1})
        floor = int(self._record(base)["floor"]) if base is not None else build
        version = time.strftime("v%Y%m%dT%H%M%S", time.gmtime()) + f"-b{build}"
        self.meta_rows.put(_build_key(build), "build", build,
                           {"version": version, "floor": floor, "started_at": time.time()})
        store_view = MilvusBuildStore(self.milvus, version, floor, build, dim,
                                      check_meta=self._check_meta)
        return MilvusBuild(version, store_view, self)

    def _check_meta(self, values: Mapping[str, Any]) -> None:
        store = self._store_record()
        if "model" in values and store.get("model") not in (None, values["model"]):
            raise MilvusIncompatible(
                f"The Milvus collections of KOTAE_MILVUS_COLLECTION={self.config.prefix} hold "
                f"vectors of {store.get('model')}, not {values['model']}: never mixed. Set "
                "another KOTAE_MILVUS_COLLECTION for a new index.")

    def _publish(self, build: MilvusBuild, manifest: Mapping[str, Any]) -> None:
        store = build.store
        store.save()
        self.meta_rows.put(_version_key(build.version), "version", store.build, {
            "build": store.build, "floor": store.floor, "manifest": dict(manifest),
            "meta": store.meta(), "published_at": time.time()})
        self.meta_rows.put(POINTER, "pointer", store.build, {
            "version": build.version, "build": store.build, "floor": store.floor})  # switch
        self.meta_rows.delete(_build_key(store.build))

    def remove_stale_builds(self) -> None:
        """Builds a crash left open; call only while holding the lock. An open build that is
        the served one (a crash after the switch) is only closed."""
        if not self._exists():
            return
        pointer = self._pointer()
        served = int(pointer["build"]) if pointer else None
        for key, build in self.meta_rows.listed("build"):
            if build == served:
                self.meta_rows.delete(key)
            else:
                logger.info("removing build %d, left unfinished", build)
                self._clean_build(build)

    def _clean_build(self, build: int) -> None:
        """Take back everything build `build` did; its version never becomes visible."""
        if not self._exists():
            return
        for kind in (CHUNKS, FILES):
            self.milvus.delete(kind, where=f"born == {build}")
            # ids first: Milvus Lite 2.5.1 fails a query returning a sparse vector field on a
            # collection that holds no row yet ("Growing segment loss raw data")
            while ids := [r["id"] for r in self.milvus.query(kind, f"died == {build}", ["id"],
                                                             limit=1000)]:
                marked = self.milvus.query(kind, in_list("id", ids), ["*"], limit=len(ids))
                for row in marked:
                    row["died"] = DIED_NEVER
                self.milvus.upsert(kind, marked)
        pointer = self._pointer()
        if pointer is None or int(pointer["build"]) != build:
            for key, number in self.meta_rows.listed("version"):
                if number == build:
                    self.meta_rows.delete(key)
        self.meta_rows.delete(_build_key(build))

    def prune(self, keep_previous: int = 1) -> None:
        """Keep the served version and the `keep_previous` published before it; delete the rows
        only the others saw, and their records."""
        pointer = self._pointer()
        if pointer is None:
            return
        served = int(pointer["build"])
        published = [(key, build) for key, build in self.meta_rows.listed("version")
                     if build <= served]
        older = [entry for entry in published if entry[1] < served]
        kept = older[-keep_previous:] if keep_previous > 0 else []
        kept_views = [(self.meta_rows.get(key) or {}, build) for key, build in kept]
        views = [(int(pointer["floor"]), served)] + [
            (int(record["floor"]), build) for record, build in kept_views]
        unseen = " and ".join([f"born <= {served}", *(unseen_by(floor, build)
                                                      for floor, build in views)])
        for kind in (CHUNKS, FILES):
            self.milvus.delete(kind, where=unseen)
        keep_keys = {key for key, _b in kept} | {_version_key(str(pointer["version"]))}
        for key, _build in published:
            if key not in keep_keys:
                self.meta_rows.delete(key)

    def stored_rows(self) -> dict[str, int]:
        """Rows physically in the collections, every version's and any build's (tests and
        benchmarks check what a reindex inserted and what prune dropped)."""
        if not self._exists():
            return {CHUNKS: 0, FILES: 0}
        return {kind: self.milvus.count(kind, "born >= 0") for kind in (CHUNKS, FILES)}

    def size_summary(self, version: str) -> str:
        """For `kotae status`: the served version's rows and what the collections hold in
        all (older versions and unfinished builds are rows too, until prune drops them).
        Bytes and memory are the Milvus server's to report."""
        record = self._record(version)
        served = self.milvus.count(CHUNKS, visible(int(record["floor"]), int(record["build"])))
        stored = self.stored_rows()[CHUNKS]
        return (f"{served} chunk rows in this version, {stored} stored in "
                f"{self.milvus.name(CHUNKS)} (every version and build; sizes: the Milvus "
                "server's metrics)")

    def open_builds(self) -> list[int]:
        return [build for _key, build in self.meta_rows.listed("build")] if self._exists() \
            else []
