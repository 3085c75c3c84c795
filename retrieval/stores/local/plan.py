"""What a local index version consists of (`segments.json` + `deleted.npy`), readable without
FAISS: `kotae status` sizes a version and pruning finds the segments still in use from it.

    {"format": 2, "dim": 1024, "next_row": 1000001,
     "segments": [{"name": ..., "first_row": 1, "end_row": 1000001, "rows": 1000000,
                   "ivf": true, "files": {"dense.faiss": {"bytes": ...}, ...}}],
     "files": {"deleted.npy": {"bytes": ..., "crc32": ...}, "docstore.sqlite3": {...}}}

A version folder without `segments.json` is one written before segments (its chunks in its
own `dense.faiss` / `docstore.sqlite3`); it is still opened as it was.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.stores.local.arrays import check_files, file_facts
from retrieval.stores.local.docstore import DOCSTORE_FILE

SEGMENTS_FILE = "segments.json"
DELETED_FILE = "deleted.npy"
FORMAT = 2


@dataclass
class SegmentEntry:
    name: str
    first_row: int  # row ids of the segment lie in [first_row, end_row)
    end_row: int
    rows: int  # chunks it holds (before the version's deletes)
    ivf: bool
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def bytes(self) -> int:
        return sum(int(f["bytes"]) for f in self.files.values())


@dataclass
class VersionPlan:
    dim: int
    next_row: int
    segments: list[SegmentEntry]
    deleted: np.ndarray  # int64 row ids, ascending
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def write(self, folder: Path) -> None:
        """`deleted.npy`, then `segments.json` with the sizes/checksums of both version files
        (the docstore is final by now): what `read_plan` checks."""
        with open(folder / DELETED_FILE, "wb") as handle:
            np.save(handle, np.asarray(self.deleted, np.int64), allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())
        self.files = file_facts(folder, (DELETED_FILE, DOCSTORE_FILE))
        body = {"format": FORMAT, "dim": self.dim, "next_row": self.next_row,
                "segments": [asdict(s) for s in self.segments], "files": self.files}
        tmp = folder / (SEGMENTS_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(body, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(folder / SEGMENTS_FILE)


def has_plan(folder: Path) -> bool:
    return (folder / SEGMENTS_FILE).exists()


def read_plan(folder: Path, *, check: bool = True) -> VersionPlan:
    """The plan of the version in `folder`; with `check`, its own files are verified
    (IndexDamaged names the first that differs); segments are checked when opened."""
    body = json.loads((folder / SEGMENTS_FILE).read_text(encoding="utf-8"))
    files = body.get("files", {})
    if check:
        check_files(folder, files)
    deleted = (np.load(folder / DELETED_FILE, allow_pickle=False)
               if (folder / DELETED_FILE).exists() else np.zeros(0, np.int64))
    return VersionPlan(dim=int(body["dim"]), next_row=int(body["next_row"]),
                       segments=[SegmentEntry(**s) for s in body["segments"]],
                       deleted=deleted.astype(np.int64), files=files)


def segment_names(folder: Path) -> set[str] | None:
    """Segments a version folder lists: none for a pre-segment version, None when its plan
    cannot be read (then nothing may be pruned on its account)."""
    if not has_plan(folder):
        return set()
    try:
        body = json.loads((folder / SEGMENTS_FILE).read_text(encoding="utf-8"))
        return {s["name"] for s in body["segments"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
