"""The local backend's `IndexVersions`: versions under one index folder (`IndexLayout`), each a
list of immutable segments plus a delete list (`retrieval.stores.local.segments`).

    <index_dir>/segments/<name>/      dense.faiss, sparse.npz, docstore.sqlite3: never edited
                                      once a version lists it; removed when none does
    <index_dir>/versions/<version>/   manifest.json, segments.json, deleted.npy, and a
                                      docstore.sqlite3 holding the files and meta tables only

A build from a version reuses its segments and writes one new segment (named after the
build) with what it adds, so publishing after a small change writes about that change. What
made versions safe stays: a published segment or version is never modified, the switch is one
rename of CURRENT, a crash before it leaves the old version serving (the build folder and its
unlisted segment are removed by the next indexer), old versions and the segments only they
used are pruned. Every file's size (and the small ones' CRC-32) is recorded at publish and
checked at open: a damaged file raises IndexDamaged naming it.

FAISS is imported when a version is opened or built, not for `kotae status`.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrieval.stores.base import ChunkReader, FileRecord
from retrieval.stores.local.choice import DenseChoice
from retrieval.stores.local.docstore import DENSE_FILE, DOCSTORE_FILE, read_file_records
from retrieval.stores.local.layout import BUILDING_PREFIX, IndexLayout
from retrieval.stores.local.plan import has_plan, read_plan, segment_names
from retrieval.stores.served import ServedIndex

if TYPE_CHECKING:
    from retrieval.stores.local.segments import CompactionPolicy, SegmentedStore


@dataclass
class LocalBuild:
    """A `.building-*` version folder and its new segment, through a `SegmentedStore`."""

    version: str
    store: SegmentedStore
    folder: Path
    segment_dir: Path
    layout: IndexLayout
    compaction: CompactionPolicy | None = None

    def publish(self, manifest: Mapping[str, Any]) -> None:
        from retrieval.stores.local.segments import CompactionPolicy, segment_entry

        store = self.store
        if store.should_compact(self.compaction or CompactionPolicy()):
            store.compact()
        store.save()
        assert store.delta is not None
        entry = None
        if store.delta.count or not store.segments:
            rows = store.delta.stored_rows()
            end_row = max(store.next_row, int(rows[-1]) + 1 if len(rows) else 0)
            entry = segment_entry(self.version, self.segment_dir, store.delta,
                                  store.delta_first, end_row)
        plan = store.plan(entry)
        store.close()
        if entry is None:
            shutil.rmtree(self.segment_dir, ignore_errors=True)
        plan.write(self.folder)
        self.layout.switch(self.version, self.folder, manifest)

    def discard(self) -> None:
        try:
            self.store.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            shutil.rmtree(self.segment_dir, ignore_errors=True)


@dataclass
class LocalVersions:
    """Versions in `root`; readers open them on `device` (auto | cpu | cuda), builds on CPU.
    `dense`: which dense index new segments get (flat / IVF by size) and the IVF nprobe."""

    root: Path
    device: str = "auto"
    gpu_fp16: bool = False
    dense: DenseChoice = field(default_factory=DenseChoice)
    compaction: CompactionPolicy | None = None

    def __post_init__(self) -> None:
        self.layout = IndexLayout(Path(self.root))

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

    def older_versions(self, version: str) -> list[str]:
        """The versions kept before `version`, newest first: what a process starting on a
        damaged current version serves instead (ServedIndex)."""
        finished = self.layout.finished_versions()
        if version not in finished:
            return []
        return finished[:finished.index(version)][::-1]

    def remove_stale_builds(self) -> None:
        self.layout.remove_stale_builds()
        self._remove_unused_segments()

    def begin_build(self, dim: int, *, base: str | None = None) -> LocalBuild:
        """A build beside the served version. With `base`, it starts as that version: its
        segments opened read-only (nothing copied) and its files table; from a version
        written before segments, a copy of its vectors and docstore (once)."""
        from retrieval.stores.local.segments import SegmentedStore, new_catalog, open_segment
        from retrieval.stores.local.store import HybridStore

        version, folder = self.layout.new_build()
        segment_dir = self.layout.segments_dir / version
        try:
            segments, entries, next_row, first = [], [], 1, 1
            base_dir = None if base is None else self.layout.version_dir(base)
            if base_dir is not None and has_plan(base_dir):
                plan = read_plan(base_dir)
                entries, next_row, first = plan.segments, plan.next_row, plan.next_row
                segments = [open_segment(self.layout.segments_dir / e.name, e, dim,
                                         device="cpu", gpu_fp16=False, dense=self.dense,
                                         deleted=plan.deleted) for e in entries]
            elif base_dir is not None:  # a pre-segment version: its chunks become a segment
                segment_dir.mkdir(parents=True)
                for name in (DENSE_FILE, DOCSTORE_FILE):
                    shutil.copy2(base_dir / name, segment_dir / name)
                first = 0
            catalog = new_catalog(folder, None if base_dir is None
                                  else base_dir / DOCSTORE_FILE)
            store = SegmentedStore(dim, segments, entries, catalog, next_row,
                                   read_only=False, delta_first=first)
            store.delta = HybridStore(segment_dir, dim, device="cpu", dense=self.dense,
                                      first_row=next_row, quantizer=store.quantizer())
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(segment_dir, ignore_errors=True)
            raise
        return LocalBuild(version, store, folder, segment_dir, self.layout, self.compaction)

    def prune(self, keep_previous: int = 1) -> None:
        current = self.layout.current_version()
        if current is not None:
            self.layout.prune(keep=current, keep_previous=keep_previous)
            self._remove_unused_segments()

    def _remove_unused_segments(self) -> None:
        """Segments no finished version lists and no build in progress writes."""
        if not self.layout.segments_dir.is_dir():
            return
        in_use: set[str] = set()
        for folder in self.layout.versions_dir.iterdir():
            if folder.name.startswith(BUILDING_PREFIX):
                in_use.add(folder.name.removeprefix(BUILDING_PREFIX))
                continue
            names = segment_names(folder)
            if names is None:  # an unreadable plan: it may use any of them
                return
            in_use |= names
        for segment in self.layout.segments_dir.iterdir():
            if segment.name not in in_use:
                shutil.rmtree(segment, ignore_errors=True)

    def open_version(self, version: str) -> ChunkReader:
        """The version read-only; its files are checked first (IndexDamaged names the
        damaged one). Segments are mapped, not read: opening is quick and copies nothing."""
        from retrieval.stores.local.segments import SegmentedStore, open_catalog, open_segment
        from retrieval.stores.local.store import HybridStore

        folder = self.layout.version_dir(version)
        dim = int(self.layout.manifest(version)["dim"])
        if not has_plan(folder):
            return HybridStore(folder, dim, device=self.device, gpu_fp16=self.gpu_fp16,
                               read_only=True, dense=self.dense)
        plan = read_plan(folder)
        segments = []
        try:
            for entry in plan.segments:
                segments.append(open_segment(
                    self.layout.segments_dir / entry.name, entry, dim, device=self.device,
                    gpu_fp16=self.gpu_fp16, dense=self.dense, deleted=plan.deleted))
        except BaseException:
            for segment in segments:
                segment.close()
            raise
        return SegmentedStore(dim, segments, plan.segments, open_catalog(folder),
                              plan.next_row)

    def sizes(self, version: str) -> dict[str, int]:
        """Disk bytes of `version` (its folder and every segment it lists) and the bytes its
        searches keep in memory (dense index and sparse arrays, mapped). No FAISS needed."""
        folder = self.layout.version_dir(version)
        disk = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        if not has_plan(folder):
            memory = sum((folder / n).stat().st_size for n in (DENSE_FILE, "sparse.npz")
                         if (folder / n).exists())
            return {"disk_bytes": disk, "memory_bytes": memory, "segments": 1}
        plan = read_plan(folder, check=False)
        disk += sum(entry.bytes() for entry in plan.segments)
        memory = sum(int(f["bytes"]) for entry in plan.segments
                     for name, f in entry.files.items() if name != DOCSTORE_FILE)
        return {"disk_bytes": disk, "memory_bytes": memory, "segments": len(plan.segments)}

    def size_summary(self, version: str) -> str:
        """For `kotae status`."""
        found = self.sizes(version)
        return (f"{_megabytes(found['disk_bytes'])} on disk, "
                f"{_megabytes(found['memory_bytes'])} in memory (mapped files), "
                f"{found['segments']} segment(s)")


def _megabytes(count: int) -> str:
    return f"{count / 1e6:,.1f} MB"


class LiveIndex(ServedIndex):
    """`ServedIndex` over a local index folder: what `LiveIndex(root, device=...)` was before
    the store seam, kept for the callers and tests that open a folder directly."""

    def __init__(self, root: Path, *, device: str = "auto", gpu_fp16: bool = False,
                 check_interval_s: float = 1.0) -> None:
        versions = LocalVersions(root, device=device, gpu_fp16=gpu_fp16)
        super().__init__(versions, check_interval_s=check_interval_s)
        self.layout = versions.layout
