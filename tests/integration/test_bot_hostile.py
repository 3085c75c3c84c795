"""Requests Slack would never send, over real HTTP into the running bot: each gets a clean HTTP
answer — never a 500 (Slack retries those) and never a traceback in the log."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.fakes.openai_server import Reply
from tests.fakes.slack_signing import action_body, event_body, post_signed, sign
from tests.helpers import wait_until
from tests.integration.bot_harness import FORM, SECRET, Bot, blocks_text, mention

JSON = "application/json"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.exc_info or record.exc_text]


def post_raw(url: str, body: bytes, headers: dict[str, str], method: str = "POST"
             ) -> tuple[int, str]:
    """A request exactly as given: no signing, any bytes, any method."""
    request = urllib.request.Request(url, data=body or None, headers=headers, method=method)
    try:
        with _OPENER.open(request, timeout=30) as response:
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code), error.read().decode("utf-8", "replace")


# --- bodies that are not Slack payloads, correctly signed ---


@pytest.mark.parametrize(("body", "content_type"), [
    pytest.param("{not json", JSON, id="events-api-not-json"),
    pytest.param("payload=%7Bnot+json", FORM, id="interactivity-payload-not-json"),
    pytest.param("[1, 2, 3]", JSON, id="json-array"),
    pytest.param('"just a string"', JSON, id="json-string"),
    pytest.param(json.dumps({"type": "event_callback", "authorizations": 5}), JSON,
                 id="json-object-with-a-wrongly-typed-field"),
    pytest.param("token=x&command=%2Fkotae&text=hi", JSON, id="form-body-sent-as-json"),
])
def test_a_signed_body_that_is_not_a_slack_payload_is_answered_400(
        bot: Bot, caplog: pytest.LogCaptureFixture, body: str, content_type: str) -> None:
    caplog.set_level(logging.INFO)
    status, text, elapsed = post_signed(f"{bot.url}/slack/events", body, SECRET,
                                        content_type=content_type)
    assert status == 400 and "not a Slack request" in text
    assert elapsed < 1.0
    [refusal] = [r for r in caplog.records  # one line (waitress may say its queue is busy)
                 if r.levelno >= logging.WARNING and r.name != "waitress.queue"]
    assert refusal.name == "bot.inbound" and "signed request that is not a Slack payload" \
        in refusal.getMessage()
    assert not tracebacks(caplog)
    time.sleep(0.2)
    assert not [c for c in bot.slack.all_calls if c.method != "auth.test"]
    assert not bot.llm.requests


def test_a_body_that_is_not_a_slack_payload_and_unsigned_is_answered_401(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    status, _text, _elapsed = post_signed(f"{bot.url}/slack/events", "{not json",
                                          "not-the-secret")
    assert status == 401
    assert not tracebacks(caplog)


def test_bytes_that_are_not_utf8_are_answered_400(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    body = b'{"type": "event_callback", "x": "\xff\xfe"}'
    headers = {"Content-Type": JSON,
               **sign(SECRET, body.decode("latin-1"))}  # any signature: never checked
    status, _text = post_raw(f"{bot.url}/slack/events", body, headers)
    assert status in (400, 401)
    assert not tracebacks(caplog)


def test_a_timestamp_header_that_is_not_a_number_is_answered_401(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    body = event_body(mention("hi", "1600000000.100000"), "EvTs")
    headers = {"Content-Type": JSON, "X-Slack-Request-Timestamp": "soon",
               "X-Slack-Signature": "v0=" + "0" * 64}
    assert post_raw(f"{bot.url}/slack/events", body.encode(), headers)[0] == 401
    assert not tracebacks(caplog)


def test_an_unsigned_request_is_answered_401(bot: Bot) -> None:
    body = event_body(mention("hi", "1600000000.100100"), "EvUnsigned")
    assert post_raw(f"{bot.url}/slack/events", body.encode(), {"Content-Type": JSON})[0] == 401
    time.sleep(0.2)
    assert not bot.llm.requests and not bot.slack.calls("chat.postMessage")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_on_the_events_path_are_answered_404(bot: Bot, method: str) -> None:
    body = event_body(mention("hi", "1600000000.100200"), "EvMethod").encode()
    status, _text = post_raw(f"{bot.url}/slack/events", body if method != "GET" else b"",
                             {"Content-Type": JSON}, method=method)
    assert status == 404


# --- payloads of the right form, with the wrong types inside ---


@pytest.mark.parametrize("event", [
    pytest.param("an event as a string, with type in it", id="event-a-string"),
    pytest.param(["app_mention"], id="event-a-list"),
    pytest.param({"text": "no type"}, id="event-without-type"),
    pytest.param({"type": 5}, id="event-type-a-number"),
])
def test_an_event_that_is_not_an_object_with_a_type_is_answered_400(
        bot: Bot, caplog: pytest.LogCaptureFixture, event: object) -> None:
    body = json.loads(event_body(mention("hi", "1600000000.100300"), "EvShape"))
    body["event"] = event
    status, _text, _elapsed = post_signed(f"{bot.url}/slack/events", json.dumps(body), SECRET)
    assert status == 400
    assert not tracebacks(caplog)


@pytest.mark.parametrize(("field", "value"), [
    ("text", 5), ("text", None), ("user", ["U1"]), ("channel", {"id": "C1"}), ("ts", 1.5),
    ("thread_ts", 7), ("team", ["T1"]),
])
def test_a_mention_with_a_wrongly_typed_field_is_acked_and_ignored(
        bot: Bot, caplog: pytest.LogCaptureFixture, field: str, value: object) -> None:
    event = mention("When is the on-call handoff?", "1600000000.100400")
    event[field] = value
    status, _elapsed = bot.send_event(event, f"EvTyped-{field}")
    assert status == 200
    wait_until(lambda: any("not a question as Slack sends one" in r.getMessage()
                           for r in caplog.records))
    time.sleep(0.2)
    assert not tracebacks(caplog)
    assert not bot.llm.requests and not bot.slack.calls("chat.postMessage")


def test_a_slash_command_without_a_user_is_acked_and_ignored(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    body = urlencode({"command": "/kotae", "text": "When is the on-call handoff?",
                      "team_id": "T1", "response_url": bot.slack.response_url()})
    status, _text, _elapsed = post_signed(f"{bot.url}/slack/events", body, SECRET,
                                          content_type=FORM)
    assert status == 200
    time.sleep(0.3)
    assert not tracebacks(caplog)
    assert not bot.llm.requests and not bot.slack.calls("chat.postMessage")


WRONG_TYPES: tuple[object, ...] = (5, "text", [], [1], {}, None, True)


def mutations(payload: Any, depth: int = 2, path: str = "") -> Iterator[tuple[str, Any]]:
    """`payload` with one field (objects and the first list item, `depth` levels down)
    replaced by each of WRONG_TYPES in turn."""
    if depth == 0 or not isinstance(payload, (dict, list)) or not payload:
        return
    keys = list(payload) if isinstance(payload, dict) else [0]
    for key in keys:
        for wrong in WRONG_TYPES:
            yield f"{path}.{key}={wrong!r}", _replaced(payload, key, wrong)
        for inner_path, inner in mutations(payload[key], depth - 1, f"{path}.{key}"):
            yield inner_path, _replaced(payload, key, inner)


def _replaced(payload: Any, key: Any, value: Any) -> Any:
    copy = dict(payload) if isinstance(payload, dict) else list(payload)
    copy[key] = value
    return copy


def test_any_field_of_the_wrong_type_never_costs_a_500_or_a_traceback(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    """Every field of an event and of a button click (two levels deep), swapped for each
    wrong type in turn: Slack never sends these, so each is answered 200 (ignored after the
    ack), 400 or 404 (Bolt: no listener for it) — never a 500 (which Slack retries)."""
    event = json.loads(event_body(mention("hi", "1600000000.100450"), "EvFuzz"))
    click = json.loads(urllib.parse.parse_qs(vote_payload(bot, "0123456789ab"))["payload"][0])
    statuses: dict[int, list[str]] = {}
    for name, payload in [("event", event), ("click", click)]:
        for path, mutated in mutations(payload):
            body, content_type = ((json.dumps(mutated), JSON) if name == "event"
                                  else (action_body(mutated), FORM))
            status, _text, _elapsed = post_signed(f"{bot.url}/slack/events", body, SECRET,
                                                  content_type=content_type)
            statuses.setdefault(status, []).append(name + path)
    assert set(statuses) <= {200, 400, 404}, {s: statuses[s] for s in statuses if s >= 500}
    assert len(statuses.get(400, [])) > 20  # the check is not idle
    time.sleep(0.5)  # listeners run after the ack
    assert not tracebacks(caplog)


# --- forged feedback votes ---


def vote_payload(bot: Bot, value: object, user: object = None) -> str:
    action = {"action_id": "kotae_feedback_up", "block_id": "kotae_feedback",
              "type": "button", "action_ts": "1", "value": value}
    return action_body({
        "type": "block_actions", "user": user if user is not None else {"id": "U9"},
        "team": {"id": "T1"}, "channel": {"id": "C1"}, "container": {"type": "message"},
        "message": {"ts": "1600000000.100500"}, "actions": [action],
        "response_url": bot.slack.response_url(), "trigger_id": "t"})


@pytest.mark.parametrize("value", [
    pytest.param("x" * 10_000, id="ten-thousand-characters"),
    pytest.param('a"}\n{"type": "vote", "question": "injected', id="json-lines-injection"),
    pytest.param({"answer_id": "abc"}, id="an-object"),
    pytest.param(12, id="a-number"),
    pytest.param("", id="empty"),
])
def test_a_forged_vote_value_is_acked_and_not_recorded(
        bot: Bot, caplog: pytest.LogCaptureFixture, value: object) -> None:
    status, _text, _elapsed = post_signed(f"{bot.url}/slack/events", vote_payload(bot, value),
                                          SECRET, content_type=FORM)
    assert status == 200
    wait_until(lambda: any("not an answer id" in r.getMessage() for r in caplog.records))
    assert not [r for r in bot.ctx.feedback.records() if r["type"] == "vote"]
    assert not bot.slack.calls("chat.postEphemeral")
    assert not tracebacks(caplog)


def test_a_vote_for_an_unknown_answer_is_recorded_without_a_question(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    status, _text, _elapsed = post_signed(f"{bot.url}/slack/events",
                                          vote_payload(bot, "0123456789ab"), SECRET,
                                          content_type=FORM)
    assert status == 200
    bot.slack.wait_for("chat.postEphemeral")
    [vote] = [r for r in bot.ctx.feedback.records() if r["type"] == "vote"]
    assert vote["answer_id"] == "0123456789ab" and vote["question"] is None
    assert not tracebacks(caplog)


def test_a_vote_with_a_user_that_is_not_an_object_is_not_thanked(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    status, _text, _elapsed = post_signed(f"{bot.url}/slack/events",
                                          vote_payload(bot, "0123456789ab", user="U9"),
                                          SECRET, content_type=FORM)
    assert status == 200
    wait_until(lambda: [r for r in bot.ctx.feedback.records() if r["type"] == "vote"])
    time.sleep(0.2)
    assert not bot.slack.calls("chat.postEphemeral")  # no user to thank
    assert not tracebacks(caplog)


# --- sizes no Slack request has ---


def test_a_5_mb_body_is_answered_without_a_500(bot: Bot, caplog: pytest.LogCaptureFixture
                                               ) -> None:
    junk = "x" * 5_000_000
    status, _text = post_raw(f"{bot.url}/slack/events", junk.encode(), {"Content-Type": JSON})
    assert status == 401  # unsigned
    status, _text, elapsed = post_signed(f"{bot.url}/slack/events", junk, SECRET)
    assert status == 400 and elapsed < 3.0
    assert not tracebacks(caplog)


def test_a_5_mb_signed_event_is_acked_in_time(bot: Bot, caplog: pytest.LogCaptureFixture
                                              ) -> None:
    bot.llm.push(Reply(text="Monday [1]."))
    event = mention("When is the on-call handoff? " + "padding " * 625_000, "1600000000.100600")
    status, elapsed = bot.send_event(event, "EvHuge")
    assert status == 200 and elapsed < 3.0
    [reply] = bot.wait_for_final("C1", "1600000000.100600", timeout=60)
    assert reply["blocks"]
    assert not tracebacks(caplog)


def test_200k_characters_with_control_bytes_are_answered(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    controls = "".join(chr(c) for c in [*range(0, 32), 127])
    text = "When is the on-call handoff? " + (controls + "経費精算" * 10) * 3_900
    assert len(text) > 200_000
    bot.llm.push(Reply(text="Monday [1]."))
    status, elapsed = bot.send_event(mention(text, "1600000000.100700"), "EvControl")
    assert status == 200 and elapsed < 3.0
    [reply] = bot.wait_for_final("C1", "1600000000.100700", timeout=60)
    assert "Monday [1]." in blocks_text(reply["blocks"])
    assert not tracebacks(caplog)


def test_a_40k_character_slash_command_is_acked_and_answered(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    bot.llm.push(Reply(text="Monday [1]."))
    question = "When is the on-call handoff? " + "詳しく " * 10_000
    assert len(question) >= 40_000
    status, _response = bot.send_command(question)
    assert status == 200
    [asked] = bot.slack.wait_for("chat.postMessage")
    assert "<@U1> asked: When is the on-call handoff?" in (asked.text or "")
    replies = bot.wait_for_final("C1", "1700000000.000100", timeout=60)
    assert any("Monday [1]." in blocks_text(r.get("blocks", [])) for r in replies)
    assert not tracebacks(caplog)
