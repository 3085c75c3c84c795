"""Slack redelivers events it thinks failed (x-slack-retry-num; Socket Mode retry_attempt).
One question must get exactly one answer, even when the retry arrives while the first answer is
still being written — so keys are recorded when the event ARRIVES, not when it is answered.

One replica remembers keys in memory (`RecentEvents`). Several replicas (KOTAE_REDIS_URL)
share them in Redis (`SharedEvents`), since a retry may reach a replica other than the one
that took the first delivery.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from retrieval.redis_state import RedisUnavailable

if TYPE_CHECKING:
    from redis import Redis

    from retrieval.redis_state import RedisLink

logger = logging.getLogger(__name__)

RETRY_HEADER = "x-slack-retry-num"


def is_redelivery(headers: Mapping[str, Sequence[str] | str] | None) -> bool:
    """Whether Slack says this is a retry: Bolt's request headers carry x-slack-retry-num in
    HTTP mode, and Bolt copies Socket Mode's retry_attempt into the same header."""
    value = (headers or {}).get(RETRY_HEADER)
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = value[0] if value else None
    try:
        return value is not None and int(value) > 0
    except ValueError:  # a retry header that is not a number is still a retry
        return True


def _present(keys: Sequence[object]) -> list[str]:
    """Keys are read from payloads: what is not a non-empty string is no key."""
    return [key for key in keys if isinstance(key, str) and key]


class RecentEvents:
    """Thread-safe TTL set of event keys (event_id, client_msg_id)."""

    def __init__(self, ttl_s: float = 600.0, max_keys: int = 50_000) -> None:
        self._ttl_s = ttl_s
        self._max_keys = max_keys
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, *keys: object, redelivery: bool = False) -> bool:
        """True if none of `keys` was seen within the TTL; records them all either way.
        In one process every delivery has passed here, so a redelivery (a Slack retry) is
        judged by its keys alone."""
        now = time.monotonic()
        present = _present(keys)
        with self._lock:
            while self._seen and (next(iter(self._seen.values())) < now - self._ttl_s
                                  or len(self._seen) > self._max_keys):
                self._seen.popitem(last=False)
            duplicate = any(key in self._seen for key in present)
            for key in present:
                self._seen[key] = now
                self._seen.move_to_end(key)
            return not duplicate


class SharedEvents(RecentEvents):
    """Event keys shared by every replica: `SET key NX EX ttl` in Redis, all keys of one
    event in one transaction (of two replicas taking the same event, exactly one gets every
    key first). Keys are also kept in this process's memory, for when Redis is gone.

    Redis unreachable — the policy, so that nobody gets two answers and nobody is left
    without one: Slack sends an event's FIRST delivery to one endpoint only, so a first
    delivery is answered, deduped by this replica's memory; a REDELIVERY (a retry) may reach
    this replica while another answered the first delivery, so a retry this replica has not
    seen is dropped (logged; the user was answered by whoever got the first delivery). The
    operator reads one line when Redis is lost and one when it is back (`RedisLink`).
    Keys recorded in memory meanwhile are written to Redis as soon as it answers again (a
    background flush, every `flush_interval_s`), so a late retry of them is still a duplicate.
    """

    def __init__(self, link: RedisLink, ttl_s: float = 86_400.0, local_ttl_s: float = 600.0,
                 max_unsynced: int = 50_000, flush_interval_s: float = 1.0) -> None:
        super().__init__(local_ttl_s)
        self._link = link
        self._redis_ttl_s = max(1, int(ttl_s))
        self._flush_interval_s = flush_interval_s
        self._unsynced: deque[str] = deque(maxlen=max_unsynced)
        self._unsynced_lock = threading.Lock()
        self._flusher: threading.Thread | None = None

    def first_time(self, *keys: object, redelivery: bool = False) -> bool:
        present = _present(keys)
        new_here = super().first_time(*present)
        try:  # seen here before is a duplicate even if Redis forgot it (a restart)
            return self._link.call(lambda client: self._claim(client, present)) and new_here
        except RedisUnavailable:
            self._keep_unsynced(present)
        if new_here and redelivery:
            logger.info("dropped Slack's retry of %s: Redis is unreachable, and the replica "
                        "that took its first delivery answers it", present[0] if present
                        else "an event")
            return False
        return new_here

    def _claim(self, client: Redis, keys: list[str]) -> bool:
        """SET NX every key; first when none existed. Keys recorded in memory during an
        outage go too (their answers were given: a late retry of them is a duplicate)."""
        with self._unsynced_lock:
            unsynced = list(self._unsynced)
            self._unsynced.clear()
        pipe = client.pipeline(transaction=True)
        for key in [*unsynced, *keys]:
            pipe.set(self._link.key("event", key), "1", nx=True, ex=self._redis_ttl_s)
        try:
            results = pipe.execute()
        except BaseException:
            self._keep_unsynced(unsynced)
            raise
        return all(results[len(unsynced):])

    def _keep_unsynced(self, keys: list[str]) -> None:
        with self._unsynced_lock:
            self._unsynced.extend(keys)
            if self._unsynced and self._flusher is None:
                self._flusher = threading.Thread(target=self._flush, daemon=True,
                                                 name="kotae-dedupe-flush")
                self._flusher.start()

    def _flush(self) -> None:
        """Until the keys kept during an outage are in Redis (this also notices, and logs,
        that Redis is back when no event arrives)."""
        while True:
            time.sleep(self._flush_interval_s)
            try:
                self._link.call(lambda client: self._claim(client, []))
            except RedisUnavailable:
                continue
            with self._unsynced_lock:
                if not self._unsynced:
                    self._flusher = None
                    return
