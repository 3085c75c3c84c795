"""The version being served, for readers: reopened when the backend switches versions.

A switch written by another process (`kotae index` beside a running bot) is noticed too: the
current version is checked at most once per `check_interval_s`. Readers keep the old version
until the new one is complete, and searches already running finish on the version they began.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from retrieval.errors import IndexMissing
from retrieval.stores.base import ChunkReader, IndexDamaged, IndexVersions

logger = logging.getLogger(__name__)


class ServedIndex:
    """The current version's store, over any `IndexVersions` backend."""

    def __init__(self, versions: IndexVersions, *, check_interval_s: float = 1.0) -> None:
        self.versions = versions
        self._check_interval_s = check_interval_s
        self._lock = threading.Lock()
        self._store: ChunkReader | None = None
        self._version: str | None = None
        self._damaged: str | None = None  # a version that failed its checks: not retried
        self._checked_at = 0.0

    def store(self) -> ChunkReader:
        """The current store; raises IndexMissing when nothing has been built yet."""
        with self._lock:
            now = time.monotonic()
            if self._store is None or now - self._checked_at >= self._check_interval_s:
                self._checked_at = now
                version = self.versions.current_version()
                if version is None and self._store is None:
                    raise IndexMissing(
                        f"No index found in {self.versions.location}. Build it with `kotae "
                        "index` (or `/kotae reindex` in Slack, for admins).")
                if version is not None and version not in (self._version, self._damaged):
                    self._switch(version)
            assert self._store is not None
            return self._store

    def _switch(self, version: str) -> None:
        try:
            store = self.versions.open_version(version)
        except IndexDamaged as error:
            if self._store is None:
                self._open_older(version, error)
                return
            # the version before keeps serving; the error names the damaged file
            self._damaged = version
            logger.error("index version %s not served, %s keeps serving: %s", version,
                         self._version, error)
            return
        # The previous store is not closed: searches still running on it hold their own
        # references, and it is garbage-collected once they finish.
        self._store, self._version = store, version
        logger.info("serving index version %s (%d chunks)", version, store.count)

    def _open_older(self, version: str, error: IndexDamaged) -> None:
        """Starting on a damaged current version: serve the newest older one that opens
        (backends that keep older versions say which: `older_versions`), else raise."""
        older = getattr(self.versions, "older_versions", None)
        for candidate in older(version) if older is not None else []:
            try:
                store = self.versions.open_version(candidate)
            except IndexDamaged:
                continue
            self._store, self._version, self._damaged = store, candidate, version
            logger.error("index version %s not served, serving the previous version %s "
                         "instead: %s", version, candidate, error)
            return
        raise error

    @property
    def version(self) -> str | None:
        """The version being published; answers switch to it on their next search."""
        return self.versions.current_version()

    def manifest(self) -> dict[str, Any] | None:
        """Reads only the manifest: cheap enough for a slash-command ack even when opening
        the index itself would take seconds."""
        version = self.version
        return self.versions.manifest(version) if version else None
