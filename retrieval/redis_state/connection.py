"""The connection to Redis: opened from KOTAE_REDIS_URL, checked with PING, and — for the
bot's per-event use — a link that knows whether Redis answered last time.

Timeouts are short (0.5 s to connect, 0.5 s per reply) and there is one immediate retry (a
pooled connection gone stale after a Redis restart), never redis-py's default backoff: an
event must be acknowledged within Slack's 3 s, and a caller with a fallback wants the failure
fast rather than late — an unreachable Redis costs one event at most ~1 s, then `RedisLink`
skips it until its next probe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from retrieval.errors import KotaeError

if TYPE_CHECKING:
    from redis import Redis

logger = logging.getLogger(__name__)

SETTING = "KOTAE_REDIS_URL"
T = TypeVar("T")


class RedisUnavailable(KotaeError):
    """Redis (KOTAE_REDIS_URL) cannot be reached, or refused a command."""


def shown_url(url: str) -> str:
    """`url` as messages and logs may show it: the password masked, the query (which may
    carry `password=`) left out."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    netloc = f"{userinfo}@{hostport}" if at else hostport
    return f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else "(not a URL)"


def connect(url: str, *, timeout_s: float = 0.5) -> Redis:
    """A client for `url`, answering PING. Raises RedisUnavailable, in one line naming
    KOTAE_REDIS_URL (and never its password), when it does not."""
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        raise RedisUnavailable(f"{SETTING} is set, but the redis package is not installed: "
                               "pip install 'kotae[scale]'") from None
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                      socket_connect_timeout=timeout_s,
                                      retry=Retry(NoBackoff(), 1))
    except ValueError as error:  # not a redis://, rediss:// or unix:// URL
        raise RedisUnavailable(f"{SETTING}={shown_url(url)}: {error}") from None
    try:
        client.ping()
    except redis.RedisError as error:
        client.close()
        raise RedisUnavailable(f"cannot reach Redis at {shown_url(url)} ({SETTING}): "
                               f"{reason(error)}") from None
    return client


def reason(error: BaseException) -> str:
    """What went wrong, in a few words (redis-py's messages name host and port, never the
    password)."""
    return str(error).strip().rstrip(".") or type(error).__name__


class RedisLink:
    """A Redis client for calls that have a fallback, and whether Redis answered last time.

    While Redis does not answer, `call` raises RedisUnavailable at once, trying Redis again
    at most once per `probe_interval_s` (not one connection attempt per event); the operator
    reads one line when Redis is lost (`lost`: what this process does meanwhile) and one when
    it answers again (`back`) — never one per event.
    """

    def __init__(self, client: Redis, url: str, *, prefix: str = "kotae:",
                 lost: str = "", back: str = "", probe_interval_s: float = 1.0) -> None:
        self.client = client
        self.shown_url = shown_url(url)
        self.prefix = prefix
        self._lost, self._back = lost, back
        self._probe_interval_s = probe_interval_s
        self._state = threading.Lock()
        self._down_since: float | None = None
        self._last_try = 0.0

    @classmethod
    def open(cls, url: str, *, prefix: str = "kotae:", lost: str = "", back: str = "",
             probe_interval_s: float = 1.0) -> RedisLink:
        """Connect and PING now: an unreachable Redis stops a start-up (RedisUnavailable)."""
        return cls(connect(url), url, prefix=prefix, lost=lost, back=back,
                   probe_interval_s=probe_interval_s)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def up(self) -> bool:
        """Whether Redis answered the last call."""
        return self._down_since is None

    def call(self, command: Callable[[Redis], T]) -> T:
        """`command(client)`; RedisUnavailable when Redis does not answer (or was not
        answering a moment ago)."""
        from redis import RedisError

        with self._state:
            now = time.monotonic()
            if self._down_since is not None and now - self._last_try < self._probe_interval_s:
                raise RedisUnavailable(self._down_message())
            self._last_try = now
        try:
            result = command(self.client)
        except RedisError as error:
            self._went_down(error)
            raise RedisUnavailable(self._down_message()) from error
        self._answered()
        return result

    def _went_down(self, error: BaseException) -> None:
        with self._state:
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
        if first:
            logger.error("Redis at %s (%s) is unreachable: %s.%s", self.shown_url, SETTING,
                         reason(error), f" {self._lost}" if self._lost else "")

    def _answered(self) -> None:
        with self._state:
            down_since, self._down_since = self._down_since, None
        if down_since is not None:
            logger.warning("Redis at %s answers again after %.0fs.%s", self.shown_url,
                           time.monotonic() - down_since, f" {self._back}" if self._back else "")

    def _down_message(self) -> str:
        return f"Redis at {self.shown_url} ({SETTING}) is unreachable"

    def close(self) -> None:
        self.client.close()
