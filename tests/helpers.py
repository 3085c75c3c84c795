"""Small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], timeout: float = 10.0,
               interval: float = 0.01) -> None:
    """Poll `condition` until it is truthy: the code under test works on its own threads."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not reached within {timeout}s"
        time.sleep(interval)
