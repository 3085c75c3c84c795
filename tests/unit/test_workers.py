"""AnswerQueue: global and per-user limits, a bounded waiting line, late 'queued' notices."""

from __future__ import annotations

import threading
import time

from bot.workers import AnswerQueue
from tests.helpers import wait_until


def blocking_job(release: threading.Event, log: list[str], name: str):  # type: ignore[no-untyped-def]
    def job() -> None:
        log.append(f"start {name}")
        release.wait(5)
        log.append(f"end {name}")
    return job


def test_per_user_limit_queues_the_same_user_but_not_others() -> None:
    queue = AnswerQueue(workers=4, per_user=1, notice_after_s=60)
    release, log = threading.Event(), []
    assert queue.submit("alice", blocking_job(release, log, "a1")) == "started"
    assert queue.submit("alice", blocking_job(release, log, "a2")) == "queued"
    assert queue.submit("bob", blocking_job(release, log, "b1")) == "started"
    wait_until(lambda: {"start a1", "start b1"} <= set(log))
    assert "start a2" not in log
    release.set()
    wait_until(lambda: "end a2" in log)
    assert log.index("end a1") < log.index("start a2")
    queue.shutdown()


def test_global_limit_and_rejection_when_the_line_is_full() -> None:
    queue = AnswerQueue(workers=1, per_user=5, max_waiting=1, notice_after_s=60)
    release, log = threading.Event(), []
    assert queue.submit("u1", blocking_job(release, log, "1")) == "started"
    assert queue.submit("u2", blocking_job(release, log, "2")) == "queued"
    assert queue.submit("u3", blocking_job(release, log, "3")) == "rejected"
    release.set()
    wait_until(lambda: "end 2" in log)
    assert "start 3" not in log
    queue.shutdown()


def test_queued_notice_only_after_the_wait_grows_long() -> None:
    queue = AnswerQueue(workers=1, per_user=1, notice_after_s=0.3)
    release, log, notices = threading.Event(), [], []
    queue.submit("u1", blocking_job(release, log, "first"))
    queue.submit("u2", blocking_job(release, log, "short"), on_wait=lambda: notices.append("s"))
    time.sleep(0.1)
    assert notices == []  # a short wait costs no message
    wait_until(lambda: notices == ["s"])
    time.sleep(0.4)
    assert notices == ["s"]  # told once
    release.set()
    wait_until(lambda: "end short" in log)
    queue.shutdown()


def test_a_failing_job_frees_its_slot() -> None:
    queue = AnswerQueue(workers=1, per_user=1, notice_after_s=60)
    done = threading.Event()

    def boom() -> None:
        raise RuntimeError("boom")

    queue.submit("u", boom)
    assert queue.submit("u", done.set) in ("started", "queued")
    assert done.wait(5)
    queue.shutdown()


def _notices_thread(before: set[threading.Thread]) -> threading.Thread:
    [thread] = [t for t in set(threading.enumerate()) - before
                if t.name == "answer-queue-notices"]
    return thread


def _cpu_seconds(thread: threading.Thread) -> float:
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def test_zero_notice_delay_neither_spins_nor_delays_the_notice() -> None:
    """KOTAE_QUEUED_NOTICE_AFTER_S=0 once made the notices thread call wait(timeout=0) in a
    loop: a whole core burnt while the bot was idle. Measured as the thread's own CPU time."""
    before = set(threading.enumerate())
    queue = AnswerQueue(workers=1, per_user=1, notice_after_s=0)
    notices_thread = _notices_thread(before)
    release, log, notices = threading.Event(), [], []

    idle_cpu = _cpu_seconds(notices_thread)
    time.sleep(0.5)  # nothing waits
    assert _cpu_seconds(notices_thread) - idle_cpu < 0.05

    queue.submit("u1", blocking_job(release, log, "first"))
    queue.submit("u2", blocking_job(release, log, "second"), on_wait=lambda: notices.append(1))
    wait_until(lambda: notices == [1])  # told at once
    waiting_cpu = _cpu_seconds(notices_thread)
    time.sleep(0.5)  # a job waits, already told
    assert _cpu_seconds(notices_thread) - waiting_cpu < 0.05
    release.set()
    wait_until(lambda: "end second" in log)
    queue.shutdown()


def test_drain_drops_the_waiting_tells_them_and_waits_for_the_running_within_its_time() -> None:
    queue = AnswerQueue(workers=1, per_user=5, notice_after_s=60)
    release, log, dropped = threading.Event(), [], []
    assert queue.submit("u1", blocking_job(release, log, "running")) == "started"
    assert queue.submit("u2", blocking_job(release, log, "waiting"),
                        on_drop=lambda: dropped.append("u2")) == "queued"
    wait_until(lambda: "start running" in log)
    started = time.monotonic()
    assert queue.drain(0.2) == 1  # still running after its time
    assert 0.15 < time.monotonic() - started < 2
    assert dropped == ["u2"]
    assert queue.submit("u3", blocking_job(release, log, "late")) == "closed"
    release.set()
    assert queue.drain(5) == 0
    assert log == ["start running", "end running"]  # the dropped one never ran


def test_shutdown_waits_for_a_running_answer() -> None:
    queue = AnswerQueue(workers=2, per_user=2, notice_after_s=60)
    release, log = threading.Event(), []
    queue.submit("u1", blocking_job(release, log, "a"))
    wait_until(lambda: "start a" in log)
    threading.Timer(0.2, release.set).start()
    queue.shutdown()
    assert log == ["start a", "end a"]
