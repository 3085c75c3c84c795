"""The disk filling up mid-build: `kotae index` fails in one line naming the folder, the served
version is untouched, and the embedding cache keeps what was embedded, so a run after space is
freed resumes.

A full disk is made for real, without root: the indexer runs in a child process under a file
size limit (RLIMIT_FSIZE, with SIGXFSZ ignored), so a write past it fails with EFBIG, in
whichever file reaches it first: as with a full disk, the failing write is wherever the build
happens to be. The other ways the layers say "full" (SQLite's SQLITE_FULL, FAISS's and
Python's ENOSPC) are produced on /dev/full and with SQLite's own page limit.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pytest

from retrieval.indexing.cache import CACHE_FILE, cache_size
from retrieval.indexing.diskfull import disk_full_errno
from tests.helpers import kotae_cli_env
from tests.integration.test_indexer_cache import mixed_corpus

ROOT = Path(__file__).resolve().parents[2]
DEV_FULL = Path("/dev/full")


def file_size_limit(limit: int) -> Callable[[], None]:
    """A preexec_fn: writes past `limit` bytes fail with EFBIG instead of killing the child."""

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        _soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    return limited


def kotae(*args: str, env: dict[str, str], limit: int | None = None
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kotae", *args], env=env, capture_output=True,
                          text=True, timeout=180, check=False,
                          preexec_fn=file_size_limit(limit) if limit else None)


@pytest.fixture
def env(tmp_path: Path, tiny_model_dir: Path) -> dict[str, str]:
    return {**kotae_cli_env(tmp_path, tiny_model_dir), "KOTAE_FAISS_DEVICE": "cpu"}


def served(index_dir: Path) -> str:
    return (index_dir / "CURRENT").read_text("utf-8").strip()


def largest_file(folder: Path) -> int:
    return max(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def index_json(env: dict[str, str], docs: Path) -> dict[str, object]:
    done = kotae("index", str(docs), "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_one_clear_line(done: subprocess.CompletedProcess[str], index_dir: Path) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    [line] = lines
    assert line.startswith("error: The build stopped: no space left in ")
    assert str(index_dir) in line and "File too large" in line
    assert "keeps serving" in line and "Free some space" in line


def test_the_cache_filling_the_disk_fails_the_build_and_a_re_run_resumes(
        env: dict[str, str], tmp_path: Path) -> None:
    docs = mixed_corpus(tmp_path / "docs", files=3)
    index_dir = Path(env["KOTAE_INDEX_DIR"])
    first = index_json(env, docs)
    version = served(index_dir)
    cached_before = cache_size(index_dir)
    assert cached_before is not None
    mixed_corpus(docs / "more", files=60, seed=5)  # a few hundred chunks to embed

    # room for a few batches of the new chunks, not for all of them
    done = kotae("index", str(docs), env=env, limit=largest_file(index_dir) + 96 * 1024)

    assert_one_clear_line(done, index_dir)
    assert "chunks embedded before it are kept in the embedding cache" in done.stderr
    assert served(index_dir) == version  # untouched
    assert not list((index_dir / "versions").glob(".building-*"))  # the build is gone
    cached = cache_size(index_dir)
    assert cached is not None and cached.chunks > cached_before.chunks  # the work is kept

    resumed = index_json(env, docs)  # space freed (no limit)
    assert resumed["switched"] and served(index_dir) != version
    assert resumed["chunks_reused"] >= cached.chunks - cached_before.chunks > 0
    assert resumed["chunks_encoded"] == resumed["chunks_embedded"] - resumed["chunks_reused"]
    assert resumed["chunks_total"] == first["chunks_total"] + resumed["chunks_embedded"]


def wordy_corpus(folder: Path, files: int) -> Path:
    """Long files of long chunks of few distinct words: much text (kept by the store) per
    vector and sparse weight (kept by the cache too) and per file (the cache records which
    chunks each file uses, a transaction per file), so the store outgrows the cache."""
    words = ["expense", "report", "deadline", "approval", "travel"]
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(files):
        paragraphs = [f"Paragraph {number}.{part}: " + " ".join(
            words[(number + part + i) % len(words)] for i in range(170)) for part in range(60)]
        (folder / f"doc-{number}.md").write_text(f"# Doc {number}\n\n" + "\n\n".join(
            paragraphs) + "\n", "utf-8")
    return folder


def test_the_store_filling_the_disk_fails_the_build_and_a_re_run_resumes(
        env: dict[str, str], tmp_path: Path) -> None:
    """A rebuild with every vector in the cache: what fills the disk is the build's docstore."""
    docs = wordy_corpus(tmp_path / "docs", files=8)
    index_dir = Path(env["KOTAE_INDEX_DIR"])
    first = index_json(env, docs)
    version = served(index_dir)
    sizes = {path: path.stat().st_size for path in index_dir.rglob("*") if path.is_file()}
    cache = max(size for path, size in sizes.items() if path.name.startswith(CACHE_FILE))
    docstore = max(size for path, size in sizes.items()  # the store's largest file, whatever
                   if not path.name.startswith(CACHE_FILE))  # the backend's layout

    # --full starts the build's store empty; its vectors all come from the cache
    limit = cache + 64 * 1024
    assert docstore > limit + 64 * 1024, "the corpus is too small to fill the docstore first"
    done = kotae("index", "--full", str(docs), env=env, limit=limit)

    assert_one_clear_line(done, index_dir)
    assert served(index_dir) == version
    assert not list((index_dir / "versions").glob(".building-*"))
    again = kotae("index", "--full", str(docs), "--json", env=env)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["switched"] and summary["chunks_encoded"] == 0
    assert summary["chunks_reused"] == summary["chunks_total"] == first["chunks_total"]


# --- each layer's way of saying "full" ---


@pytest.mark.skipif(not DEV_FULL.exists(), reason="no /dev/full here")
def test_faiss_and_numpy_writes_to_a_full_device_are_no_space_left(tmp_path: Path) -> None:
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(8))
    index.add_with_ids(np.ones((5000, 8), np.float32), np.arange(5000))
    with pytest.raises(RuntimeError) as faiss_error:
        faiss.write_index(index, str(DEV_FULL))
    assert disk_full_errno(faiss_error.value, tmp_path) == errno.ENOSPC
    with pytest.raises(OSError) as numpy_error, open(DEV_FULL, "wb") as handle:
        np.savez(handle, data=np.ones(100_000, np.float32))
        handle.flush()
    assert disk_full_errno(numpy_error.value, tmp_path) == errno.ENOSPC


def test_sqlite_full_is_no_space_left_even_when_wrapped(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "small.sqlite3")
    db.execute("CREATE TABLE t (x BLOB)")
    db.execute("PRAGMA max_page_count = 3")
    with pytest.raises(sqlite3.OperationalError) as full:
        db.execute("INSERT INTO t VALUES (?)", (bytes(100_000),))
    db.close()
    assert "database or disk is full" in str(full.value)
    try:
        raise ValueError("raised while handling it") from full.value
    except ValueError as wrapped:
        assert disk_full_errno(wrapped, tmp_path) == errno.ENOSPC


def test_other_errors_are_not_a_full_disk(tmp_path: Path) -> None:
    assert disk_full_errno(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), tmp_path) \
        == errno.EDQUOT
    assert disk_full_errno(PermissionError(errno.EACCES, "denied"), tmp_path) is None
    assert disk_full_errno(RuntimeError("Error in faiss: bad dimension"), tmp_path) is None
    assert disk_full_errno(sqlite3.OperationalError("database is locked"), tmp_path) is None
