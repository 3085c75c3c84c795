"""`kotae milvus-lite-serve`: one Milvus Lite file served over TCP to other processes, a
second server on the same file refused in one line, Ctrl-C stopping it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.helpers import wait_until
from tests.integration.milvus_fixtures import free_port


def _serve(db: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "kotae", "milvus-lite-serve", str(db),
                             "--port", str(port)], env={**os.environ},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_serves_a_lite_file_to_other_processes_until_interrupted(tmp_path: Path) -> None:
    from pymilvus import MilvusClient

    db, port = tmp_path / "kotae.db", free_port()
    server = _serve(db, port)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line and "KOTAE_MILVUS_URI" in line
        client = MilvusClient(f"http://127.0.0.1:{port}", timeout=10)
        client.create_collection("served", dimension=2)
        assert "served" in client.list_collections()
        client.close()

        second = subprocess.run([sys.executable, "-m", "kotae", "milvus-lite-serve", str(db),
                                 "--port", str(free_port())],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert second.stderr.strip().startswith("error:") and "another process holds it" in \
            second.stderr
        assert "Traceback" not in second.stderr and "ERROR" not in second.stderr
    finally:
        server.send_signal(signal.SIGINT)
        code = server.wait(timeout=30)
    assert code == 130

    # the file was released: it opens again, with what was written
    again = _serve(db, port)
    try:
        assert again.stdout is not None and "KOTAE_MILVUS_URI" in again.stdout.readline()
        client = MilvusClient(f"http://127.0.0.1:{port}", timeout=10)
        wait_until(lambda: "served" in client.list_collections(), timeout=10)
        client.close()
    finally:
        again.send_signal(signal.SIGTERM)  # as a service manager stops it
        assert again.wait(timeout=30) == 130
    # the engine (a child process) stopped with it: nothing listens on the port any more
    wait_until(lambda: not _listening(port), timeout=10)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "kotae", "milvus-lite-serve",
                             str(tmp_path / "nowhere" / "kotae.db"), "--port", str(free_port())],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr
