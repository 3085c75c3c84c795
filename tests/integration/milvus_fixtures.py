"""Real Milvus for the tests: Milvus Lite 2.5 (the real engine, from the `milvus-lite` wheel),
embedded or served over TCP by `milvus_lite.server.Server` — the code path of a cluster.

Milvus Lite spends ~0.5 s per index it creates, so a module creates its collections once and
each test empties them (`emptied`), which takes milliseconds.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from retrieval.stores.milvus import MilvusConfig, MilvusVersions
from retrieval.stores.milvus.schema import CHUNKS, FILES, META

TEST_MODEL = "test-model"


def lite_config(db: Path | str, prefix: str = "kotae", index_type: str = "FLAT") -> MilvusConfig:
    return MilvusConfig(uri=str(db), token=None, db="default", prefix=prefix,
                        index_type=index_type)


def lite_versions(db: Path | str, prefix: str = "kotae", *,
                  model: str = TEST_MODEL) -> MilvusVersions:
    config = lite_config(db, prefix)
    return MilvusVersions(config, model=model, lock_dir=config.lock_dir(Path(str(db)).parent))


def emptied(versions: MilvusVersions) -> MilvusVersions:
    """The collections of `versions` with no row left (they stay created)."""
    if versions.milvus.has(CHUNKS):
        for kind in (CHUNKS, FILES):
            versions.milvus.delete(kind, where="born >= 0")
        versions.milvus.delete(META, where="part >= 0")
    return versions


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LiteServer:
    """A Milvus Lite server on a localhost TCP port, serving `db` to any number of processes
    at `uri` (http://127.0.0.1:PORT)."""

    def __init__(self, db: Path, port: int | None = None) -> None:
        from milvus_lite.server import Server

        db.parent.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self._server = Server(str(db), address=f"127.0.0.1:{self.port}")
        if not self._server.start():
            raise RuntimeError(f"milvus-lite did not start on {db}")
        _wait_for(self.port)

    def stop(self) -> None:
        """Stop the server process this object started (by its own handle)."""
        self._server.stop()


@contextmanager
def lite_server(db: Path, port: int | None = None) -> Iterator[LiteServer]:
    server = LiteServer(db, port)
    try:
        yield server
    finally:
        server.stop()


def _wait_for(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"milvus-lite is not listening on port {port}")
