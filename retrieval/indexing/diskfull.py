"""Telling a full disk from other write failures, whichever layer of a build hit it.

A build writes through Python (`OSError`), SQLite (the embedding cache, the local store's
docstore) and FAISS (C++, a `RuntimeError`), and each says "the disk is full" its own way:

- Python: `OSError` with errno ENOSPC (no space), EDQUOT (over quota) or EFBIG (over the file
  size limit, `ulimit -f`);
- SQLite: SQLITE_FULL, "database or disk is full", for ENOSPC only. Any other failed write is
  SQLITE_IOERR ("disk I/O error"), and Python's sqlite3 does not expose the errno behind it;
  so for an I/O error the folder is checked: a file there at the process's file size limit
  (EFBIG), or a small probe write that fails for want of space (EDQUOT, ENOSPC);
- FAISS: `write error in <file>: ... (<strerror>)`, the C library's words for the errno.
"""

from __future__ import annotations

import errno
import os
import resource
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_SQLITE_IOERR, _SQLITE_FULL = 10, 13  # primary result codes (the low byte of extended ones)
PROBE_BYTES = 1 << 20  # what a probe writes: a page or a WAL frame would not fit either


def disk_full_errno(error: BaseException, folder: Path) -> int | None:
    """ENOSPC, EDQUOT or EFBIG when `error` (or an error it was raised from) is a write that
    failed for want of space under `folder`; None for any other error."""
    for link in _chain(error):
        if isinstance(link, OSError) and link.errno in DISK_FULL:
            return link.errno
        if isinstance(link, sqlite3.Error):
            code = getattr(link, "sqlite_errorcode", None)
            if (code is not None and code & 0xFF == _SQLITE_FULL) or "disk is full" in str(link):
                return errno.ENOSPC
            if code is not None and code & 0xFF == _SQLITE_IOERR:
                return _check_folder(folder)
        if isinstance(link, RuntimeError):  # FAISS: the errno's text ends its message
            text = str(link)
            for number in DISK_FULL:
                if f"({os.strerror(number)})" in text:
                    return number
    return None


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def _check_folder(folder: Path) -> int | None:
    """After an I/O error without an errno: is `folder` out of room?"""
    limit, _hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if limit != resource.RLIM_INFINITY and _largest_file(folder) + PROBE_BYTES > limit:
        return errno.EFBIG
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".kotae-space-probe-") as probe:
            probe.write(bytes(PROBE_BYTES))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as failed:
        return failed.errno if failed.errno in DISK_FULL else None
    return None


def _largest_file(folder: Path) -> int:
    largest = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                largest = max(largest, os.stat(os.path.join(root, name)).st_size)
            except OSError:  # removed meanwhile
                continue
    return largest
