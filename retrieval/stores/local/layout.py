"""Index versions under KOTAE_INDEX_DIR: build beside the current one, switch with one rename.

    <index_dir>/CURRENT              name of the version being served (replaced atomically)
    <index_dir>/versions/<version>/  manifest.json, segments.json, deleted.npy and a
                                     docstore.sqlite3 of files + meta (a version written
                                     before segments: dense.faiss, sparse.npz and the chunks)
    <index_dir>/segments/<name>/     dense.faiss, sparse.npz, docstore.sqlite3 of one segment
                                     (`retrieval.stores.local.versions` shares them)
    <index_dir>/versions/.building-* a build in progress (removed if a crash left it behind)
    <index_dir>/.lock, lock.json     one indexer at a time, and who holds it
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from retrieval.errors import IndexLocked

MANIFEST_FILE = "manifest.json"
BUILDING_PREFIX = ".building-"


class IndexLayout:
    """Paths and atomic operations of an index folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.segments_dir = self.root / "segments"
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

    def publish(self, version: str, build_dir: Path, manifest: Mapping[str, Any],
                keep_previous: int = 1) -> Path:
        """Make a finished build the served version, then prune older versions."""
        final_dir = self.switch(version, build_dir, manifest)
        self.prune(keep=version, keep_previous=keep_previous)
        return final_dir

    def switch(self, version: str, build_dir: Path, manifest: Mapping[str, Any]) -> Path:
        """Write the manifest, rename the build folder, then swap CURRENT."""
        (build_dir / MANIFEST_FILE).write_text(
            json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
        final_dir = self.version_dir(version)
        build_dir.rename(final_dir)
        tmp = self.root / f"CURRENT.{os.getpid()}.tmp"
        tmp.write_text(version, encoding="utf-8")
        os.replace(tmp, self.current_file)
        return final_dir

    def finished_versions(self) -> list[str]:
        """Published versions, oldest first.

        By the manifest's creation time: names share a one-second timestamp, and two versions
        of the same second would otherwise be ordered by their random suffix."""
        if not self.versions_dir.is_dir():
            return []
        finished = [p.name for p in self.versions_dir.iterdir()
                    if p.is_dir() and not p.name.startswith(BUILDING_PREFIX)]
        return sorted(finished, key=lambda name: (self._created_at(name), name))

    def prune(self, keep: str, keep_previous: int) -> None:
        """Remove finished versions other than `keep`, but the newest `keep_previous`."""
        old = [name for name in self.finished_versions() if name != keep]
        for name in old[:-keep_previous or None]:
            shutil.rmtree(self.version_dir(name), ignore_errors=True)

    def _created_at(self, version: str) -> float:
        try:
            return float(self.manifest(version).get("created_at", 0.0))
        except (OSError, ValueError):  # no or a broken manifest: the oldest, pruned first
            return 0.0

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
