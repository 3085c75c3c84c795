"""The reindex lock in Redis: one indexer at a time across every replica and `kotae index`.

The lock is one key, `<prefix>index-lock:<index location>`, set with NX and an expiry; its
value names the holder (who, host, pid, since when), so a refused indexer is told who holds
it. A holder renews the expiry every third of it while it runs, so a long reindex keeps the
lock and a crashed one (kill -9, a lost machine) frees it after KOTAE_REDIS_LOCK_TTL_S.
Release and renewal compare the stored token first (redis-py's `Lock`, a Lua script): a
holder whose lock expired never deletes or extends the next holder's. The backend's own lock
is taken too, after Redis's (see `SharedLockVersions`). The key names the index (`scope`):
replicas lock each other out only when they index the same one — one Milvus collection, or
one local folder on one machine. A local index is one machine's: replicas on several machines,
each with its own local folder, each refresh their own (the same path on two machines is two
indexes, not one).

A build is fenced: just before it is published the holder renews the lock once more, and a
lock that was lost (expired, or Redis unreachable) refuses the publish — the build is
discarded and the served version stays as it was. No two indexers ever publish over each
other. (What remains is the window between that last check and the switch, well inside the
expiry.) Redis unreachable when a reindex starts: the reindex is refused, never run unlocked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrieval.errors import IndexLocked, KotaeError
from retrieval.redis_state.connection import SETTING, RedisUnavailable, connect, reason, shown_url
from retrieval.stores.base import ChunkReader, ChunkStore, FileRecord, IndexBuild, IndexVersions

if TYPE_CHECKING:
    from redis import Redis
    from redis.lock import Lock

    from retrieval.settings import Settings

logger = logging.getLogger(__name__)


class IndexLockLost(KotaeError):
    """The index lock expired while its holder was still indexing (its renewals did not
    reach Redis in time): the holder publishes nothing."""


class HeldLock:
    """A lock this process holds, renewed on a daemon thread until `release`."""

    def __init__(self, lock: Lock, ttl_s: float, where: str) -> None:
        self._lock, self._ttl_s, self._where = lock, ttl_s, where
        self._stop = threading.Event()
        self._lost: str | None = None
        self._thread = threading.Thread(target=self._renew, daemon=True,
                                        name="kotae-index-lock")

    def start(self) -> HeldLock:
        self._thread.start()
        return self

    def _renew(self) -> None:
        from redis.exceptions import LockNotOwnedError, RedisError

        warned = False
        while not self._stop.wait(self._ttl_s / 3):
            try:
                self._lock.reacquire()
            except LockNotOwnedError:
                self._lost = "it expired, and may be held by another indexer now"
                logger.error("the index lock in Redis (%s) was lost: %s; this reindex will "
                             "publish nothing", self._where, self._lost)
                return
            except RedisError as error:
                if not warned:
                    warned = True
                    logger.warning("cannot renew the index lock in Redis (%s): %s; this "
                                   "reindex publishes only if Redis answers again within "
                                   "%.0fs", self._where, reason(error), self._ttl_s)
            else:
                warned = False

    def confirm(self) -> None:
        """Still the holder, for another full expiry: the last check before a publish."""
        from redis.exceptions import LockNotOwnedError, RedisError

        if self._lost is None:
            try:
                self._lock.reacquire()
                return
            except LockNotOwnedError:
                self._lost = "it expired, and may be held by another indexer now"
            except RedisError as error:
                raise RedisUnavailable(
                    f"Redis at {self._where} ({SETTING}) became unreachable during the "
                    f"reindex ({reason(error)}): nothing was published, the served index is "
                    "unchanged") from None
        raise IndexLockLost(f"The index lock in Redis ({self._where}) was lost during the "
                            f"reindex ({self._lost}): nothing was published, the served "
                            "index is unchanged. Run it again.")

    def release(self) -> None:
        """Stop renewing and delete the lock — only if it is still this holder's."""
        from redis.exceptions import LockNotOwnedError, RedisError

        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._lock.release()
        except LockNotOwnedError:
            logger.warning("the index lock in Redis (%s) had expired before this indexer "
                           "released it; the next holder's lock was left alone", self._where)
        except RedisError as error:
            logger.warning("cannot release the index lock in Redis (%s): %s; it expires by "
                           "itself within %.0fs", self._where, reason(error), self._ttl_s)


class RedisIndexLock:
    """The lock of the index at `location`; connects (and PINGs) on first use."""

    def __init__(self, url: str, *, key: str | Callable[[], str], ttl_s: float,
                 location: str) -> None:
        self._url, self.ttl_s, self.location = url, ttl_s, location
        # a callable is asked when the lock is first taken: naming a Milvus index reads (or
        # creates) its id in Milvus, which opening the backend for `kotae status` must not do
        self._key, self._key_of = (key, None) if isinstance(key, str) else (None, key)
        self._client: Redis | None = None

    @property
    def key(self) -> str:
        if self._key is None:
            assert self._key_of is not None
            self._key = self._key_of()
        return self._key

    def _redis(self) -> Redis:
        if self._client is None:
            try:
                self._client = connect(self._url)
            except RedisUnavailable as error:
                raise RedisUnavailable(f"{error}; it holds the index lock the replicas "
                                       "share, so nothing was indexed (the served index "
                                       "is unchanged)") from None
        return self._client

    @contextlib.contextmanager
    def hold(self, holder: str) -> Iterator[HeldLock]:
        """IndexLocked (naming the holder) when another indexer has it; RedisUnavailable
        when Redis does not answer — a reindex never runs without the lock."""
        from redis.exceptions import RedisError

        client = self._redis()
        token = json.dumps({"holder": holder, "host": socket.gethostname(),
                            "pid": os.getpid(), "started_at": time.time(),
                            "id": uuid.uuid4().hex})
        lock = client.lock(self.key, timeout=self.ttl_s, blocking=False, thread_local=False)
        try:
            acquired = lock.acquire(token=token)
        except RedisError as error:
            raise RedisUnavailable(
                f"Redis at {shown_url(self._url)} ({SETTING}) is unreachable "
                f"({reason(error)}): without it no replica can be sure that no other is "
                "indexing, so nothing was indexed; the served index is unchanged") from None
        if not acquired:
            raise IndexLocked(self._locked_message())
        held = HeldLock(lock, self.ttl_s, shown_url(self._url)).start()
        try:
            yield held
        finally:
            held.release()

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock now (None: nobody, or Redis did not say)."""
        raw = self._redis().get(self.key)
        try:
            return json.loads(raw) if raw else None
        except ValueError:  # a token not written by kotae
            return None

    def _locked_message(self) -> str:
        from redis.exceptions import RedisError

        try:
            info = self.holder() or {}
        except RedisError:
            info = {}
        since = info.get("started_at")
        started = time.strftime("%H:%M:%S", time.localtime(since)) if since else "unknown time"
        return (f"Another indexer is already running on {self.location} (started by "
                f"{info.get('holder', 'unknown')} on {info.get('host', '?')}, pid "
                f"{info.get('pid', '?')}, at {started}; the lock is in Redis). Wait for it "
                "to finish, then run again.")


class FencedBuild:
    """A build whose publish first confirms that its indexer still holds the lock."""

    def __init__(self, build: IndexBuild, held: HeldLock | None) -> None:
        self._build, self._held = build, held

    @property
    def version(self) -> str:
        return self._build.version

    @property
    def store(self) -> ChunkStore:
        return self._build.store

    def publish(self, manifest: Mapping[str, Any]) -> None:
        if self._held is not None:
            self._held.confirm()  # raises: the indexer discards the build
        self._build.publish(manifest)

    def discard(self) -> None:
        self._build.discard()


class SharedLockVersions:
    """Any backend's `IndexVersions`, locked in Redis first — across every replica — and then
    with the backend's own lock too (a process on this machine started without
    KOTAE_REDIS_URL still sees the indexer). Everything else, the served version included, is
    the backend's."""

    def __init__(self, versions: IndexVersions, lock: RedisIndexLock) -> None:
        self.backend = versions
        self.shared_lock = lock
        self._held: HeldLock | None = None

    @property
    def location(self) -> str:
        return self.backend.location

    def current_version(self) -> str | None:
        return self.backend.current_version()

    def manifest(self, version: str) -> dict[str, Any]:
        return self.backend.manifest(version)

    def file_records(self, version: str) -> dict[str, FileRecord]:
        return self.backend.file_records(version)

    @contextlib.contextmanager
    def lock(self, holder: str) -> Iterator[None]:
        with self.shared_lock.hold(holder) as held, self.backend.lock(holder):
            self._held = held
            try:
                yield
            finally:
                self._held = None

    def remove_stale_builds(self) -> None:
        self.backend.remove_stale_builds()

    def begin_build(self, dim: int, *, base: str | None = None) -> FencedBuild:
        return FencedBuild(self.backend.begin_build(dim, base=base), self._held)

    def prune(self, keep_previous: int = 1) -> None:
        self.backend.prune(keep_previous)

    def open_version(self, version: str) -> ChunkReader:
        return self.backend.open_version(version)

    def __getattr__(self, name: str) -> Any:
        """A backend's optional extras (the local backend's `sizes`, which `kotae status`
        looks for) stay visible through the wrapper."""
        if name == "backend":  # not set yet: never recurse
            raise AttributeError(name)
        return getattr(self.backend, name)


def with_shared_lock(versions: IndexVersions, settings: Settings) -> IndexVersions:
    """`versions` with the lock in Redis when KOTAE_REDIS_URL is set; else as it is."""
    if settings.redis_url is None:
        return versions
    lock = RedisIndexLock(settings.redis_url.get_secret_value(),
                          key=lambda: f"{settings.redis_prefix}index-lock:{scope(versions)}",
                          ttl_s=settings.redis_lock_ttl_s, location=versions.location)
    return SharedLockVersions(versions, lock)


def scope(versions: IndexVersions) -> str:
    """What identifies the index for its lock: the backend's location, and for a local folder
    the machine too (its absolute path alone names a different index on each machine)."""
    from retrieval.stores.local import LocalVersions

    if isinstance(versions, LocalVersions):
        return f"{socket.gethostname()}:{Path(versions.location).resolve()}"
    # a backend that can name its index whatever address reaches it (Milvus: an id stored in
    # the index itself, so two URIs of one server are one lock)
    return str(getattr(versions, "lock_scope", versions.location))
