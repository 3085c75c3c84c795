"""The local backend's `IndexVersions`: version folders under one index folder (`IndexLayout`),
each a `HybridStore`. A build starts as a copy of the version it edits.

FAISS is imported when a version is opened or built, not for `kotae status`.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrieval.stores.base import FileRecord
from retrieval.stores.local.docstore import DENSE_FILE, DOCSTORE_FILE, read_file_records
from retrieval.stores.local.layout import IndexLayout
from retrieval.stores.served import ServedIndex

if TYPE_CHECKING:
    from retrieval.stores.local.store import HybridStore


@dataclass
class LocalBuild:
    """A `.building-*` folder holding a writable `HybridStore`."""

    version: str
    store: HybridStore
    folder: Path
    layout: IndexLayout

    def publish(self, manifest: Mapping[str, Any]) -> None:
        self.store.save()
        self.store.close()
        self.layout.switch(self.version, self.folder, manifest)

    def discard(self) -> None:
        try:
            self.store.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


class LocalVersions:
    """Versions in `root`; readers open them on `device` (auto | cpu | cuda), builds on CPU."""

    def __init__(self, root: Path, *, device: str = "auto", gpu_fp16: bool = False) -> None:
        self.layout = IndexLayout(root)
        self.device = device
        self.gpu_fp16 = gpu_fp16

    @property
    def location(self) -> str:
        return str(self.layout.root)

    def current_version(self) -> str | None:
        return self.layout.current_version()

    def manifest(self, version: str) -> dict[str, Any]:
        return self.layout.manifest(version)

    def file_records(self, version: str) -> dict[str, FileRecord]:
        return read_file_records(self.layout.version_dir(version))

    def lock(self, holder: str) -> AbstractContextManager[None]:
        return self.layout.lock(holder)

    def remove_stale_builds(self) -> None:
        self.layout.remove_stale_builds()

    def begin_build(self, dim: int, *, base: str | None = None) -> LocalBuild:
        """A build folder beside the served version; with `base`, a copy of that version's
        vectors and docstore (the sparse matrix is rebuilt from the docstore on save)."""
        from retrieval.stores.local.store import HybridStore

        version, folder = self.layout.new_build()
        try:
            if base is not None:
                for name in (DENSE_FILE, DOCSTORE_FILE):
                    shutil.copy2(self.layout.version_dir(base) / name, folder / name)
            store = HybridStore(folder, dim, device="cpu")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return LocalBuild(version, store, folder, self.layout)

    def prune(self, keep_previous: int = 1) -> None:
        current = self.layout.current_version()
        if current is not None:
            self.layout.prune(keep=current, keep_previous=keep_previous)

    def open_version(self, version: str) -> HybridStore:
        from retrieval.stores.local.store import HybridStore

        manifest = self.layout.manifest(version)
        return HybridStore(self.layout.version_dir(version), int(manifest["dim"]),
                           device=self.device, gpu_fp16=self.gpu_fp16, read_only=True)


class LiveIndex(ServedIndex):
    """`ServedIndex` over a local index folder: what `LiveIndex(root, device=...)` was before
    the store seam, kept for the callers and tests that open a folder directly."""

    def __init__(self, root: Path, *, device: str = "auto", gpu_fp16: bool = False,
                 check_interval_s: float = 1.0) -> None:
        versions = LocalVersions(root, device=device, gpu_fp16=gpu_fp16)
        super().__init__(versions, check_interval_s=check_interval_s)
        self.layout = versions.layout
