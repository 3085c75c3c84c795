"""Small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable


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
