"""Two bots (two Bolt apps behind two HTTP servers) sharing one real Redis: every event
delivered to both, and its retries to either, is answered once — and when Redis goes away
mid-run, first deliveries are still answered, retries are dropped, and the operator reads one
line when Redis is lost and one when it is back."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path

import pytest

from bot.app import create_app
from bot.dedupe import SharedEvents, is_redelivery
from bot.server import socket_mode_handler
from bot.settings import BotSettings
from retrieval.embeddings import BGEM3Embeddings
from retrieval.service import KotaeService
from retrieval.settings import Settings
from tests.fakes.openai_server import FakeOpenAIServer, Reply
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_signing import event_body, retry_headers
from tests.fakes.socket_mode import FakeSocketModeServer
from tests.helpers import wait_until
from tests.integration.bot_harness import (
    Bot,
    StartBot,
    mention,
    mention_event,
    wait_for_bot_reply,
)
from tests.redis_server import RedisServer

LINK_LOGGER = "retrieval.redis_state.connection"


@pytest.fixture
def replicas(start_bot: StartBot, redis_server: RedisServer) -> tuple[Bot, Bot]:
    shared = {"redis_url": redis_server.url, "redis_prefix": "kotae-test:"}
    first = start_bot(**shared)
    second = start_bot(**shared)
    assert isinstance(first.ctx.recent, SharedEvents)
    return first, second


def replies(bot: Bot, ts: str) -> list[dict]:
    return bot.bot_replies("C1", ts)


def test_an_event_delivered_to_both_replicas_and_retried_to_either_is_answered_once(
        replicas: tuple[Bot, Bot], fake_openai: FakeOpenAIServer) -> None:
    first, second = replicas
    fake_openai.responder = lambda _request: Reply(text="Every Monday [1].", chunk_delay_s=0.02)
    for n in range(5):
        ts = f"1600000100.00010{n}"
        event, event_id = mention("When is the on-call handoff?", ts), f"EvBoth{n}"
        both = [threading.Thread(target=bot.send_event, args=(event, event_id))
                for bot in (first, second)]
        for thread in both:
            thread.start()
        for thread in both:
            thread.join()
        assert first.send_event(event, event_id, retry_headers(1))[0] == 200
        assert second.send_event(event, event_id, retry_headers(2, "http_error"))[0] == 200
        first.wait_for_final("C1", ts)
        time.sleep(0.3)
        assert len(replies(first, ts)) == 1, f"event {n}: {replies(first, ts)}"
    assert len(fake_openai.requests) == 5


def test_the_message_event_twin_of_a_mention_on_the_other_replica_is_a_duplicate(
        replicas: tuple[Bot, Bot], fake_openai: FakeOpenAIServer) -> None:
    """A mention in a DM arrives as app_mention AND as message.im (other event ids, the same
    client_msg_id); each may reach another replica."""
    first, second = replicas
    fake_openai.responder = lambda _request: Reply(text="Monday [1].")
    ts = "1600000101.000100"
    as_mention = mention("When is the on-call handoff?", ts, channel="D1")
    as_message = {**as_mention, "type": "message", "channel_type": "im"}
    first.send_event(as_mention, "EvTwinA")
    second.send_event(as_message, "EvTwinB")
    first.wait_for_final("D1", ts)
    time.sleep(0.5)
    assert len(first.bot_replies("D1", ts)) == 1 and len(fake_openai.requests) == 1


def test_redis_down_mid_run_answers_first_deliveries_and_drops_retries(
        replicas: tuple[Bot, Bot], redis_server: RedisServer, fake_openai: FakeOpenAIServer,
        caplog: pytest.LogCaptureFixture) -> None:
    first, second = replicas
    fake_openai.responder = lambda _request: Reply(text="Monday [1].")
    caplog.set_level(logging.INFO)
    redis_server.stop()

    # first delivery to one replica: answered (from its own memory, no Redis)
    lost_ts, other_ts = "1600000102.000100", "1600000102.000200"
    event = mention("When is the on-call handoff?", lost_ts)
    assert first.send_event(event, "EvLost")[0] == 200
    first.wait_for_final("C1", lost_ts)
    # Slack retries it, to either replica: never a second answer
    assert second.send_event(event, "EvLost", retry_headers(1))[0] == 200
    assert first.send_event(event, "EvLost", retry_headers(2))[0] == 200
    # another question, first delivered to the other replica: answered too, never silence
    assert second.send_event(mention("What about vacations?", other_ts), "EvOther")[0] == 200
    second.wait_for_final("C1", other_ts)
    for n in range(5):  # more events during the outage: no more "unreachable" lines
        ts = f"1600000102.00030{n}"
        second.send_event(mention("And expenses?", ts), f"EvMore{n}")
        second.wait_for_final("C1", ts)
    time.sleep(0.5)
    assert len(replies(first, lost_ts)) == 1 and len(replies(first, other_ts)) == 1
    assert len(fake_openai.requests) == 7

    unreachable = [r for r in caplog.records
                   if r.name == LINK_LOGGER and "is unreachable" in r.getMessage()]
    assert len(unreachable) == 2  # one line per replica, not one per event
    assert all(r.levelno == logging.ERROR for r in unreachable)
    assert "KOTAE_REDIS_URL" in unreachable[0].getMessage()
    assert "drops Slack's retries" in unreachable[0].getMessage()
    assert "dropped Slack's retry of EvLost" in caplog.text

    # Redis is back: each replica says so once, and writes what it kept in memory meanwhile,
    # so a late retry of an outage-time event on the OTHER replica is still a duplicate
    redis_server.start()
    client = redis_server.client()
    wait_until(lambda: client.exists("kotae-test:event:EvOther", "kotae-test:event:EvLost") == 2,
               timeout=10, interval=0.1)
    wait_until(lambda: len([r for r in caplog.records if "answers again" in r.getMessage()]) == 2,
               timeout=10, interval=0.1)
    assert first.send_event(mention("What about vacations?", other_ts), "EvOther",
                            retry_headers(3))[0] == 200
    assert second.send_event(event, "EvLost", retry_headers(3))[0] == 200
    time.sleep(0.8)
    assert len(replies(first, lost_ts)) == 1 and len(replies(first, other_ts)) == 1
    assert len(fake_openai.requests) == 7


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, False), (None, False), ({"x-slack-retry-num": ["0"]}, False),
    ({"x-slack-retry-num": ["1"]}, True), ({"x-slack-retry-num": "2"}, True),
    ({"x-slack-retry-num": ["not-a-number"]}, True),
])
def test_a_redelivery_is_read_from_the_retry_header(headers: dict | None,
                                                    expected: bool) -> None:
    assert is_redelivery(headers) is expected


def test_socket_mode_retries_are_seen_as_retries_while_redis_is_down(
        settings: Settings, embeddings: BGEM3Embeddings, sample_index_dir: Path,
        fake_slack: FakeSlackAPI, fake_socket_mode: FakeSocketModeServer,
        fake_openai: FakeOpenAIServer, redis_server: RedisServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Socket Mode's retry_attempt reaches the listener as Bolt's x-slack-retry-num."""
    bot_settings = BotSettings(
        _env_file=None,  # type: ignore[call-arg]
        **{**settings.model_dump(), "index_dir": sample_index_dir,
           "slack_bot_token": "xoxb-test", "slack_app_token": "xapp-1-test",
           "slack_api_url": fake_slack.base_url, "openai_api_key": "sk-test",
           "openai_base_url": fake_openai.base_url, "feedback_path": tmp_path / "f.jsonl",
           "redis_url": redis_server.url})
    app, _ctx = create_app(bot_settings, KotaeService(bot_settings, embeddings=embeddings))
    handler = socket_mode_handler(app, "xapp-1-test")
    fake_openai.responder = lambda _request: Reply(text="Monday [1].")
    handler.connect()
    caplog.set_level(logging.INFO, logger="bot.dedupe")
    try:
        fake_socket_mode.wait_for_connection()
        redis_server.stop()
        retried = json.loads(event_body(mention_event("1600000103.000100"), "EvSockRetry"))
        envelope = fake_socket_mode.send_envelope("events_api", retried, retry_attempt=1,
                                                  retry_reason="timeout")
        assert fake_socket_mode.wait_for_ack(envelope, timeout=3)
        first = json.loads(event_body(mention_event("1600000103.000200"), "EvSockFirst"))
        envelope = fake_socket_mode.send_envelope("events_api", first)
        assert fake_socket_mode.wait_for_ack(envelope, timeout=3)
        assert len(wait_for_bot_reply(fake_slack, "C1", "1600000103.000200", timeout=20)) == 1
        assert not fake_slack.thread_messages("C1", "1600000103.000100")
        assert "dropped Slack's retry of EvSockRetry" in caplog.text
    finally:
        handler.client.auto_reconnect_enabled = False
        fake_socket_mode.close_connections()
        handler.close()


def test_a_redis_that_hangs_mid_run_does_not_hold_up_acks_or_answers(
        replicas: tuple[Bot, Bot], redis_server: RedisServer,
        fake_openai: FakeOpenAIServer) -> None:
    """Worse than refused: a Redis that accepts connections and never replies (a stalled
    server, a half-open network path). Timeouts keep every ack well inside Slack's 3 s."""
    first, _second = replicas
    fake_openai.responder = lambda _request: Reply(text="Monday [1].")
    redis_server.stop()
    held: list[socket.socket] = []
    with socket.socket() as silent:
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind(("127.0.0.1", redis_server.port))
        silent.listen(16)
        silent.settimeout(0.1)

        def accept_and_say_nothing() -> None:
            while not done.is_set():
                try:
                    held.append(silent.accept()[0])
                except OSError:
                    continue

        done = threading.Event()
        acceptor = threading.Thread(target=accept_and_say_nothing, daemon=True)
        acceptor.start()
        try:
            elapsed = []
            for n in range(4):
                ts = f"1600000104.00010{n}"
                status, seconds = first.send_event(mention("When is it?", ts), f"EvHang{n}")
                assert status == 200
                elapsed.append(seconds)
                first.wait_for_final("C1", ts)
            assert max(elapsed) < 2.5, elapsed
        finally:
            done.set()
            acceptor.join(timeout=2)
            for connection in held:
                connection.close()
