"""Milvus Lite served over TCP: one `.db` file shared by several processes on one machine
(`kotae serve` beside `kotae index`, or two replicas), through the same client code path as a
Milvus cluster (KOTAE_MILVUS_URI=http://127.0.0.1:PORT).

An embedded Lite file (KOTAE_MILVUS_URI=path.db) is opened by one process at a time; this is
what lifts that, without Docker. Production deployments run Milvus standalone or a cluster.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

from retrieval.stores.milvus.connection import MilvusUnavailable


class LiteServer:
    """A running `milvus_lite.server.Server` for `db` on host:port; `stop()` ends it."""

    def __init__(self, db: Path, *, host: str = "127.0.0.1", port: int = 19530,
                 start_timeout_s: float = 30.0) -> None:
        from milvus_lite.server import Server

        db = db.expanduser().resolve()
        if not db.parent.is_dir():
            raise MilvusUnavailable(f"cannot serve {db}: the folder {db.parent} does not exist")
        if _listening(host, port):
            raise MilvusUnavailable(f"cannot serve {db} on {host}:{port}: something already "
                                    "listens there (choose another --port)")
        self.db, self.host, self.port = db, host, port
        self._server = Server(str(db), address=f"{host}:{port}")
        if not _quietly(self._server.start):
            raise MilvusUnavailable(f"Milvus Lite could not open {db}: another process holds "
                                    "it (an embedded KOTAE_MILVUS_URI or another server)")
        deadline = time.monotonic() + start_timeout_s
        while not _listening(host, port):
            if time.monotonic() > deadline:
                self.stop()
                raise MilvusUnavailable(f"Milvus Lite did not listen on {host}:{port} within "
                                        f"{start_timeout_s:.0f}s")
            time.sleep(0.1)

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def alive(self) -> bool:
        process = getattr(self._server, "_p", None)
        return process is not None and process.poll() is None

    def stop(self) -> None:
        self._server.stop()


def _quietly(start: Callable[[], bool]) -> bool:
    """milvus_lite logs its refusals on the root logger; we raise them in our words."""
    class _DropMilvusLite(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not record.pathname.endswith(("milvus_lite/server.py",))

    root, drop = logging.getLogger(), _DropMilvusLite()
    root.addFilter(drop)
    try:
        return start()
    finally:
        root.removeFilter(drop)


def _listening(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0
