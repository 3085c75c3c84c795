"""A task repeated on its own daemon thread (scheduled refresh, stale-progress sweep,
reindex heartbeat)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Periodic:
    """Runs `action` every `interval_s` (the first time at once with `now=True`) until `stop`.
    An exception is logged with `failure` and the next round runs as usual: on its own thread,
    nothing else would ever see it."""

    def __init__(self, action: Callable[[], object], interval_s: float, *, name: str,
                 failure: str, now: bool = False) -> None:
        self.action, self.interval_s = action, interval_s
        self._failure, self._now = failure, now
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=name)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> Periodic:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """No more rounds; waits up to `timeout_s` for one under way."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)

    def _loop(self) -> None:
        if self._now:
            self._round()
        while not self._stop.wait(self.interval_s):
            self._round()

    def _round(self) -> None:
        try:
            self.action()
        except Exception:
            logger.exception(self._failure)
