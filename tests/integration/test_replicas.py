"""The proof of issue 15: two `kotae serve` processes (HTTP mode, one signing secret) sharing one
real Redis and one index — a local folder on this machine, or one Milvus Lite server over TCP
(the code path of a Milvus cluster) — as deployed behind a load balancer:

- every event delivered to both replicas and retried to either is answered once, in its thread;
- `/kotae reindex` on replica A: replica B answers from the new version at once;
- kill -9 of A in the middle of an answer: B keeps answering new questions;
- kill -9 of A in the middle of a reindex: B keeps serving the old version, the Redis lock of
  the killed holder expires (KOTAE_REDIS_LOCK_TTL_S), and B's reindex then succeeds;
- one Milvus reached by two URIs (a service name, localhost through a port-forward) is one lock.

The initial corpus is indexed before the replicas start, with their own environment.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from retrieval.embeddings import BGEM3Embeddings
from retrieval.indexer import Indexer
from retrieval.settings import Settings
from retrieval.stores import IndexVersions, open_store_backend
from retrieval.stores.milvus import MilvusVersions
from tests.fakes.openai_server import FakeOpenAIServer, Reply
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_signing import event_body, post_signed, retry_headers, slash_body
from tests.helpers import interrupt, wait_until
from tests.integration.bot_harness import (
    FORM,
    mention_event,
    wait_for_bot_reply,
    wait_for_health,
)
from tests.integration.milvus_fixtures import lite_server
from tests.redis_server import RedisServer

SECRET = "replica-secret"
REPO_ROOT = Path(__file__).resolve().parents[2]
NEW_FACT = "Backups run every night at 02:00 JST"
NEW_SOURCE = "backups.md"  # its path is in the prompt only when it is a retrieved source
SERVED_CHECK_S = 1.0  # ServedIndex's check_interval_s, as KotaeService opens it
LOCK_TTL_S = 4.0  # the Redis lock of a killed indexer frees this long after its last renewal
STALE_AFTER_S = 2.0  # a killed reindex's progress message is marked stopped after this long
STOPPED = "stopped before it finished"
OLD_HANDOFF, NEW_HANDOFF = "every Monday at 10:00 JST", "every Thursday at 16:00 JST"

pytestmark = pytest.mark.slow


LISTENING = re.compile(r"kotae: listening on http://127\.0\.0\.1:(\d+)/")


class Replica:
    """One `kotae serve` process on a port of its own choosing (KOTAE_PORT=0: no other
    process can take it between a choice here and its bind there); its output goes to a file
    (a pipe nobody reads would fill up and stall it)."""

    def __init__(self, env: dict[str, str], name: str, log: Path) -> None:
        self.name, self.log = name, log
        self.port = 0
        with log.open("w", encoding="utf-8") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kotae", "serve"], env={**env, "KOTAE_PORT": "0"},
                stdout=out, stderr=subprocess.STDOUT, text=True)

    def wait_until_up(self, timeout: float = 120) -> None:
        """Its port, from the line `kotae serve` announces it with, then /healthz."""
        def announced() -> bool:
            found = LISTENING.search(self.output())
            if found:
                self.port = int(found.group(1))
            return found is not None or self.process.poll() is not None

        wait_until(announced, timeout=timeout, interval=0.1)
        health = wait_for_health(self.process, self.port, timeout=timeout) if self.port else None
        assert health is not None, f"replica {self.name} did not come up:\n{self.output()[-3000:]}"

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"

    def send(self, body: str, headers: dict[str, str] | None = None,
             content_type: str = "application/json") -> int:
        return post_signed(self.events_url, body, SECRET, content_type=content_type,
                           extra_headers=headers)[0]

    def kill_9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text("utf-8", errors="replace")


@pytest.fixture(params=["local", "milvus"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The index both replicas share: one local folder on this machine, or one Milvus Lite
    server over TCP."""
    if request.param == "local":
        yield {"KOTAE_STORE": "local"}
        return
    with lite_server(tmp_path / "milvus" / "kotae.db") as server:
        yield {"KOTAE_STORE": "milvus", "KOTAE_MILVUS_URI": server.uri}


@pytest.fixture
def replica_env(tiny_model_dir: Path, embeddings: BGEM3Embeddings, sample_docs: Path,
                redis_server: RedisServer, fake_slack: FakeSlackAPI,
                fake_openai: FakeOpenAIServer, store_env: dict[str, str], tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The replicas' environment. The sample corpus is indexed before they start, by an
    indexer reading this same environment (here, in the test process: its model is loaded)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOTAE_", "OPENAI_", "SLACK_"))}
    env.update({
        "KOTAE_EMBEDDING_MODEL": str(tiny_model_dir), "KOTAE_EMBEDDING_DEVICE": "cpu",
        "KOTAE_INDEX_DIR": str(tmp_path / "index"), "KOTAE_DOCS_DIR": str(sample_docs),
        "KOTAE_CHUNK_SIZE": "200", "KOTAE_CHUNK_OVERLAP": "20", "KOTAE_FAISS_DEVICE": "cpu",
        "KOTAE_RETRIEVAL_MODE": "hybrid", "KOTAE_REDIS_URL": redis_server.url,
        "KOTAE_REDIS_LOCK_TTL_S": str(LOCK_TTL_S), "KOTAE_REINDEX_PROGRESS_INTERVAL_S": "0",
        "KOTAE_REINDEX_STALE_AFTER_S": str(STALE_AFTER_S),
        "KOTAE_ADMIN_USER_IDS": "UADMIN", "KOTAE_CHAT_MAX_RETRIES": "0",
        "SLACK_BOT_TOKEN": "xoxb-replica", "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake_slack.base_url, "OPENAI_API_KEY": "sk-replica",
        "OPENAI_BASE_URL": fake_openai.base_url, "PYTHONPATH": str(REPO_ROOT),
        "NO_PROXY": "127.0.0.1,localhost", **store_env,
    })
    for name in list(os.environ):
        if name.startswith("KOTAE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("KOTAE_"):
            monkeypatch.setenv(name, value)
    summary = Indexer(Settings(_env_file=None), embeddings).run()  # type: ignore[call-arg]
    assert summary.switched and not summary.failed
    return env


@pytest.fixture
def replicas(replica_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[Replica, Replica]]:
    started = [Replica({**replica_env, "KOTAE_FEEDBACK_PATH": str(tmp_path / f"{name}.jsonl")},
                       name, tmp_path / f"replica-{name}.log") for name in ("a", "b")]
    try:
        for replica in started:
            replica.wait_until_up()
        yield started[0], started[1]
    finally:
        for replica in started:
            if replica.process.poll() is None:
                interrupt(replica.process)
                assert "Traceback" not in replica.output(), replica.output()[-3000:]


def shared_index() -> IndexVersions:
    """The index the replicas share, as the test process sees it (with `replica_env`'s
    environment): the backend itself, without the Redis lock around it."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return open_store_backend(settings.model_copy(update={"redis_url": None}))


def sources_of(request_json: dict[str, Any]) -> str:
    return json.dumps(request_json.get("messages", []), ensure_ascii=False)


def reply_text(reply: dict[str, Any]) -> str:
    return json.dumps(reply["blocks"], ensure_ascii=False)


def slack_texts(slack: FakeSlackAPI) -> list[str]:
    return [call.params.get("text") or "" for call in slack.all_calls]


def reindex_command(slack: FakeSlackAPI, name: str) -> str:
    return slash_body(text="reindex", user_id="UADMIN", response_url=slack.response_url(name))


def progress_message(slack: FakeSlackAPI) -> dict[str, Any]:
    """The one reindex progress message posted so far, as Slack now holds it (found through
    its progress edits, which name its channel and ts)."""
    edits = {(str(call.params["channel"]), str(call.params["ts"]))
             for call in slack.calls("chat.update") if EMBEDDING.search(call.text or "")}
    [(channel, ts)] = edits
    [message] = slack.thread_messages(channel, ts)
    return {**message, "channel": channel}


def test_two_kotae_serve_replicas_share_redis(
        replicas: tuple[Replica, Replica], fake_slack: FakeSlackAPI,
        fake_openai: FakeOpenAIServer, sample_docs: Path) -> None:
    a, b = replicas
    fake_openai.responder = lambda request: Reply(
        text="Nightly at 02:00 [1]." if NEW_SOURCE in sources_of(request) else "Monday [1].",
        chunk_delay_s=0.02)

    # every delivery to both replicas, retries to either: one answer
    body = event_body(mention_event("1600000300.000100"), "EvReplicas")
    assert a.send(body) == 200 and b.send(body) == 200
    assert b.send(body, retry_headers(1)) == 200 and a.send(body, retry_headers(2)) == 200
    assert len(wait_for_bot_reply(fake_slack, "C1", "1600000300.000100")) == 1
    assert len(fake_openai.requests) == 1
    last_look = time.monotonic()  # the answering replica read the served version before this

    # /kotae reindex on A: B answers from the new version right after the switch
    (sample_docs / NEW_SOURCE).write_text(f"# Backups\n\n{NEW_FACT}.\n", "utf-8")
    assert a.send(reindex_command(fake_slack, "reindex"), content_type=FORM) == 200
    wait_until(lambda: any("Reindex finished" in (call.params.get("text") or "")
                           for call in fake_slack.calls("chat.update")), timeout=120,
               interval=0.1)
    # B's first search after the switch is on the new version: a replica reads the served
    # version again when its last look is SERVED_CHECK_S old (retrieval.stores.served), and
    # B's last look was for the first question at the latest (on a fast machine the reindex
    # can end sooner than that after it: then the question waits for the rest)
    time.sleep(max(0.0, SERVED_CHECK_S - (time.monotonic() - last_look)))
    event = {**mention_event("1600000300.000200"), "text": f"<@UBOT> {NEW_FACT}?"}
    assert b.send(event_body(event, "EvAfterReindex")) == 200
    [reply] = wait_for_bot_reply(fake_slack, "C1", "1600000300.000200")
    assert "Nightly at 02:00" in reply_text(reply)

    # kill -9 of A while it writes an answer: B keeps answering new questions
    fake_openai.responder = lambda _request: Reply(text="Monday, slowly [1].", chunk_delay_s=1)
    before = len(fake_openai.requests)
    assert a.send(event_body(mention_event("1600000300.000300"), "EvKilled")) == 200
    fake_openai.wait_for_requests(before + 1, timeout=20)
    a.kill_9()
    fake_openai.responder = lambda _request: Reply(text="Monday [1].")
    assert b.send(event_body(mention_event("1600000300.000400"), "EvAfterKill")) == 200
    assert len(wait_for_bot_reply(fake_slack, "C1", "1600000300.000400")) == 1


FILLER_WORDS = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit",
                "sed", "eiusmod", "tempor", "incididunt", "labore", "magna", "aliqua", "enim",
                "minim", "veniam", "quis", "nostrud"]


def write_fillers(docs: Path, count: int, paragraphs_each: int) -> None:
    """`count` documents of words no question uses (about 3 chunks a paragraph): enough
    chunks (more than one embedding window) that a reindex is still at work when the test
    kills it."""
    for number in range(count):
        paragraphs = [" ".join(FILLER_WORDS[(number + p + w) % len(FILLER_WORDS)]
                               for w in range(120)) + f" {number}-{p}."
                      for p in range(paragraphs_each)]
        (docs / "filler" / f"note-{number:03d}.md").write_text(
            f"# Note {number}\n\n" + "\n\n".join(paragraphs), "utf-8")


def ask_handoff(replica: Replica, slack: FakeSlackAPI, ts: str) -> str:
    # the question names neither answer: only the sources given to the model can
    event = {**mention_event(ts), "text": "<@UBOT> On which day and at what hour JST does the "
                                          "on-call handoff happen every week?"}
    assert replica.send(event_body(event, f"Ev{ts}")) == 200
    [reply] = wait_for_bot_reply(slack, "C1", ts)
    return reply_text(reply)


EMBEDDING = re.compile(r"embedding ([1-9]\d*)/\d+ chunks")


# Milvus only, as the issue asks: a local folder passes it too (the `on_milvus` checks aside),
# but costs another ~22 s, past this file's time budget.
@pytest.mark.parametrize("store_env", ["milvus"], indirect=True)
def test_kill_9_of_a_replica_mid_reindex_keeps_the_old_version_serving(
        replicas: tuple[Replica, Replica], redis_server: RedisServer,
        fake_slack: FakeSlackAPI, fake_openai: FakeOpenAIServer, sample_docs: Path) -> None:
    a, b = replicas
    index = shared_index()
    old_version = index.current_version()
    fake_openai.responder = lambda request: Reply(
        text="Thursday [1]." if NEW_HANDOFF in sources_of(request)
        else "Monday [1]." if OLD_HANDOFF in sources_of(request) else "Not found.")
    runbook = sample_docs / "oncall-runbook.md"
    text = runbook.read_text("utf-8")
    assert OLD_HANDOFF in text
    runbook.write_text(text.replace(OLD_HANDOFF, NEW_HANDOFF), "utf-8")
    (sample_docs / "filler").mkdir()
    write_fillers(sample_docs, 13, paragraphs_each=75)  # ~2,900 chunks
    on_milvus = isinstance(index, MilvusVersions)
    rows_before = index.stored_rows()["chunks"] if on_milvus else 0
    served_count = index.open_version(old_version).count

    # A reindexes; it is killed once it is embedding and has written rows of the new build
    assert a.send(reindex_command(fake_slack, "killed"), content_type=FORM) == 200
    wait_until(lambda: any(EMBEDDING.search(t) for t in slack_texts(fake_slack)),
               timeout=120, interval=0.05)
    if on_milvus:  # Milvus: the build's rows appear, unpublished
        wait_until(lambda: index.stored_rows()["chunks"] > rows_before, timeout=60,
                   interval=0.05)
    assert index.current_version() == old_version
    a.kill_9()
    assert not any("Reindex finished" in t for t in slack_texts(fake_slack))
    if on_milvus:  # what the killed build wrote is there, and no reader sees it
        assert index.open_builds(), "the killed build left no trace: it was not mid-build"
    assert index.open_version(old_version).count == served_count
    [lock_key] = redis_server.client().keys("*index-lock:*")
    holder = json.loads(redis_server.client().get(lock_key))
    assert holder["pid"] == a.process.pid and holder["holder"] == "Slack user UADMIN"

    # B's reindex while the killed holder's lock lives: refused, naming the holder
    responses = len(fake_slack.calls("response_url"))
    assert b.send(reindex_command(fake_slack, "refused"), content_type=FORM) == 200
    refusal = fake_slack.wait_for("response_url", responses + 1, timeout=10)[-1].text or ""
    assert "Another indexer is already running" in refusal and f"pid {a.process.pid}" in refusal

    # B serves the old version
    assert "Monday [1]" in ask_handoff(b, fake_slack, "1600000400.000100")
    assert index.current_version() == old_version

    # B marks A's progress message stopped (A's heartbeat in Redis ended), once
    wait_until(lambda: STOPPED in progress_message(fake_slack)["text"],
               timeout=STALE_AFTER_S * 3, interval=0.1)
    assert "<@UADMIN>" in progress_message(fake_slack)["text"]
    assert "marking its message" in b.output()
    assert len([c for c in fake_slack.calls("chat.update") if STOPPED in (c.text or "")]) == 1

    # the lock expires on its own; B's next reindex succeeds and B answers from it
    wait_until(lambda: not redis_server.client().exists(lock_key), timeout=LOCK_TTL_S + 2,
               interval=0.1)
    assert b.send(reindex_command(fake_slack, "succeeds"), content_type=FORM) == 200
    wait_until(lambda: any("Reindex finished" in t for t in slack_texts(fake_slack)),
               timeout=120, interval=0.1)
    [summary] = [t for t in slack_texts(fake_slack) if "Reindex finished" in t]
    reused = re.search(r"reused (\d+) from the embedding cache", summary)
    assert reused and int(reused.group(1)) > 0, summary  # what A embedded is not lost
    new_version = index.current_version()
    assert new_version not in (None, old_version)
    if on_milvus:
        assert index.open_builds() == []  # the killed build was cleaned up under the lock
    assert "Thursday [1]" in ask_handoff(b, fake_slack, "1600000400.000200")


@pytest.mark.parametrize("store_env", ["local"], indirect=True)
def test_one_bot_killed_mid_reindex_marks_its_progress_message_stopped_when_it_restarts(
        replica_env: dict[str, str], fake_slack: FakeSlackAPI, sample_docs: Path,
        tmp_path: Path) -> None:
    """One machine, no Redis: the note is a file in the index folder, and the bot that
    comes back after the kill (a supervisor's restart) marks the message."""
    env = {k: v for k, v in replica_env.items() if k != "KOTAE_REDIS_URL"}
    (sample_docs / "filler").mkdir()
    write_fillers(sample_docs, 13, paragraphs_each=75)
    first = Replica(env, "first", tmp_path / "first.log")
    first.wait_until_up()
    assert first.send(reindex_command(fake_slack, "killed"), content_type=FORM) == 200
    wait_until(lambda: any(EMBEDDING.search(t) for t in slack_texts(fake_slack)),
               timeout=120, interval=0.05)
    first.kill_9()
    time.sleep(STALE_AFTER_S)
    assert STOPPED not in progress_message(fake_slack)["text"]  # nobody is left to say it
    assert (Path(env["KOTAE_INDEX_DIR"]) / "reindex-progress.json").is_file()

    second = Replica(env, "second", tmp_path / "second.log")
    try:
        second.wait_until_up()
        wait_until(lambda: STOPPED in progress_message(fake_slack)["text"], timeout=10,
                   interval=0.1)
        assert not (Path(env["KOTAE_INDEX_DIR"]) / "reindex-progress.json").exists()
    finally:
        interrupt(second.process)
    assert "Traceback" not in second.output(), second.output()[-3000:]


def stop_with_sigterm(replica: Replica, timeout: float) -> tuple[int, float]:
    """SIGTERM, as `docker stop` or a deploy stops the bot: (exit code, seconds to exit)."""
    started = time.monotonic()
    replica.process.send_signal(signal.SIGTERM)
    try:
        code = replica.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        replica.kill_9()
        raise AssertionError(f"{replica.name} did not stop on SIGTERM:\n"
                             f"{replica.output()[-3000:]}") from None
    return code, time.monotonic() - started


@pytest.mark.parametrize("store_env", ["local"], indirect=True)
def test_sigterm_lets_the_answer_in_flight_finish_and_tells_the_cut_short_to_ask_again(
        replica_env: dict[str, str], fake_slack: FakeSlackAPI, fake_openai: FakeOpenAIServer,
        tmp_path: Path) -> None:
    env = {k: v for k, v in replica_env.items() if k != "KOTAE_REDIS_URL"}
    # a slow model: one answer finishes within the grace period, one does not
    fake_openai.responder = lambda request: Reply(
        text="Monday [1].", delay_s=8.0 if "SLOW" in sources_of(request) else 1.5)
    bot = Replica({**env, "KOTAE_SHUTDOWN_GRACE_S": "4"}, "bot", tmp_path / "bot.log")
    bot.wait_until_up()
    quick = {**mention_event("1600000500.000100"), "text": "<@UBOT> When is the handoff?"}
    slow = {**mention_event("1600000500.000200"), "text": "<@UBOT> SLOW: the handoff?"}
    assert bot.send(event_body(quick, "EvQuick")) == 200
    assert bot.send(event_body(slow, "EvSlow")) == 200
    fake_openai.wait_for_requests(2, timeout=30)

    code, seconds = stop_with_sigterm(bot, timeout=20)
    assert code == 0 and seconds < 4 + 3, (code, seconds)
    [quick_reply] = [m for m in fake_slack.thread_messages("C1", "1600000500.000100")
                     if m.get("bot_id")]
    assert "Monday" in reply_text(quick_reply)  # finished within the grace period
    slow_replies = [m for m in fake_slack.thread_messages("C1", "1600000500.000200")
                    if m.get("bot_id")]
    assert slow_replies and "restarted before it finished this answer" in (
        slow_replies[-1].get("text") or ""), slow_replies
    output = bot.output()
    assert "waiting up to 4s for 2 answer(s)" in output and "kotae: stopped" in output
    assert "Traceback" not in output, output[-3000:]


@pytest.mark.parametrize("store_env", ["local"], indirect=True)
def test_sigterm_mid_reindex_stops_it_and_its_message_says_so(
        replica_env: dict[str, str], fake_slack: FakeSlackAPI, sample_docs: Path,
        tmp_path: Path) -> None:
    env = {k: v for k, v in replica_env.items() if k != "KOTAE_REDIS_URL"}
    served = shared_index().current_version()
    (sample_docs / "filler").mkdir()
    write_fillers(sample_docs, 13, paragraphs_each=75)
    bot = Replica({**env, "KOTAE_SHUTDOWN_GRACE_S": "6"}, "bot", tmp_path / "bot.log")
    bot.wait_until_up()
    assert bot.send(reindex_command(fake_slack, "stopped"), content_type=FORM) == 200
    wait_until(lambda: any(EMBEDDING.search(t) for t in slack_texts(fake_slack)),
               timeout=120, interval=0.05)

    code, seconds = stop_with_sigterm(bot, timeout=20)
    assert code == 0 and seconds < 6 + 3, (code, seconds)
    text = progress_message(fake_slack)["text"]
    assert "kotae was shut down" in text and "/kotae reindex" in text, text
    assert not (Path(env["KOTAE_INDEX_DIR"]) / "reindex-progress.json").exists()
    assert shared_index().current_version() == served  # nothing half-built was published
    assert "Traceback" not in bot.output(), bot.output()[-3000:]


def test_one_milvus_reached_by_two_names_is_one_reindex_lock(
        redis_server: RedisServer, tiny_model_dir: Path, tmp_path: Path) -> None:
    from retrieval.errors import IndexLocked

    with lite_server(tmp_path / "milvus" / "kotae.db") as server:
        def indexer_on(uri: str, machine: str) -> IndexVersions:  # one machine's kotae
            return open_store_backend(Settings(  # type: ignore[call-arg]
                _env_file=None, store="milvus", milvus_uri=uri,
                index_dir=tmp_path / machine / "index", embedding_model=str(tiny_model_dir),
                redis_url=redis_server.url))

        replica = indexer_on(server.uri, "replica")
        operator = indexer_on(server.uri.replace("127.0.0.1", "localhost"), "laptop")
        with replica.lock("replica a"), pytest.raises(IndexLocked), operator.lock("kotae index"):
            pass
