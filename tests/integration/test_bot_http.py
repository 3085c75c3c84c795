"""The Slack bot over real HTTP: signed requests into the running app (waitress + Bolt), a fake
Slack Web API and a fake OpenAI server on 127.0.0.1."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest

from bot.delivery.thread import STREAM_CALL_CHARS, STREAM_TOTAL_CHARS
from bot.reindex import ProgressBoard
from bot.render import SECTION_TEXT_LIMIT
from retrieval.embeddings import BGEM3Embeddings
from retrieval.settings import Settings
from retrieval.versions import IndexLayout
from tests.fakes.openai_server import FakeOpenAIServer, Reply
from tests.fakes.slack_api import (
    DROP_CONNECTION,
    RESPONSE_URL_REFUSED,
    FakeSlackAPI,
    SlackCall,
)
from tests.fakes.slack_signing import (
    action_body,
    event_body,
    post_signed,
    retry_headers,
    url_verification_body,
)
from tests.helpers import wait_until
from tests.integration.bot_harness import FORM, SECRET, Bot, StartBot, blocks_text, mention


def stream_calls(slack: FakeSlackAPI) -> list[SlackCall]:
    return [c for c in slack.all_calls
            if c.method in ("chat.startStream", "chat.appendStream", "chat.stopStream")]


def is_progress_edit(call: SlackCall) -> bool:
    """A chat.update that shows partial text; the final message is the one with blocks."""
    return call.blocks is None


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


def test_missing_index_is_explained_in_the_thread(start_bot: StartBot, tmp_path: Path) -> None:
    empty = start_bot(tmp_path / "no-index")
    empty.send_event(mention("anything?", "1600000000.000800"), "Ev8")
    [reply] = empty.wait_for_final("C1", "1600000000.000800")
    assert "kotae index" in blocks_text(reply["blocks"])


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
    # the streamed preview stayed well inside Slack's 12,000 characters per call
    streamed = [str(c.params.get("markdown_text") or "") for c in stream_calls(bot.slack)]
    assert streamed and max(map(len, streamed)) <= STREAM_CALL_CHARS < 12_000
    assert sum(map(len, streamed)) <= STREAM_TOTAL_CHARS


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


def test_a_slash_command_question_is_reposted_as_text_and_pings_nobody(bot: Bot) -> None:
    bot.llm.push(Reply(text="On the 25th [1]."))
    status, _response = bot.send_command("<!channel> <!here> when is payday? a < b & c")
    assert status == 200
    [question] = bot.slack.wait_for("chat.postMessage")
    assert question.text == ("<@U1> asked: &lt;!channel&gt; &lt;!here&gt; when is payday? "
                             "a &lt; b &amp; c")


def test_slash_status_and_help(bot: Bot) -> None:
    status, response = bot.send_command("status")
    assert status == 200
    version = bot.ctx.service.index.version
    assert version and version in response and "chunks" in response
    info = bot.ctx.service.status()
    text = response
    assert f"documents: {info['documents']}" in text and info["documents"] == 11
    # a Slack date token (each reader's time zone), the server's time as its fallback
    when = info["last_indexed"]
    assert (f"last indexed: <!date^{int(when)}^{{date_short_pretty}} {{time}}|"
            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(when))}>") in text
    assert f"model: `{info['model']}` on `cpu`" in text
    assert "retrieval mode: `hybrid`" in text
    status, response = bot.send_command("help")
    assert status == 200 and "/kotae reindex" in response


def test_reindex_is_refused_for_a_non_admin(bot: Bot) -> None:
    status, _response = bot.send_command("reindex", user="U1")
    assert status == 200
    [refusal] = bot.slack.wait_for("response_url")
    assert "Only kotae admins" in refusal.params["text"]
    assert not bot.slack.calls("chat.update")


def test_admin_reindex_reports_progress_and_summary(
        start_bot: StartBot, fake_slack: FakeSlackAPI, tmp_path: Path, sample_docs: Path) -> None:
    admin_bot = start_bot(tmp_path / "index", docs_dir=sample_docs, reindex_progress_interval_s=0)
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
    # KOTAE_REINDEX_PROGRESS_INTERVAL_S=0: every step shows, in place, before the summary
    assert any(": embedding " in u and " chunks " in u for u in updates[:-1])
    assert admin_bot.ctx.service.index.version is not None  # switched in, now serving


def test_a_second_reindex_is_told_who_runs_the_first(bot: Bot) -> None:
    from bot.reindex import RunningReindex

    running = bot.ctx.reindex.running = RunningReindex(user="UADMIN", full=False)
    bot.send_command("reindex", user="UADMIN")
    [busy] = bot.slack.wait_for("response_url")
    assert "started by <@UADMIN>" in busy.params["text"]
    assert f"at <!date^{int(running.started_at)}^{{time}}|" in busy.params["text"]  # reader's zone


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
        start_bot: StartBot, fake_openai: FakeOpenAIServer) -> None:
    busy = start_bot(answer_workers=1, answers_per_user=1, queued_notice_after_s=0.1)
    fake_openai.responder = lambda _r: Reply(text="Monday [1].", delay_s=0.5)
    busy.send_event(mention("When is the on-call handoff?", "1600000000.001200"), "Ev12")
    busy.send_event(mention("When is the on-call handoff?", "1600000000.001300"), "Ev13")
    busy.wait_for_final("C1", "1600000000.001300")
    notes = [m["text"] for m in busy.bot_replies("C1", "1600000000.001300")]
    assert any("in the queue" in note for note in notes)
    busy.wait_for_final("C1", "1600000000.001200")


def test_healthz_reports_the_index(bot: Bot) -> None:
    with urlopen(f"{bot.url}/healthz", timeout=5) as response:
        health = json.loads(response.read())
    assert response.status == 200 and health["ok"] is True
    assert health["index_version"] == bot.ctx.service.index.version and health["chunks"] > 0
    assert health["embedding_device"] == "cpu"


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
        start_bot: StartBot, fake_slack: FakeSlackAPI, tmp_path: Path, sample_docs: Path) -> None:
    fake_slack.set_user("UOWNER", is_owner=True)
    allowed = start_bot(tmp_path / "index", docs_dir=sample_docs, workspace_admins_are_admins=True)
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


# --- Slack's limits and failures: rate limits, long threads, used-up response URLs ---


RETRY_AFTER_S = 5
ANSWER_TEXT = ("The on-call handoff is every Monday at 10:00 JST, in the ops channel, with the "
               "pager passed on in person [1].")


def has_blocks(call: SlackCall) -> bool:
    return call.blocks is not None


def test_a_rate_limited_progress_edit_is_skipped_without_waiting(bot: Bot) -> None:
    bot.slack.fail("chat.startStream", error="unknown_method")
    bot.slack.fail("chat.update", "ratelimited", status=429, retry_after=RETRY_AFTER_S,
                   times=1, when=is_progress_edit)
    bot.llm.push(Reply(text=ANSWER_TEXT, chunk_delay_s=0.03))
    bot.send_event(mention("When is the on-call handoff?", "1600000000.002000"), "Ev20")
    [reply] = bot.wait_for_final("C1", "1600000000.002000")
    assert "Monday at 10:00 JST" in blocks_text(reply["blocks"])
    assert "Sorry" not in blocks_text(reply["blocks"])
    limited, after = bot.slack.calls("chat.update")[:2]
    assert after.params != limited.params  # not sent again: the next edit carries more text
    [final] = [c for c in bot.slack.calls("chat.update") if has_blocks(c)]
    # the answer thread did not sleep out the Retry-After on a preview
    assert final.received_at - limited.received_at < RETRY_AFTER_S - 2


def test_a_rate_limited_stream_append_keeps_streaming_without_waiting(bot: Bot) -> None:
    bot.slack.fail("chat.appendStream", "ratelimited", status=429, retry_after=RETRY_AFTER_S,
                   times=1)
    bot.llm.push(Reply(text=ANSWER_TEXT, chunk_delay_s=0.03))
    bot.send_event(mention("When is the on-call handoff?", "1600000000.002050"), "Ev20b")
    [reply] = bot.wait_for_final("C1", "1600000000.002050")
    assert "Monday at 10:00 JST" in blocks_text(reply["blocks"])
    limited, *later = bot.slack.calls("chat.appendStream")
    assert later  # still streaming: a 429 is not "streaming unavailable"
    assert not [c for c in bot.slack.calls("chat.postMessage")
                if c.params.get("thread_ts") == "1600000000.002050"]
    [final] = [c for c in bot.slack.calls("chat.update") if has_blocks(c)]
    assert final.received_at - limited.received_at < RETRY_AFTER_S - 2


def test_a_rate_limited_final_answer_is_retried_after_retry_after(bot: Bot) -> None:
    bot.slack.fail("chat.update", "ratelimited", status=429, retry_after=1, times=1,
                   when=has_blocks)
    bot.llm.push(Reply(text=ANSWER_TEXT, chunk_delay_s=0.01))
    bot.send_event(mention("When is the on-call handoff?", "1600000000.002060"), "Ev20c")
    bot.wait_for_final("C1", "1600000000.002060")
    wait_until(lambda: len([c for c in bot.slack.calls("chat.update") if has_blocks(c)]) == 2)
    limited, retried = [c for c in bot.slack.calls("chat.update") if has_blocks(c)]
    assert retried.params == limited.params  # the same final message again...
    assert retried.received_at - limited.received_at >= 1  # ...after Retry-After
    [reply] = bot.bot_replies("C1", "1600000000.002060")
    assert "kotae_feedback_up" in blocks_text(reply["blocks"])
    assert "in person [1]" in blocks_text(reply["blocks"])


def test_progress_edits_slack_keeps_refusing_are_skipped(bot: Bot) -> None:
    bot.slack.fail("chat.startStream", error="unknown_method")
    bot.slack.fail("chat.update", "ratelimited", status=429, times=2, when=is_progress_edit)
    bot.llm.push(Reply(text=ANSWER_TEXT, chunk_delay_s=0.03))
    bot.send_event(mention("When is the on-call handoff?", "1600000000.002100"), "Ev21")
    [reply] = bot.wait_for_final("C1", "1600000000.002100")
    text = blocks_text(reply["blocks"])
    assert "Monday at 10:00 JST" in text and "Sources" in text and "Sorry" not in text


def test_a_rate_limited_reindex_progress_edit_does_not_hold_up_the_index(
        start_bot: StartBot, fake_slack: FakeSlackAPI, tmp_path: Path, sample_docs: Path) -> None:
    def is_progress(call: SlackCall) -> bool:
        return "Reindex finished" not in (call.text or "")

    admin_bot = start_bot(tmp_path / "index", docs_dir=sample_docs, reindex_progress_interval_s=0)
    fake_slack.fail("chat.update", "ratelimited", status=429, retry_after=RETRY_AFTER_S,
                    times=1, when=is_progress)
    admin_bot.send_command("reindex --full", user="UADMIN")
    wait_until(lambda: any("Reindex finished" in (c.text or "")
                           for c in fake_slack.calls("chat.update")), timeout=60)
    limited, *_rest, summary = fake_slack.calls("chat.update")
    assert summary.received_at - limited.received_at < RETRY_AFTER_S - 2
    assert not fake_slack.calls("response_url")  # a skipped edit is not posted elsewhere
    wait_for_reindex(admin_bot)


def thread_of(parent: str, replies: int) -> list[dict[str, Any]]:
    messages = [{"user": "U1", "text": "<@UBOT> message 0", "ts": parent}]
    for number in range(1, replies + 1):
        author = {"user": "U1"} if number % 2 else {"user": "UBOT", "bot_id": "BBOT"}
        messages.append({**author, "text": f"message {number}",
                         "ts": f"1600000000.{int(parent[-6:]) + number:06d}"})
    return messages


def test_thread_history_keeps_the_newest_messages_of_a_long_thread(
        start_bot: StartBot, fake_slack: FakeSlackAPI, fake_openai: FakeOpenAIServer) -> None:
    history_bot = start_bot(thread_history_messages=5)
    parent = "1600000000.003000"
    fake_slack.set_thread("C1", parent, thread_of(parent, 29))  # 30 messages
    fake_slack.replies_page_max = 15  # as Slack pages for some apps: several pages here
    fake_openai.push(Reply(text="What is message 29 about?"), Reply(text="It is [1]."))
    history_bot.send_event(mention("and the last one?", "1600000000.003100",
                                   thread_ts=parent), "Ev30")
    history_bot.wait_for_final("C1", parent)
    condense = fake_openai.requests[0].messages[-1]["content"]
    for number in range(25, 30):
        assert f"message {number}" in condense
    assert "message 24" not in condense and "message 0" not in condense
    pages = fake_slack.calls("conversations.replies")
    assert len(pages) == 2 and pages[1].params.get("cursor")


def test_thread_history_of_zero_messages_does_not_read_the_thread(
        start_bot: StartBot, fake_slack: FakeSlackAPI, fake_openai: FakeOpenAIServer) -> None:
    no_history = start_bot(thread_history_messages=0)
    parent = "1600000000.003200"
    fake_slack.set_thread("C1", parent, thread_of(parent, 3))
    fake_openai.push(Reply(text="Monday [1]."))
    no_history.send_event(mention("When is the handoff?", "1600000000.003300",
                                  thread_ts=parent), "Ev32")
    no_history.wait_for_final("C1", parent)
    assert not fake_slack.calls("conversations.replies")
    assert len(fake_openai.requests) == 1  # no history, so no condense step


@pytest.fixture
def broken_index_dir(tmp_path: Path) -> Path:
    """An index whose served version has an unreadable manifest: reading it raises a plain
    (non-domain) error, as a disk or a half-copied backup might."""
    index_dir = tmp_path / "broken-index"
    (index_dir / "versions" / "v1").mkdir(parents=True)
    (index_dir / "versions" / "v1" / "manifest.json").write_text("{not json", "utf-8")
    (index_dir / "CURRENT").write_text("v1", "utf-8")
    return index_dir


def test_private_answer_failure_is_told_through_the_response_url(
        start_bot: StartBot, fake_slack: FakeSlackAPI, broken_index_dir: Path) -> None:
    broken = start_bot(broken_index_dir)
    fake_slack.fail("chat.postMessage", "not_in_channel")  # so: answer privately
    status, _response = broken.send_command("When is the on-call handoff?")
    assert status == 200
    [apology] = fake_slack.wait_for("response_url", timeout=10)
    assert "couldn't answer that" in (apology.text or "")
    assert "went wrong on my side" in (apology.text or "")
    assert "Traceback" not in json.dumps(apology.params)
    assert "JSONDecodeError" not in json.dumps(apology.params)


def test_status_that_cannot_be_read_is_still_acknowledged(
        start_bot: StartBot, broken_index_dir: Path) -> None:
    broken = start_bot(broken_index_dir)
    status, response = broken.send_command("status")
    assert status == 200
    assert "couldn't read the index status" in response and "Traceback" not in response


def wait_for_reindex(bot: Bot) -> None:
    wait_until(lambda: bot.ctx.reindex.running is None, timeout=60)


def test_reindex_through_the_response_url_keeps_a_use_for_the_summary(
        start_bot: StartBot, fake_slack: FakeSlackAPI, tmp_path: Path, sample_docs: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # no gap between progress posts, so progress alone would use the URL up
    monkeypatch.setattr(ProgressBoard, "RESPONSE_URL_GAP_S", 0.0)
    private = start_bot(tmp_path / "index", docs_dir=sample_docs, reindex_progress_interval_s=0)
    fake_slack.fail("chat.postMessage", "not_in_channel")  # the bot is not in the channel
    private.send_command("reindex --full", user="UADMIN")
    wait_until(lambda: fake_slack.calls("response_url"), timeout=60)  # request taken
    wait_for_reindex(private)
    responses = fake_slack.calls("response_url")
    assert len(responses) == 5 and not fake_slack.calls(RESPONSE_URL_REFUSED)
    assert "started a full reindex" in (responses[0].text or "")
    # three progress posts: every use to spare, and not one more
    assert all("started a full reindex: " in (r.text or "") for r in responses[1:-1])
    assert "Reindex finished" in (responses[-1].text or "")


def test_reindex_while_the_cli_holds_the_lock_is_answered_privately(
        start_bot: StartBot, fake_slack: FakeSlackAPI, tmp_path: Path, sample_docs: Path) -> None:
    locked = start_bot(tmp_path / "index", docs_dir=sample_docs)
    with IndexLayout(tmp_path / "index").lock("kotae index (cli, test)"):
        locked.send_command("reindex", user="UADMIN")
        [busy] = fake_slack.wait_for("response_url", timeout=10)
        wait_for_reindex(locked)
    assert "kotae index (cli, test)" in (busy.text or "")
    assert not fake_slack.calls("chat.postMessage")  # nothing public, nothing to rewrite


def test_reindex_without_docs_dir_refreshes_the_indexed_folders(
        start_bot: StartBot, settings: Settings, embeddings: BGEM3Embeddings,
        fake_slack: FakeSlackAPI, tmp_path: Path, sample_docs: Path) -> None:
    from retrieval.indexer import Indexer

    team_docs = sample_docs  # "the team's documents", somewhere else than the bundled samples
    (team_docs / "team-only.md").write_text("# Team\n\nThe team offsite is in May.\n", "utf-8")
    no_docs_dir = Settings(_env_file=None,  # type: ignore[call-arg]
                           **settings.model_dump(exclude={"docs_dir"}))
    assert "docs_dir" not in no_docs_dir.model_fields_set  # KOTAE_DOCS_DIR unset
    index_dir = tmp_path / "index"
    first = Indexer(no_docs_dir.model_copy(update={"index_dir": index_dir}),
                    embeddings).run([team_docs])
    assert first.switched and len(first.added) == 12
    (team_docs / "late-note.md").write_text("# Late\n\nAdded after the first index.\n", "utf-8")

    bot = start_bot(index_dir, settings=no_docs_dir, reindex_progress_interval_s=0)
    bot.send_command("reindex", user="UADMIN")
    wait_until(lambda: any("Reindex finished" in (c.text or "")
                           for c in fake_slack.calls("chat.update")), timeout=60)
    wait_for_reindex(bot)
    summary = fake_slack.calls("chat.update")[-1].text or ""
    assert "added 1, updated 0, removed 0, unchanged 12" in summary
    assert bot.ctx.service.status()["documents"] == 13


# --- streaming ---


def test_streamed_text_is_neutralised_and_stopped_with_the_sources(bot: Bot) -> None:
    bot.llm.push(Reply(text="Tell <!channel> and <@U999> & <https://evil.example|a link>: "
                            "the handoff is on Monday [1].", chunk_delay_s=0.02))
    bot.send_event(mention("When is the on-call handoff?", "1600000000.004000"), "Ev40")
    [reply] = bot.wait_for_final("C1", "1600000000.004000")
    streamed = "".join(str(c.params.get("markdown_text") or "") for c in stream_calls(bot.slack))
    assert "handoff is on Monday [1]." in streamed
    assert "<!channel>" not in streamed and "<@U999>" not in streamed and "<https" not in streamed
    assert "&lt;!channel&gt;" in streamed and "&lt;@U999&gt;" in streamed
    [stop] = bot.slack.calls("chat.stopStream")
    closing = blocks_text(stop.blocks or [])
    assert "Sources" in closing and "kotae_feedback_up" in closing
    assert "handoff is on Monday" not in closing  # the answer text is not appended twice
    final = blocks_text(reply["blocks"])  # then chat.update swapped in the Block Kit answer
    assert "handoff is on Monday [1]" in final and "&lt;!channel&gt;" in final


def test_a_streamed_reply_slack_will_not_edit_stays_the_answer(bot: Bot) -> None:
    bot.slack.fail("chat.update", "cant_update_message")
    bot.llm.push(Reply(text="The handoff is every Monday at 10:00 JST [1].",
                       chunk_delay_s=0.02))
    bot.send_event(mention("When is the on-call handoff?", "1600000000.004100"), "Ev41")
    [reply] = bot.wait_for_final("C1", "1600000000.004100")
    time.sleep(0.3)
    assert len(bot.bot_replies("C1", "1600000000.004100")) == 1  # not posted a second time
    text = blocks_text(reply["blocks"])
    assert "every Monday at 10:00 JST [1]." in reply["text"]
    assert "Sources" in text and "kotae_feedback_up" in text


def streamed_text(slack: FakeSlackAPI) -> str:
    return "".join(str(c.params.get("markdown_text") or "") for c in stream_calls(slack))


def test_a_renumbered_answer_slack_will_not_edit_is_posted_as_rendered(bot: Bot) -> None:
    """The stream carries the model's raw `[2]`; the answer says `[1]`. Where the stream cannot
    be edited into the answer, the answer is posted: the raw text is not what was answered."""
    bot.slack.fail("chat.update", "cant_update_message")
    bot.llm.push(Reply(text="The handoff is every Monday at 10:00 JST [2].",
                       chunk_delay_s=0.02))
    bot.send_event(mention("When is the on-call handoff?", "1600000000.004200"), "Ev42")
    bot.wait_for_final("C1", "1600000000.004200")
    assert "The handoff is" in streamed_text(bot.slack)
    [posted] = [c for c in bot.slack.calls("chat.postMessage")
                if c.params.get("thread_ts") == "1600000000.004200"]
    final = blocks_text(posted.blocks or [])
    assert "every Monday at 10:00 JST [1]." in final and "[2]" not in final
    assert "Sources" in final and "kotae_feedback_up" in final
    [stop] = bot.slack.calls("chat.stopStream")
    assert not stop.blocks  # no sources under text whose markers they do not match


def test_an_answer_cut_short_by_the_model_is_not_left_as_the_streamed_text(bot: Bot) -> None:
    bot.slack.fail("chat.update", "cant_update_message")
    bot.llm.push(Reply(text="The handoff is every Monday at 10:00 JST, in the ops channel [1].",
                       chunk_delay_s=0.02, fail_after_chunks=4))
    bot.send_event(mention("When is the on-call handoff?", "1600000000.004300"), "Ev43")
    bot.wait_for_final("C1", "1600000000.004300")
    assert "The handoff is every" in streamed_text(bot.slack)
    [posted] = [c for c in bot.slack.calls("chat.postMessage")
                if c.params.get("thread_ts") == "1600000000.004300"]
    assert posted.blocks  # the final message (sources, or an apology) follows the partial one


def test_a_network_failure_mid_stream_skips_an_update_not_the_answer(bot: Bot) -> None:
    # the connection to Slack drops on a stream append (and on slack_sdk's own retry of it):
    # that update is skipped, the text follows with the next one, and the answer lands
    bot.slack.fail("chat.appendStream", status=DROP_CONNECTION, times=2)
    bot.llm.push(Reply(text="The handoff is every Monday at 10:00 JST, in the ops channel [1].",
                       chunk_delay_s=0.05))
    bot.send_event(mention("When is the on-call handoff?", "1600000000.004400"), "Ev44")
    [reply] = bot.wait_for_final("C1", "1600000000.004400")
    text = blocks_text(reply["blocks"])
    assert "every Monday at 10:00 JST" in text and "Sorry" not in text
    assert len(bot.slack.calls("chat.appendStream")) > 2  # streaming went on after the drop


# --- surfaces without a test so far ---


def test_same_message_under_two_event_ids_is_answered_once(bot: Bot) -> None:
    bot.llm.push(Reply(text="Monday [1].", chunk_delay_s=0.02))
    event = mention("When is the on-call handoff?", "1600000000.005000")
    assert bot.send_event(event, "Ev50-a")[0] == 200
    assert bot.send_event(event, "Ev50-b")[0] == 200  # e.g. a second subscription's copy
    bot.wait_for_final("C1", "1600000000.005000")
    time.sleep(0.5)
    assert len(bot.bot_replies("C1", "1600000000.005000")) == 1
    assert len(bot.llm.requests) == 1


def test_url_verification_is_answered_with_the_challenge(bot: Bot) -> None:
    status, text, _elapsed = post_signed(f"{bot.url}/slack/events",
                                         url_verification_body("3eZbrw1aBm2rZgRNFdxV2595E9CY3gm"),
                                         SECRET)
    assert status == 200
    assert json.loads(text) == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gm"}


def test_final_message_refused_ends_in_an_apology(bot: Bot) -> None:
    def has_feedback_buttons(call: SlackCall) -> bool:
        return "kotae_feedback" in blocks_text(call.blocks or [])

    # Slack refuses the answer's blocks wherever they go; the apology (no buttons) lands
    bot.slack.fail("chat.update", "invalid_blocks", when=has_feedback_buttons)
    bot.slack.fail("chat.postMessage", "invalid_blocks", when=has_feedback_buttons)
    bot.slack.fail("chat.stopStream", "invalid_blocks", when=has_feedback_buttons)
    bot.llm.push(Reply(text="Monday [1].", chunk_delay_s=0.02))
    bot.send_event(mention("When is the on-call handoff?", "1600000000.005100"), "Ev51")
    [reply] = bot.wait_for_final("C1", "1600000000.005100")
    text = blocks_text(reply["blocks"])
    assert "Sorry — I couldn't answer that" in text and "went wrong on my side" in text
    assert "Traceback" not in text and "invalid_blocks" not in text
