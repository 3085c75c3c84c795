"""Slack redelivers events it thinks failed (x-slack-retry-num; Socket Mode retry_attempt).
One question must get exactly one answer, even when the retry arrives while the first answer is
still being written — so keys are recorded when the event ARRIVES, not when it is answered."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class RecentEvents:
    """Thread-safe TTL set of event keys (event_id, client_msg_id)."""

    def __init__(self, ttl_s: float = 600.0, max_keys: int = 50_000) -> None:
        self._ttl_s = ttl_s
        self._max_keys = max_keys
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, *keys: object) -> bool:
        """True if none of `keys` was seen within the TTL; records them all either way.
        Keys are read from payloads: what is not a non-empty string is no key."""
        now = time.monotonic()
        present = [key for key in keys if isinstance(key, str) and key]
        with self._lock:
            while self._seen and (next(iter(self._seen.values())) < now - self._ttl_s
                                  or len(self._seen) > self._max_keys):
                self._seen.popitem(last=False)
            duplicate = any(key in self._seen for key in present)
            for key in present:
                self._seen[key] = now
                self._seen.move_to_end(key)
            return not duplicate
