"""Small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def wait_until(condition: Callable[[], object], timeout: float = 10.0,
               interval: float = 0.01) -> None:
    """Poll `condition` until it is truthy: the code under test works on its own threads."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not reached within {timeout}s"
        time.sleep(interval)


def interrupt(process: subprocess.Popen, timeout: float = 20.0) -> tuple[int, str]:
    """Ctrl-C, as an operator stops the bot; (exit code, whole output). A process that does
    not stop is killed and the test fails."""
    process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"the process did not stop on Ctrl-C:\n{output}") from None
    return process.returncode, output


def kotae_cli_env(tmp_path: Path, tiny_model_dir: Path) -> dict[str, str]:
    """The environment of a `kotae` subprocess on the tiny model: none of the caller's kotae,
    OpenAI or Slack settings, an index under `tmp_path`, small chunks, no hub."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("KOTAE_", "OPENAI_", "SLACK_"))}
    return {**clean, "KOTAE_EMBEDDING_MODEL": str(tiny_model_dir),
            "KOTAE_EMBEDDING_DEVICE": "cpu", "KOTAE_INDEX_DIR": str(tmp_path / "index"),
            "KOTAE_CHUNK_SIZE": "200", "KOTAE_CHUNK_OVERLAP": "20", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO_ROOT)}
