"""The Slack bot over real HTTP: signed requests into the running app (waitress + Bolt), a fake
Slack Web API and a fake OpenAI server on 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest

from bot.app import create_app
from bot.context import BotContext
from bot.render import SECTION_TEXT_LIMIT
from bot.server import HttpServer
from bot.settings import BotSettings
from retrieval.embeddings import BGEM3Embeddings
from retrieval.service import KotaeService
from retrieval.settings import Settings
from tests.fakes.openai_server import FakeOpenAIServer, Reply
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_signing import (
    action_body,
    event_body,
    post_signed,
    retry_headers,
    slash_body,
)

SECRET = "test-signing-secret"
FORM = "application/x-www-form-urlencoded"


@dataclass
class Bot:
    url: str
    ctx: BotContext
    slack: FakeSlackAPI
    llm: FakeOpenAIServer
    server: HttpServer

    def send_event(self, event: dict[str, Any], event_id: str,
                   headers: dict[str, str] | None = None) -> tuple[int, float]:
        status, _text, elapsed = post_signed(f"{self.url}/slack/events",
                                             event_body(event, event_id), SECRET,
                                             extra_headers=headers)
        return status, elapsed

    def send_command(self, text: str, user: str = "U1", channel: str = "C1"
                     ) -> tuple[int, str]:
        body = slash_body(text=text, user_id=user, channel_id=channel,
                          response_url=self.slack.response_url())
        status, response, _elapsed = post_signed(f"{self.url}/slack/events", body, SECRET,
                                                 content_type=FORM)
        return status, response

    def bot_replies(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        return [m for m in self.slack.thread_messages(channel, thread_ts) if m.get("bot_id")]

    def wait_for_final(self, channel: str, thread_ts: str, count: int = 1,
                       timeout: float = 20.0) -> list[dict[str, Any]]:
        """Bot replies in the thread once they carry their final blocks."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = self.bot_replies(channel, thread_ts)
            finished = [r for r in replies if r.get("blocks")]
            if len(finished) >= count:
                time.sleep(0.3)  # let anything extra (a duplicate) show up too
                return self.bot_replies(channel, thread_ts)
            time.sleep(0.05)
        replies = self.bot_replies(channel, thread_ts)
        raise AssertionError(f"no final reply in {thread_ts}: {replies}")


def mention(text: str, ts: str, user: str = "U1", channel: str = "C1",
            thread_ts: str | None = None, **extra: Any) -> dict[str, Any]:
    event = {"type": "app_mention", "user": user, "text": f"<@UBOT> {text}", "ts": ts,
             "channel": channel, "event_ts": ts, "team": "T1",
             "client_msg_id": f"msg-{ts}", **extra}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def blocks_text(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def make_bot(settings: Settings, embeddings: BGEM3Embeddings, index_dir: Path,
             fake_slack: FakeSlackAPI, fake_openai: FakeOpenAIServer | None,
             tmp_path: Path, **overrides: Any) -> Bot:
    values = {**settings.model_dump(), "index_dir": index_dir, "chat_max_retries": 0,
              "chat_timeout": 5.0, "slack_bot_token": "xoxb-test",
              "slack_signing_secret": SECRET, "slack_api_url": fake_slack.base_url,
              "port": 0, "admin_user_ids": ["UADMIN"], "stream_update_interval_s": 0.05,
              "feedback_path": tmp_path / "feedback.jsonl", **overrides}
    if fake_openai is not None:
        values.update(openai_api_key="sk-test", openai_base_url=fake_openai.base_url)
    bot_settings = BotSettings(_env_file=None, **values)  # type: ignore[call-arg]
    service = KotaeService(bot_settings, embeddings=embeddings)
    app, ctx = create_app(bot_settings, service)
    server = HttpServer(app, lambda: service.status(), "127.0.0.1", 0, 4).start()
    return Bot(f"http://127.0.0.1:{server.port}", ctx, fake_slack, fake_openai, server)


@pytest.fixture
def bot(settings: Settings, embeddings: BGEM3Embeddings, sample_index_dir: Path,
        fake_slack: FakeSlackAPI, fake_openai: FakeOpenAIServer, tmp_path: Path
        ) -> Iterator[Bot]:
    running = make_bot(settings, embeddings, sample_index_dir, fake_slack, fake_openai,
                       tmp_path)
    yield running
    running.server.stop()


def test_mention_gets_exactly_one_threaded_reply_with_citations(bot: Bot) -> None:
    bot.llm.push(Reply(text="On-call handoff happens every Monday at 10:00 JST [1].",
                       chunk_delay_s=0.01))
    status, elapsed = bot.send_event(mention("When is the on-call handoff?", "1600000000.000100"),
                                     "Ev1")
    assert status == 200 and elapsed < 1.0
    [reply] = bot.wait_for_final("C1", "1600000000.000100")
    assert reply["thread_ts"] == "1600000000.000100"
    text = blocks_text(reply["blocks"])
    assert "Monday at 10:00 JST [1]" in text
    assert "Sources" in text and "kotae_feedback_up" in text
    # the answer grew in place through Slack's streaming API first
    assert bot.slack.calls("chat.startStream")
    assert bot.slack.calls("chat.startStream")[0].params["thread_ts"] == "1600000000.000100"


def test_retried_event_is_answered_once(bot: Bot) -> None:
    bot.llm.push(Reply(text="経費精算の締め切りは毎月25日です [1]。", chunk_delay_s=0.05))
    event = mention("経費精算の締め切りは？", "1600000000.000200")
    assert bot.send_event(event, "Ev2")[0] == 200
    time.sleep(0.2)  # the first answer is being written while Slack retries
    assert bot.send_event(event, "Ev2", retry_headers(1))[0] == 200
    assert bot.send_event(event, "Ev2", retry_headers(2, "http_error"))[0] == 200
    replies = bot.wait_for_final("C1", "1600000000.000200")
    time.sleep(0.5)
    assert len(bot.bot_replies("C1", "1600000000.000200")) == len(replies) == 1
    assert len(bot.llm.requests) == 1


def test_bad_signature_and_stale_timestamp_are_rejected(bot: Bot) -> None:
    body = event_body(mention("hi", "1600000000.000300"), "Ev3")
    status, _text, _elapsed = post_signed(f"{bot.url}/slack/events", body, "wrong-secret")
    assert status == 401
    stale = int(time.time()) - 60 * 10
    status, _text, _elapsed = post_signed(f"{bot.url}/slack/events", body, SECRET,
                                          timestamp=stale)
    assert status == 401
    time.sleep(0.3)
    assert not bot.slack.calls("chat.postMessage") and not bot.llm.requests


def test_direct_message_is_answered(bot: Bot) -> None:
    bot.llm.push(Reply(text="20 days of paid vacation [1]."))
    event = {"type": "message", "channel_type": "im", "channel": "D1", "user": "U1",
             "text": "How many vacation days do I get?", "ts": "1600000000.000400",
             "event_ts": "1600000000.000400", "client_msg_id": "dm-1"}
    assert bot.send_event(event, "Ev4")[0] == 200
    [reply] = bot.wait_for_final("D1", "1600000000.000400")
    assert "20 days of paid vacation [1]" in blocks_text(reply["blocks"])


def test_thread_follow_up_uses_the_history(bot: Bot) -> None:
    parent = "1600000000.000500"
    bot.slack.set_thread("C1", parent, [
        {"type": "message", "user": "U1", "text": "<@UBOT> 経費精算について教えて", "ts": parent},
        {"type": "message", "user": "UBOT", "bot_id": "BBOT",
         "text": "ラクラク精算から申請します [1]。", "ts": "1600000000.000501",
         "thread_ts": parent},
    ])
    bot.llm.push(Reply(text="経費精算の締め切りはいつですか？"), Reply(text="毎月25日です [1]。"))
    follow_up = mention("締め切りは？", "1600000000.000502", thread_ts=parent)
    assert bot.send_event(follow_up, "Ev5")[0] == 200
    bot.wait_for_final("C1", parent)
    condense = bot.llm.requests[0].messages[-1]["content"]
    assert "user: 経費精算について教えて" in condense
    assert "assistant: ラクラク精算から申請します [1]。" in condense
    assert "締め切りは？" in condense


def test_bot_messages_edits_and_other_bots_are_ignored(bot: Bot) -> None:
    ignored = [
        mention("hi from a bot", "1600000000.000600", bot_id="BOTHER"),
        {"type": "message", "channel_type": "im", "channel": "D1", "user": "UBOT",
         "text": "my own message", "ts": "1600000000.000601"},
        {"type": "message", "channel_type": "im", "channel": "D1", "subtype": "message_changed",
         "message": {"text": "edited"}, "ts": "1600000000.000602"},
        {"type": "message", "channel_type": "im", "channel": "D1",
         "subtype": "message_deleted", "ts": "1600000000.000603"},
    ]
    for number, event in enumerate(ignored):
        assert bot.send_event(event, f"Ev6-{number}")[0] == 200
    time.sleep(0.5)
    assert not bot.llm.requests
    assert not bot.slack.calls("chat.postMessage") and not bot.slack.calls("chat.startStream")


def test_llm_failure_posts_an_apology_with_sources(bot: Bot) -> None:
    bot.llm.responder = lambda _request: Reply(status=500, error_message="upstream down")
    assert bot.send_event(mention("When is the on-call handoff?", "1600000000.000700"),
                          "Ev7")[0] == 200
    [reply] = bot.wait_for_final("C1", "1600000000.000700")
    text = blocks_text(reply["blocks"])
    assert "unavailable" in text and "Related sources" in text
    assert "Traceback" not in text


def test_missing_index_is_explained_in_the_thread(
        settings: Settings, embeddings: BGEM3Embeddings, fake_slack: FakeSlackAPI,
        fake_openai: FakeOpenAIServer, tmp_path: Path) -> None:
    empty = make_bot(settings, embeddings, tmp_path / "no-index", fake_slack, fake_openai,
                     tmp_path)
    try:
        empty.send_event(mention("anything?", "1600000000.000800"), "Ev8")
        [reply] = empty.wait_for_final("C1", "1600000000.000800")
        assert "kotae index" in blocks_text(reply["blocks"])
    finally:
        empty.server.stop()


def test_very_long_answer_is_split_within_slack_limits(bot: Bot) -> None:
    paragraph = ("経費精算の締め切りは毎月25日です [1]。" + "\n\n"
                 + "Receipts must be attached to every claim [1]. " * 20 + "\n\n")
    bot.llm.push(Reply(text=paragraph * 160))  # ~150,000 characters: over 45 full sections
    bot.send_event(mention("Explain everything about expenses", "1600000000.000900"), "Ev9")
    bot.wait_for_final("C1", "1600000000.000900", timeout=60)
    time.sleep(1.0)
    replies = bot.bot_replies("C1", "1600000000.000900")
    assert len(replies) >= 2
    body = "".join(block["text"]["text"] for reply in replies for block in reply["blocks"]
                   if block["type"] == "section" and "Sources" not in block["text"]["text"])
    assert body.count("Receipts must be attached") == 20 * 160  # nothing lost in the split
    for reply in replies:
        assert len(reply["blocks"]) <= 50
        for block in reply["blocks"]:
            if block["type"] == "section":
                assert len(block["text"]["text"]) <= SECTION_TEXT_LIMIT
        assert len(reply["text"]) <= 40_000


def test_japanese_question_takes_the_japanese_path(bot: Bot) -> None:
    def in_language(request: dict) -> Reply:
        japanese = "Answer in Japanese" in request["messages"][0]["content"]
        return Reply(text="毎月25日です [1]。" if japanese else "On the 25th [1].")

    bot.llm.responder = in_language
    bot.send_event(mention("経費精算の締め切りはいつですか？", "1600000000.001000"), "Ev10")
    [reply] = bot.wait_for_final("C1", "1600000000.001000")
    assert "毎月25日です" in blocks_text(reply["blocks"])


def test_slash_command_question_is_answered_in_a_thread(bot: Bot) -> None:
    bot.llm.push(Reply(text="Every Monday at 10:00 JST [1]."))
    status, _response = bot.send_command("When is the on-call handoff?")
    assert status == 200
    [question] = bot.slack.wait_for("chat.postMessage")
    assert "<@U1> asked: When is the on-call handoff?" in question.text
    question_ts = "1700000000.000100"  # the first ts the fake Web API hands out
    replies = bot.wait_for_final("C1", question_ts)
    assert any("Every Monday at 10:00 JST [1]" in blocks_text(r.get("blocks", []))
               for r in replies)


def test_slash_status_and_help(bot: Bot) -> None:
    status, response = bot.send_command("status")
    assert status == 200
    version = bot.ctx.service.index.version
    assert version and version in response and "chunks" in response
    status, response = bot.send_command("help")
    assert status == 200 and "/kotae reindex" in response


def test_reindex_is_refused_for_a_non_admin(bot: Bot) -> None:
    status, _response = bot.send_command("reindex", user="U1")
    assert status == 200
    [refusal] = bot.slack.wait_for("response_url")
    assert "Only kotae admins" in refusal.params["text"]
    assert not bot.slack.calls("chat.update")


def test_admin_reindex_reports_progress_and_summary(
        settings: Settings, embeddings: BGEM3Embeddings, fake_slack: FakeSlackAPI,
        fake_openai: FakeOpenAIServer, tmp_path: Path, sample_docs: Path) -> None:
    admin_bot = make_bot(settings, embeddings, tmp_path / "index", fake_slack, fake_openai,
                         tmp_path, docs_dir=sample_docs)
    try:
        status, _response = admin_bot.send_command("reindex --full", user="UADMIN")
        assert status == 200
        [progress] = fake_slack.wait_for("chat.postMessage", timeout=10)
        assert "<@UADMIN> started a full reindex" in progress.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            updates = [c.params.get("text", "") for c in fake_slack.calls("chat.update")]
            if any("Reindex finished" in u for u in updates):
                break
            time.sleep(0.1)
        final = updates[-1]
        assert "Reindex finished" in final and "added 11" in final
        assert admin_bot.ctx.service.index.version is not None  # switched in, now serving
    finally:
        admin_bot.server.stop()


def test_a_second_reindex_is_told_who_runs_the_first(bot: Bot) -> None:
    from bot.reindex import RunningReindex

    bot.ctx.reindex.running = RunningReindex(user="UADMIN", full=False)
    bot.send_command("reindex", user="UADMIN")
    [busy] = bot.slack.wait_for("response_url")
    assert "started by <@UADMIN>" in busy.params["text"]


def test_feedback_vote_is_recorded_with_the_question(bot: Bot) -> None:
    bot.llm.push(Reply(text="Monday [1]."))
    bot.send_event(mention("When is the on-call handoff?", "1600000000.001100"), "Ev11")
    [reply] = bot.wait_for_final("C1", "1600000000.001100")
    button = next(e for b in reply["blocks"] if b["type"] == "actions"
                  for e in b["elements"] if e["action_id"] == "kotae_feedback_down")
    payload = {"type": "block_actions", "user": {"id": "U9"}, "team": {"id": "T1"},
               "channel": {"id": "C1"}, "container": {"type": "message"},
               "message": {"ts": reply["ts"], "thread_ts": "1600000000.001100"},
               "actions": [{**button, "type": "button", "block_id": "kotae_feedback",
                            "action_ts": "1"}],
               "response_url": bot.slack.response_url(), "trigger_id": "t"}
    status, _text, _elapsed = post_signed(f"{bot.url}/slack/events", action_body(payload),
                                          SECRET, content_type=FORM)
    assert status == 200
    bot.slack.wait_for("chat.postEphemeral")
    votes = [r for r in bot.ctx.feedback.records() if r["type"] == "vote"]
    assert votes == [{**votes[0], "answer_id": button["value"], "vote": "down", "user": "U9",
                      "question": "When is the on-call handoff?"}]


def test_over_the_limit_users_are_told_they_are_queued(
        settings: Settings, embeddings: BGEM3Embeddings, sample_index_dir: Path,
        fake_slack: FakeSlackAPI, fake_openai: FakeOpenAIServer, tmp_path: Path) -> None:
    busy = make_bot(settings, embeddings, sample_index_dir, fake_slack, fake_openai, tmp_path,
                    answer_workers=1, answers_per_user=1, queued_notice_after_s=0.1)
    try:
        fake_openai.responder = lambda _r: Reply(text="Monday [1].", delay_s=0.5)
        busy.send_event(mention("When is the on-call handoff?", "1600000000.001200"), "Ev12")
        busy.send_event(mention("When is the on-call handoff?", "1600000000.001300"), "Ev13")
        busy.wait_for_final("C1", "1600000000.001300")
        notes = [m["text"] for m in busy.bot_replies("C1", "1600000000.001300")]
        assert any("in the queue" in note for note in notes)
        busy.wait_for_final("C1", "1600000000.001200")
    finally:
        busy.server.stop()


def test_healthz_reports_the_index(bot: Bot) -> None:
    with urlopen(f"{bot.url}/healthz", timeout=5) as response:
        health = json.loads(response.read())
    assert response.status == 200 and health["ok"] is True
    assert health["index_version"] == bot.ctx.service.index.version and health["chunks"] > 0


def test_without_streaming_the_reply_grows_by_edits(bot: Bot) -> None:
    bot.slack.fail("chat.startStream", error="unknown_method")
    bot.slack.fail("assistant.threads.setStatus", error="not_allowed")
    bot.llm.push(Reply(text="The on-call handoff is every Monday at 10:00 JST [1].",
                       chunk_delay_s=0.03))
    bot.send_event(mention("When is the on-call handoff?", "1600000000.001400"), "Ev14")
    [reply] = bot.wait_for_final("C1", "1600000000.001400")
    assert "Monday at 10:00 JST [1]" in blocks_text(reply["blocks"])
    [placeholder] = [c for c in bot.slack.calls("chat.postMessage")
                     if c.params.get("thread_ts") == "1600000000.001400"]
    assert placeholder.text  # the first words, shown at once
    updates = [c for c in bot.slack.calls("chat.update") if c.params["ts"] == reply["ts"]]
    assert len(updates) >= 2 and updates[-1].blocks  # grew, then the final Block Kit message
    # no assistant status here, so the question got a ⏳ reaction, removed when done
    [added] = bot.slack.calls("reactions.add")
    assert added.params["timestamp"] == "1600000000.001400"
    assert bot.slack.wait_for("reactions.remove")


def test_workspace_admins_may_reindex_when_allowed(
        settings: Settings, embeddings: BGEM3Embeddings, fake_slack: FakeSlackAPI,
        fake_openai: FakeOpenAIServer, tmp_path: Path, sample_docs: Path) -> None:
    fake_slack.set_user("UOWNER", is_owner=True)
    allowed = make_bot(settings, embeddings, tmp_path / "index", fake_slack, fake_openai,
                       tmp_path, docs_dir=sample_docs, workspace_admins_are_admins=True)
    try:
        allowed.send_command("reindex", user="UOWNER")
        [progress] = fake_slack.wait_for("chat.postMessage", timeout=10)
        assert "<@UOWNER> started a reindex" in progress.text
        [lookup] = fake_slack.calls("users.info")
        assert lookup.params["user"] == "UOWNER"
        allowed.send_command("reindex", user="UPLAIN")  # a regular member: refused
        [refusal] = fake_slack.wait_for("response_url")
        assert "Only kotae admins" in refusal.params["text"]
        deadline = time.monotonic() + 60  # let the running reindex finish before teardown
        while time.monotonic() < deadline and allowed.ctx.reindex.running is not None:
            time.sleep(0.1)
    finally:
        allowed.server.stop()
