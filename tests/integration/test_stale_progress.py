"""A reindex's progress message whose process died is marked stopped (`bot.stale_progress`):
the notes in Redis and in a file, the heartbeat, the sweep against the fake Slack Web API, and
the coordinator leaving no note behind when a reindex ends. The kill -9 cases, with real
`kotae serve` processes, are in test_replicas.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient

from bot.reindex import ReindexCoordinator
from bot.stale_progress import (
    FileProgressNotes,
    Heartbeat,
    ProgressNote,
    ProgressNotes,
    RedisProgressNotes,
    StaleProgressSweeper,
)
from retrieval.indexer import IndexProgress, IndexSummary
from retrieval.redis_state import RedisLink
from tests.fakes.slack_api import FakeSlackAPI
from tests.helpers import wait_until
from tests.redis_server import RedisServer

STOPPED = "stopped before it finished"


@pytest.fixture(params=["file", "redis"])
def notes(request: pytest.FixtureRequest, tmp_path: Path) -> ProgressNotes:
    if request.param == "file":
        return FileProgressNotes(tmp_path / "index")
    server: RedisServer = request.getfixturevalue("redis_server")
    return RedisProgressNotes(RedisLink.open(server.url, prefix=f"kotae-{tmp_path.name}:"))


def note(ts: str, beat_age_s: float, channel: str = "C1") -> ProgressNote:
    now = time.time()
    return ProgressNote(channel=channel, ts=ts, user="UADMIN", started_at=now - 600,
                        beat_at=now - beat_age_s)


def posted(client: WebClient, text: str = "embedding 3/40 chunks") -> str:
    return str(client.chat_postMessage(channel="C1", text=text)["ts"])


def test_notes_keep_what_is_put_and_one_claim_wins(notes: ProgressNotes) -> None:
    first, second = note("1.000100", 0), note("1.000200", 5, channel="C2")
    notes.put(first)
    notes.put(second)
    notes.put(first)  # a heartbeat rewrites, never duplicates
    assert sorted(notes.all(), key=lambda n: n.ts) == [first, second]
    claims = []
    threads = [threading.Thread(target=lambda: claims.append(notes.claim(first.ts)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert claims.count(True) == 1  # of several replicas sweeping at once, one edits
    notes.claim(second.ts)
    assert notes.all() == []


def test_a_damaged_notes_file_reads_as_none_and_is_replaced(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notes = FileProgressNotes(tmp_path)
    notes.path.write_text("{not json", encoding="utf-8")
    assert notes.all() == []
    assert "unreadable" in caplog.text
    notes.put(note("1.000100", 0))
    assert [n.ts for n in FileProgressNotes(tmp_path).all()] == ["1.000100"]


def test_the_sweep_marks_only_messages_whose_heartbeat_stopped(
        notes: ProgressNotes, fake_slack: FakeSlackAPI) -> None:
    client = WebClient(token="xoxb-test", base_url=fake_slack.base_url)
    dead, alive = posted(client), posted(client)
    notes.put(note(dead, beat_age_s=30))
    notes.put(note(alive, beat_age_s=1))
    sweeper = StaleProgressSweeper(notes, client, stale_after_s=10)
    assert sweeper.sweep() == 1
    [dead_message] = fake_slack.thread_messages("C1", dead)
    [alive_message] = fake_slack.thread_messages("C1", alive)
    assert STOPPED in dead_message["text"] and "<@UADMIN>" in dead_message["text"]
    assert "/kotae reindex" in dead_message["text"]
    started = int(time.time() - 600)  # note() starts every reindex 10 minutes ago
    assert any(f"<!date^{t}^{{time}}|" in dead_message["text"] for t in (started, started - 1))
    assert alive_message["text"] == "embedding 3/40 chunks"
    assert [n.ts for n in notes.all()] == [alive]
    assert sweeper.sweep() == 0  # marked once
    assert len([c for c in fake_slack.calls("chat.update") if STOPPED in (c.text or "")]) == 1


def test_a_message_slack_no_longer_has_is_dropped_quietly(
        notes: ProgressNotes, fake_slack: FakeSlackAPI) -> None:
    client = WebClient(token="xoxb-test", base_url=fake_slack.base_url)
    notes.put(note("9.000100", beat_age_s=30))  # deleted in Slack meanwhile
    assert StaleProgressSweeper(notes, client, stale_after_s=10).sweep() == 0
    assert notes.all() == []


def test_the_heartbeat_keeps_a_note_fresh_and_removes_it_at_the_end(
        notes: ProgressNotes) -> None:
    beat = Heartbeat(notes, note("1.000100", beat_age_s=0), every_s=0.05).start()
    first = notes.all()[0].beat_at
    wait_until(lambda: notes.all()[0].beat_at > first, timeout=5, interval=0.02)
    beat.stop()
    assert notes.all() == []


def test_an_unreachable_redis_costs_the_reindex_nothing(fake_slack: FakeSlackAPI,
                                                        redis_server: RedisServer,
                                                        tmp_path: Path) -> None:
    link = RedisLink.open(redis_server.url, prefix="kotae-gone:", probe_interval_s=60)
    notes = RedisProgressNotes(link)
    redis_server.stop()
    try:
        beat = Heartbeat(notes, note("1.000100", 0), every_s=0.01).start()
        time.sleep(0.05)
        beat.stop()  # no exception: only a warning
        client = WebClient(token="xoxb-test", base_url=fake_slack.base_url)
        assert StaleProgressSweeper(notes, client, stale_after_s=1).sweep() == 0
    finally:
        redis_server.start()


def test_a_slack_reindex_notes_its_message_while_it_runs_and_leaves_none_behind(
        fake_slack: FakeSlackAPI, tmp_path: Path) -> None:
    client = WebClient(token="xoxb-test", base_url=fake_slack.base_url)
    notes = FileProgressNotes(tmp_path)
    seen: list[list[ProgressNote]] = []

    def reindex(*, full: bool, holder: str, progress: Any) -> IndexSummary:
        progress(IndexProgress(phase="embedding", files_done=0, files_total=1,
                               chunks_done=0, chunks_total=4))
        progress(IndexProgress(phase="embedding", files_done=1, files_total=1,
                               chunks_done=4, chunks_total=4))
        seen.append(notes.all())
        raise RuntimeError("the embedding model fell over")

    coordinator = ReindexCoordinator(client, reindex, ["UADMIN"], False, update_interval_s=0,
                                     notes=notes, heartbeat_s=0.05)
    coordinator.request("UADMIN", "C9", False, respond=lambda **_: None)
    wait_until(lambda: any("Reindex failed" in (c.text or "")
                           for c in fake_slack.calls("chat.update")), timeout=10)
    wait_until(lambda: coordinator.running is None, timeout=5)
    [[during]] = seen
    [post] = fake_slack.calls("chat.postMessage")
    assert (during.channel, during.user) == ("C9", "UADMIN")
    assert during.ts == fake_slack.thread_messages("C9", during.ts)[0]["ts"]
    assert notes.all() == []  # a reindex that ended (here: failed) leaves no note
    assert "Reindex failed" in fake_slack.thread_messages("C9", during.ts)[0]["text"]
    assert post.params["channel"] == "C9"


def test_a_reindex_that_does_not_reach_its_next_batch_in_time_is_marked_by_drain(
        fake_slack: FakeSlackAPI, tmp_path: Path) -> None:
    client = WebClient(token="xoxb-test", base_url=fake_slack.base_url)
    notes = FileProgressNotes(tmp_path)
    stuck, release = threading.Event(), threading.Event()

    def reindex(*, full: bool, holder: str, progress: Any) -> IndexSummary:
        progress(IndexProgress(phase="embedding", files_total=1, chunks_total=4))
        stuck.set()
        release.wait(10)  # one very long batch: no progress report to stop at
        raise AssertionError("not reached in this test")

    coordinator = ReindexCoordinator(client, reindex, ["UADMIN"], False, update_interval_s=0,
                                     notes=notes, heartbeat_s=0.05)
    coordinator.request("UADMIN", "C9", False, respond=lambda **_: None)
    assert stuck.wait(10)
    try:
        started = time.monotonic()
        assert coordinator.drain(0.3) is True
        assert time.monotonic() - started < 3
        [post] = fake_slack.calls("chat.postMessage")
        [edit] = [c for c in fake_slack.calls("chat.update") if "shut down" in (c.text or "")]
        assert edit.params["channel"] == "C9" and "/kotae reindex" in (edit.text or "")
        [message] = fake_slack.thread_messages("C9", str(edit.params["ts"]))
        assert "kotae was shut down" in message["text"]
        assert notes.all() == []  # the heartbeat stopped and took its note
    finally:
        release.set()
    assert post.params["channel"] == "C9"
