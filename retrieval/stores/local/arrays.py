"""Plain-array files of a local segment, read without copying, and checked before use.

`np.savez` stores each array uncompressed in a zip (`sparse.npz`): the bytes of a member sit
in the file as they would in memory, so `load_npz_mapped` maps them (`np.memmap`) instead of
reading them — opening a million-chunk segment costs no time and no second copy, and the
versions sharing a segment share its pages. Nothing is unpickled.

`file_facts` / `check_files` are what publishing records and opening verifies: every file's
size, and a CRC-32 of the small ones (hashing gigabytes at every open would cost seconds).
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.stores.base import IndexDamaged

CHECKSUM_MAX_BYTES = 64 << 20  # files up to this size get a CRC-32 too (delta segments)

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip member's local file header


def load_npz_mapped(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed `.npz`, memory-mapped read-only."""
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise IndexDamaged(f"{path}: member {info.filename} is compressed", path)
            raw.seek(info.header_offset)
            header = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
            if header[0] != b"PK\x03\x04":
                raise IndexDamaged(f"{path}: broken zip member {info.filename}", path)
            raw.seek(info.header_offset + _LOCAL_HEADER.size + header[-2] + header[-1])
            version = np.lib.format.read_magic(raw)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(raw)
            if dtype.hasobject:
                raise IndexDamaged(f"{path}: {info.filename} holds Python objects", path)
            name = info.filename.removesuffix(".npy")
            count = int(np.prod(shape))
            arrays[name] = (np.zeros(shape, dtype) if count == 0 else np.memmap(
                path, dtype, "r", raw.tell(), shape, "F" if fortran else "C"))
    return arrays


def file_facts(folder: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """What `check_files` compares later: size of each file, CRC-32 of the small ones."""
    facts: dict[str, dict[str, Any]] = {}
    for name in names:
        path = folder / name
        size = path.stat().st_size
        facts[name] = {"bytes": size}
        if size <= CHECKSUM_MAX_BYTES:
            facts[name]["crc32"] = _crc32(path)
    return facts


def check_files(folder: Path, facts: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise IndexDamaged naming the first file that is missing or differs from `facts`."""
    for name, expected in facts.items():
        path = folder / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise IndexDamaged(f"{path} is missing", path) from None
        if size != expected["bytes"]:
            raise IndexDamaged(f"{path} is damaged: {size:,} bytes, {expected['bytes']:,} "
                               "were written", path)
        if "crc32" in expected and _crc32(path) != expected["crc32"]:
            raise IndexDamaged(f"{path} is damaged: its checksum differs from the one "
                               "recorded when it was written", path)


def _crc32(path: Path) -> int:
    value = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            value = zlib.crc32(chunk, value)
    return value
