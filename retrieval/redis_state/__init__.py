"""Shared state of several kotae replicas in Redis (KOTAE_REDIS_URL).

Unset, every replica keeps its state in-process (one machine: the default). Set, the replicas
and `kotae index` share through one Redis: event dedupe (`bot.dedupe.SharedEvents`), feedback
(`bot.feedback.SharedFeedbackLog`) and the reindex lock (`SharedLockVersions`, wrapping any
index backend). The served index version is not kept here: the backend holds it, and every
replica polls it (`retrieval.stores.served.ServedIndex`).

`redis` (the `scale` extra) is imported when a connection is opened, never at import.
"""

from retrieval.redis_state.connection import (
    SETTING,
    RedisLink,
    RedisUnavailable,
    connect,
    shown_url,
)
from retrieval.redis_state.lock import (
    HeldLock,
    IndexLockLost,
    RedisIndexLock,
    SharedLockVersions,
    with_shared_lock,
)

__all__ = [
    "SETTING",
    "HeldLock",
    "IndexLockLost",
    "RedisIndexLock",
    "RedisLink",
    "RedisUnavailable",
    "SharedLockVersions",
    "connect",
    "shown_url",
    "with_shared_lock",
]
