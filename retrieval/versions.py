"""Index versions under KOTAE_INDEX_DIR: build beside the current one, switch with one rename.

    <index_dir>/CURRENT              name of the version being served (replaced atomically)
    <index_dir>/versions/<version>/  dense.faiss, sparse.npz, docstore.sqlite3, manifest.json
    <index_dir>/versions/.building-* a build in progress (removed if a crash left it behind)
    <index_dir>/.lock, lock.json     one indexer at a time, and who holds it

Readers (`LiveIndex`) notice a new CURRENT — also one written by another process — and switch
to it; they keep serving the old version until the new one is complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from retrieval.errors import IndexLocked, IndexMissing

if TYPE_CHECKING:  # FAISS is imported when a version is opened, not for `kotae status`
    from retrieval.store import HybridStore

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
BUILDING_PREFIX = ".building-"


class IndexLayout:
    """Paths and atomic operations of an index folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.current_file = self.root / "CURRENT"
        self.lock_info_file = self.root / "lock.json"

    def current_version(self) -> str | None:
        try:
            name = self.current_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return name if name and (self.versions_dir / name).is_dir() else None

    def version_dir(self, version: str) -> Path:
        return self.versions_dir / version

    def manifest(self, version: str) -> dict[str, Any]:
        return json.loads((self.version_dir(version) / MANIFEST_FILE).read_text("utf-8"))

    def new_build(self) -> tuple[str, Path]:
        version = time.strftime("v%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
        build_dir = self.versions_dir / f"{BUILDING_PREFIX}{version}"
        build_dir.mkdir(parents=True)
        return version, build_dir

    def publish(self, version: str, build_dir: Path, manifest: dict[str, Any],
                keep_previous: int = 1) -> Path:
        """Make a finished build the served version: rename the folder, then swap CURRENT."""
        (build_dir / MANIFEST_FILE).write_text(
            json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
        final_dir = self.version_dir(version)
        build_dir.rename(final_dir)
        tmp = self.root / f"CURRENT.{os.getpid()}.tmp"
        tmp.write_text(version, encoding="utf-8")
        os.replace(tmp, self.current_file)
        self._prune(keep=version, keep_previous=keep_previous)
        return final_dir

    def _prune(self, keep: str, keep_previous: int) -> None:
        finished = sorted(p for p in self.versions_dir.iterdir()
                          if p.is_dir() and not p.name.startswith(BUILDING_PREFIX))
        old = [p for p in finished if p.name != keep][:-keep_previous or None]
        for path in old:
            shutil.rmtree(path, ignore_errors=True)

    def remove_stale_builds(self) -> None:
        """Builds left by a crash or Ctrl-C; only call while holding the lock."""
        if self.versions_dir.is_dir():
            for path in self.versions_dir.glob(f"{BUILDING_PREFIX}*"):
                shutil.rmtree(path, ignore_errors=True)

    @contextlib.contextmanager
    def lock(self, holder: str) -> Iterator[None]:
        """One indexer at a time, across processes; the second is told who holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        file_lock = FileLock(str(self.root / ".lock"))
        try:
            file_lock.acquire(timeout=0)
        except Timeout:
            raise IndexLocked(self._locked_message()) from None
        try:
            self.lock_info_file.write_text(json.dumps({
                "holder": holder, "pid": os.getpid(), "host": socket.gethostname(),
                "started_at": time.time(),
            }), encoding="utf-8")
            yield
        finally:
            self.lock_info_file.unlink(missing_ok=True)
            file_lock.release()

    def lock_holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.lock_info_file.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _locked_message(self) -> str:
        info = self.lock_holder() or {}
        since = info.get("started_at")
        started = time.strftime("%H:%M:%S", time.localtime(since)) if since else "unknown time"
        return (f"Another indexer is already running on {self.root} (started by "
                f"{info.get('holder', 'unknown')}, pid {info.get('pid', '?')}, at {started}). "
                "Wait for it to finish, then run again.")


class LiveIndex:
    """The served index version, reloaded when CURRENT changes (checked at most once a second)."""

    def __init__(self, root: Path, *, device: str = "auto", gpu_fp16: bool = False,
                 check_interval_s: float = 1.0) -> None:
        self.layout = IndexLayout(root)
        self._device = device
        self._gpu_fp16 = gpu_fp16
        self._check_interval_s = check_interval_s
        self._lock = threading.Lock()
        self._store: HybridStore | None = None
        self._version: str | None = None
        self._checked_at = 0.0

    def store(self) -> HybridStore:
        """The current store; raises IndexMissing when nothing has been built yet."""
        with self._lock:
            now = time.monotonic()
            if self._store is None or now - self._checked_at >= self._check_interval_s:
                self._checked_at = now
                version = self.layout.current_version()
                if version is None and self._store is None:
                    raise IndexMissing(
                        f"No index found in {self.layout.root}. Build it with `kotae index` "
                        "(or `/kotae reindex` in Slack, for admins).")
                if version is not None and version != self._version:
                    self._switch(version)
            assert self._store is not None
            return self._store

    def _switch(self, version: str) -> None:
        from retrieval.store import HybridStore

        manifest = self.layout.manifest(version)
        store = HybridStore(self.layout.version_dir(version), int(manifest["dim"]),
                            device=self._device, gpu_fp16=self._gpu_fp16, read_only=True)
        # The previous store is not closed: searches still running on it hold their own
        # references, and it is garbage-collected once they finish.
        self._store, self._version = store, version
        logger.info("serving index version %s (%d chunks)", version, store.count)

    @property
    def version(self) -> str | None:
        """The version being published (CURRENT); answers switch to it on their next search."""
        return self.layout.current_version()

    def manifest(self) -> dict[str, Any] | None:
        """Reads only the small manifest file: cheap enough for a slash-command ack even when
        opening the index itself would take seconds."""
        version = self.version
        return self.layout.manifest(version) if version else None
