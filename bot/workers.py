"""Answer work runs here, never on Bolt's listener threads, so acks stay fast under load.

Bolt's default pool has 5 threads; if slow answers ran there, slash commands would wait behind
them and miss Slack's 3-second ack. Here at most `workers` answers are written at once, with a
per-user limit and a bounded waiting line. A job that has waited longer than `notice_after_s`
gets its `on_wait` callback (the bot tells the user they are queued) — not sooner, so a short
wait costs no extra message, and a burst does not spend its CPU on notices while acks are due.

Each answer runs on a daemon thread of its own (the limits above bound how many): when the bot
stops, `drain` waits for them only as long as it is told, and an answer stuck on a slow model
cannot hold the process up the way a pool's workers, joined at exit, would.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

Job = Callable[[], None]

MIN_CHECK_S = 0.01  # the notices thread never waits less, whatever notice_after_s says


@dataclass
class _Pending:
    user: str
    job: Job
    on_wait: Job | None
    on_drop: Job | None = None
    since: float = field(default_factory=time.monotonic)
    noticed: bool = False


class AnswerQueue:
    def __init__(self, workers: int = 4, per_user: int = 2, max_waiting: int = 100,
                 notice_after_s: float = 1.0) -> None:
        self._workers = workers
        self._per_user = per_user
        self._max_waiting = max_waiting
        self._notice_after_s = notice_after_s
        self._lock = threading.Condition()
        self._running: dict[str, int] = {}
        self._running_total = 0
        self._waiting: deque[_Pending] = deque()
        self._closed = False
        threading.Thread(target=self._notify_waiting, name="answer-queue-notices",
                         daemon=True).start()

    def submit(self, user: str, job: Job, on_wait: Job | None = None,
               on_drop: Job | None = None) -> str:
        """Run `job` for `user`: returns "started", "queued" (it will run later; `on_wait`
        runs if it is still waiting after `notice_after_s`, `on_drop` if the bot stops before
        it started), "rejected" (the line is full) or "closed" (the bot is stopping)."""
        with self._lock:
            if self._closed:
                return "closed"
            if self._can_start(user):
                self._start(user, job)
                return "started"
            if len(self._waiting) >= self._max_waiting:
                return "rejected"
            self._waiting.append(_Pending(user, job, on_wait, on_drop))
            self._lock.notify_all()
            return "queued"

    def _can_start(self, user: str) -> bool:
        return (self._running_total < self._workers
                and self._running.get(user, 0) < self._per_user)

    def _start(self, user: str, job: Job) -> None:
        self._running[user] = self._running.get(user, 0) + 1
        self._running_total += 1
        threading.Thread(target=self._run, args=(user, job), name="answer", daemon=True).start()

    def _run(self, user: str, job: Job) -> None:
        try:
            job()
        except Exception:  # a job reports its own failures to the user; this is the last net
            logger.exception("answer job failed")
        finally:
            with self._lock:
                self._running[user] -= 1
                if not self._running[user]:
                    del self._running[user]
                self._running_total -= 1
                if not self._closed:
                    self._start_waiting()
                self._lock.notify_all()

    def _start_waiting(self) -> None:
        for pending in list(self._waiting):
            if self._running_total >= self._workers:
                return
            if self._running.get(pending.user, 0) < self._per_user:
                self._waiting.remove(pending)
                self._start(pending.user, pending.job)

    def _notify_waiting(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                due, next_check = self._due_notices(time.monotonic())
                for pending in due:
                    pending.noticed = True
                if not due:
                    self._lock.wait(timeout=next_check)
            for pending in due:
                try:
                    assert pending.on_wait is not None
                    pending.on_wait()
                except Exception:
                    logger.exception("queued notice failed")

    def _due_notices(self, now: float) -> tuple[list[_Pending], float | None]:
        """The waiting jobs due a notice now, and the seconds until the next one is due: None
        (sleep until `submit` or `shutdown` wakes us) when no other job waits for one. Never 0:
        `wait(0)` would spin."""
        due: list[_Pending] = []
        oldest: float | None = None
        for pending in self._waiting:
            if pending.noticed or not pending.on_wait:
                continue
            if now - pending.since >= self._notice_after_s:
                due.append(pending)
            elif oldest is None or pending.since < oldest:
                oldest = pending.since
        if oldest is None:
            return due, None
        return due, max(MIN_CHECK_S, oldest + self._notice_after_s - now)

    @property
    def busy(self) -> int:
        with self._lock:
            return self._running_total + len(self._waiting)

    def drain(self, timeout_s: float) -> int:
        """Stop: take no more jobs, drop the waiting ones (each `on_drop` runs), and wait up
        to `timeout_s` for the running ones. Returns how many are still running."""
        with self._lock:
            self._closed = True
            dropped = list(self._waiting)
            self._waiting.clear()
            self._lock.notify_all()
        for pending in dropped:
            if pending.on_drop is not None:
                try:
                    pending.on_drop()
                except Exception:
                    logger.exception("telling a waiting asker that the bot stops failed")
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._running_total and (left := deadline - time.monotonic()) > 0:
                self._lock.wait(timeout=None if left == float("inf") else left)
            return self._running_total

    def shutdown(self, wait: bool = True) -> None:
        """`drain` with no time limit (`wait`) or none at all."""
        self.drain(float("inf") if wait else 0.0)
