"""The adversarial suite: a restricted set whose documents, titles and file names carry MARKER,
asked about over signed HTTP on every surface. The model is the worst case — it repeats every
source it was shown, as a prompt injection would make it — so anything retrieval lets through
reaches Slack. Each denial has its twin where the rules allow the set, and there MARKER must
arrive: the check fails both ways."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.answering import ACCESS_BROKEN, NARROWED
from retrieval.access import AccessInvalid
from retrieval.embeddings import BGEM3Embeddings
from retrieval.indexer import Indexer
from retrieval.settings import Settings
from tests.access_corpus import (
    HR_CHANNEL,
    HR_GROUP,
    HR_USER,
    INJECTION,
    MARKER,
    PUBLIC_CHANNEL,
    access_toml,
    write_corpus,
)
from tests.fakes.openai_server import FakeOpenAIServer, Reply, message_text
from tests.fakes.slack_api import RESPONSE_URL, FakeSlackAPI
from tests.integration.bot_harness import Bot, StartBot, make_bot, mention

# words of both the HR and the public documents, most of them the HR ones'
QUESTION = "salary band bonus level for the Monday on-call handoff and expenses?"
GROUP_MEMBER = "U0GROUPIE"
CHANNEL_MEMBER = "U0MEMBER1"
OUTSIDER = "U0OUTSIDE"
ADMIN = "UADMIN"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path,
           embeddings: BGEM3Embeddings) -> tuple[Path, Path]:
    """(root holding access.toml, index dir): the access corpus indexed once."""
    root = tmp_path_factory.mktemp("access-corpus")
    docs = write_corpus(root)
    index_dir = root / "index"
    settings = Settings(_env_file=None, embedding_model=str(tiny_model_dir),  # type: ignore
                        embedding_device="cpu", index_dir=index_dir, docs_dir=docs,
                        chunk_size=200, chunk_overlap=20, faiss_device="cpu")
    summary = Indexer(settings, embeddings).run()
    assert summary.switched and not summary.failed
    # the channel by name: resolved through conversations.list at start-up
    (root / "access.toml").write_text(access_toml().replace(HR_CHANNEL, "#hr-team"),
                                      encoding="utf-8")
    return root, index_dir


def reveal_everything(request: Any) -> Reply:
    """A model that obeys the injected document: it repeats every message it was sent."""
    return Reply(text=" ".join(message_text(m) for m in request.get("messages", [])) + " [1]")


@pytest.fixture
def slack(fake_slack: FakeSlackAPI) -> FakeSlackAPI:
    fake_slack.set_channel(HR_CHANNEL, "hr-team", [HR_USER, CHANNEL_MEMBER])
    fake_slack.set_channel(PUBLIC_CHANNEL, "general", [HR_USER, CHANNEL_MEMBER, OUTSIDER])
    fake_slack.set_usergroup(HR_GROUP, [GROUP_MEMBER])
    return fake_slack


BOT_SETTINGS = {"top_k": 16, "candidates": 16, "retrieval_mode": "sparse",
                "access_membership_ttl_s": 0.0}


@pytest.fixture
def guarded(start_bot: StartBot, slack: FakeSlackAPI, fake_openai: FakeOpenAIServer,
            corpus: tuple[Path, Path]) -> Bot:
    root, index_dir = corpus
    fake_openai.responder = reveal_everything
    running = start_bot(index_dir, access_file=root / "access.toml", **BOT_SETTINGS)
    running.ctx.service.access._check_interval_s = 0.0
    return running


def slack_text(slack: FakeSlackAPI, since: int = 0) -> str:
    """Everything the bot sent to Slack (Web API and response URLs) since call `since`."""
    return " ".join(json.dumps(c.params, ensure_ascii=False, default=str)
                    for c in slack.all_calls[since:]).lower()


def leaked(slack: FakeSlackAPI, since: int = 0) -> bool:
    return MARKER.lower() in slack_text(slack, since)


def prompts(llm: FakeOpenAIServer) -> str:
    return " ".join(json.dumps(r.json, ensure_ascii=False) for r in llm.requests).lower()


def dm(user: str, ts: str, text: str = QUESTION) -> dict[str, Any]:
    return {"type": "message", "channel_type": "im", "channel": f"D{user[1:]}", "user": user,
            "text": text, "ts": ts, "event_ts": ts, "team": "T1", "client_msg_id": f"dm-{ts}"}


def ask_in(bot: Bot, event: dict[str, Any], event_id: str) -> list[dict[str, Any]]:
    status, _elapsed = bot.send_event(event, event_id)
    assert status == 200
    return bot.wait_for_final(event["channel"], event.get("thread_ts") or event["ts"])


# --- channel answers: the channel's sets and everyone's, never the asker's ---


def test_a_mention_in_a_public_channel_by_a_permitted_user_never_shows_the_set(
        guarded: Bot) -> None:
    ask_in(guarded, mention(QUESTION, "1800000000.000100", user=HR_USER,
                            channel=PUBLIC_CHANNEL), "Ev1")
    assert not leaked(guarded.slack) and MARKER.lower() not in prompts(guarded.llm)
    assert "on-call handoff" in slack_text(guarded.slack)  # the public documents did come
    assert guarded.slack.calls("chat.startStream")  # and streamed
    assert INJECTION.split()[3].lower() in prompts(guarded.llm)  # the injection was read


def test_a_mention_in_the_sets_own_channel_shows_it(guarded: Bot) -> None:
    ask_in(guarded, mention(QUESTION, "1800000000.000200", user=OUTSIDER, channel=HR_CHANNEL),
           "Ev2")
    assert leaked(guarded.slack)


def test_a_thread_follow_up_in_a_public_channel_never_shows_the_set(guarded: Bot) -> None:
    parent = "1800000000.000300"
    guarded.slack.set_thread(PUBLIC_CHANNEL, parent, [
        {"user": HR_USER, "text": "<@UBOT> When is the handoff?"},
        {"bot_id": "B1", "user": "UBOT", "text": "Every Monday [1]."}])
    ask_in(guarded, mention(QUESTION, "1800000000.000301", user=HR_USER,
                            channel=PUBLIC_CHANNEL, thread_ts=parent), "Ev3")
    assert not leaked(guarded.slack) and MARKER.lower() not in prompts(guarded.llm)
    assert len(guarded.llm.requests) == 2  # the condense step ran on the history


def test_a_thread_follow_up_in_the_sets_channel_shows_it(guarded: Bot) -> None:
    parent = "1800000000.000400"
    guarded.slack.set_thread(HR_CHANNEL, parent, [{"user": OUTSIDER, "text": "bands?"}])
    ask_in(guarded, mention(QUESTION, "1800000000.000401", user=OUTSIDER, channel=HR_CHANNEL,
                            thread_ts=parent), "Ev4")
    assert leaked(guarded.slack)


def test_a_group_dm_uses_only_everyones_sets_even_for_a_permitted_asker(
        guarded: Bot) -> None:
    ask_in(guarded, mention(QUESTION, "1800000000.000500", user=HR_USER,
                            channel="G0MPIM0001", channel_type="mpim"), "Ev5")
    assert not leaked(guarded.slack)


def test_a_public_slash_command_by_a_permitted_user_never_shows_the_set(
        guarded: Bot) -> None:
    status, _response = guarded.send_command(QUESTION, user=HR_USER, channel=PUBLIC_CHANNEL)
    assert status == 200
    [posted] = guarded.slack.wait_for("chat.postMessage")
    guarded.wait_for_final(PUBLIC_CHANNEL, posted.params.get("ts") or "1700000000.000100")
    assert not leaked(guarded.slack)


# --- private answers: what the asker may see ---


@pytest.mark.parametrize(("user", "sees"), [
    (HR_USER, True), (GROUP_MEMBER, True), (CHANNEL_MEMBER, True), (OUTSIDER, False)])
def test_a_dm_shows_the_set_to_exactly_the_users_it_is_granted_to(
        guarded: Bot, user: str, sees: bool) -> None:
    ask_in(guarded, dm(user, "1800000000.000600"), "Ev6")
    assert leaked(guarded.slack) is sees


@pytest.mark.parametrize(("user", "sees"), [(HR_USER, True), (OUTSIDER, False)])
def test_a_private_slash_answer_shows_the_set_to_a_permitted_user_only(
        guarded: Bot, user: str, sees: bool) -> None:
    guarded.slack.fail("chat.postMessage", "not_in_channel")  # so: answered privately
    status, _response = guarded.send_command(QUESTION, user=user, channel="C0NOBOT01")
    assert status == 200
    guarded.slack.wait_for(RESPONSE_URL, timeout=15)
    assert leaked(guarded.slack) is sees


def test_a_user_who_leaves_the_sets_channel_loses_it(guarded: Bot) -> None:
    ask_in(guarded, dm(CHANNEL_MEMBER, "1800000000.000700"), "Ev7")
    assert leaked(guarded.slack)
    guarded.slack.set_channel(HR_CHANNEL, "hr-team", [HR_USER])  # CHANNEL_MEMBER left
    since = len(guarded.slack.all_calls)
    ask_in(guarded, dm(CHANNEL_MEMBER, "1800000000.000701"), "Ev8")
    assert not leaked(guarded.slack, since)


def test_membership_slack_will_not_tell_narrows_the_answer_and_says_so(
        guarded: Bot) -> None:
    guarded.slack.fail("usergroups.users.list", "missing_scope")
    ask_in(guarded, dm(GROUP_MEMBER, "1800000000.000800"), "Ev9")
    assert not leaked(guarded.slack)
    assert NARROWED.split(" just")[0].lower() in slack_text(guarded.slack).replace("\\u2019",
                                                                                  "'")
    guarded.slack.clear_failures()
    since = len(guarded.slack.all_calls)
    ask_in(guarded, dm(GROUP_MEMBER, "1800000000.000801"), "Ev10")
    assert leaked(guarded.slack, since)


# --- answers without the model: retrieval only, apology with sources, related sources ---


@pytest.fixture
def no_model_bot(settings: Settings, embeddings: BGEM3Embeddings, slack: FakeSlackAPI,
                 corpus: tuple[Path, Path], tmp_path: Path) -> Iterator[Bot]:
    root, index_dir = corpus
    running = make_bot(settings, embeddings, index_dir, slack, None, tmp_path,
                       access_file=root / "access.toml", **BOT_SETTINGS)
    yield running
    running.server.stop()


@pytest.mark.parametrize(("channel", "sees"), [(PUBLIC_CHANNEL, False), (HR_CHANNEL, True)])
def test_retrieval_only_answers_follow_the_channel(no_model_bot: Bot, channel: str,
                                                   sees: bool) -> None:
    [reply] = ask_in(no_model_bot, mention(QUESTION, "1800000000.000900", user=HR_USER,
                                           channel=channel), "Ev11")
    assert "kotae_feedback_up" in json.dumps(reply["blocks"])  # an answer, with sources
    assert leaked(no_model_bot.slack) is sees


@pytest.mark.parametrize(("channel", "sees"), [(PUBLIC_CHANNEL, False), (HR_CHANNEL, True)])
def test_a_model_failure_apologises_with_sources_from_the_channels_sets_only(
        guarded: Bot, channel: str, sees: bool) -> None:
    guarded.llm.responder = lambda _request: Reply(status=500, error_message="upstream down")
    ask_in(guarded, mention(QUESTION, "1800000000.001000", user=HR_USER, channel=channel),
           "Ev12")
    assert leaked(guarded.slack) is sees


@pytest.mark.parametrize(("channel", "sees"), [(PUBLIC_CHANNEL, False), (HR_CHANNEL, True)])
def test_related_sources_of_an_answer_citing_nothing_follow_the_channel(
        guarded: Bot, channel: str, sees: bool) -> None:
    guarded.llm.responder = lambda _request: Reply(text="I cannot tell from these.")
    ask_in(guarded, mention(QUESTION, "1800000000.001100", user=HR_USER, channel=channel),
           "Ev13")
    assert leaked(guarded.slack) is sees


# --- status and configuration ---


def test_status_shows_the_sets_to_admins_only(guarded: Bot) -> None:
    _status, response = guarded.send_command("status", user=OUTSIDER)
    assert "access control: on" in response and "set `hr`" not in response
    assert MARKER.lower() not in response.lower()
    _status, response = guarded.send_command("status", user=ADMIN)
    assert "set `hr`: 12 documents, 12 chunks" in response
    assert "visible to *everyone* (4 documents, 4 chunks)" in response


def test_a_broken_access_file_stops_answers_without_quoting_it(
        guarded: Bot, corpus: tuple[Path, Path]) -> None:
    root, _index = corpus
    access_file = root / "access.toml"
    good = access_file.read_text(encoding="utf-8")
    try:  # a path naming a restricted file, mistyped: the message would quote it
        access_file.write_text(good.replace('"docs/hr"', f'"docs/hr/{MARKER.lower()}-x.md"'),
                               encoding="utf-8")
        [reply] = ask_in(guarded, mention(QUESTION, "1800000000.001200", user=HR_USER,
                                          channel=PUBLIC_CHANNEL), "Ev14")
        assert "access configuration cannot be used" in json.dumps(reply)
        assert ACCESS_BROKEN.split(",")[0] in json.dumps(reply, ensure_ascii=False)
        assert not leaked(guarded.slack) and not guarded.llm.requests
        _status, response = guarded.send_command("status", user=OUTSIDER)
        assert MARKER.lower() not in response.lower()
    finally:
        access_file.write_text(good, encoding="utf-8")
        later = time.time() + 10
        os.utime(access_file, (later, later))


def test_a_channel_name_slack_does_not_know_stops_the_start_up(
        start_bot: StartBot, fake_slack: FakeSlackAPI, corpus: tuple[Path, Path],
        tmp_path: Path) -> None:
    root, index_dir = corpus
    bad = tmp_path / "access.toml"
    bad.write_text(access_toml().replace(HR_CHANNEL, "#no-such-team").replace(
        "docs/hr", str(root / "docs" / "hr")), encoding="utf-8")
    with pytest.raises(AccessInvalid, match=r"line 3 \(set 'hr'\): no channel named "
                                            r"#no-such-team"):
        start_bot(index_dir, access_file=bad)


def test_an_unreachable_membership_api_at_start_up_fails_closed(
        start_bot: StartBot, fake_slack: FakeSlackAPI, corpus: tuple[Path, Path]) -> None:
    root, index_dir = corpus
    fake_slack.fail("conversations.list", "missing_scope")
    with pytest.raises(AccessInvalid, match="cannot resolve #hr-team"):
        start_bot(index_dir, access_file=root / "access.toml")


# --- reindex summaries name only the files the channel may see ---


def test_a_reindex_summary_names_a_restricted_file_only_where_the_set_is_visible(
        start_bot: StartBot, slack: FakeSlackAPI, tmp_path: Path, tiny_model_dir: Path,
        embeddings: BGEM3Embeddings) -> None:
    from tests.helpers import wait_until

    docs = write_corpus(tmp_path, hr_files=2)
    index_dir = tmp_path / "index"
    settings = Settings(_env_file=None, embedding_model=str(tiny_model_dir),  # type: ignore
                        embedding_device="cpu", index_dir=index_dir, docs_dir=docs,
                        chunk_size=200, chunk_overlap=20, faiss_device="cpu")
    Indexer(settings, embeddings).run()
    (tmp_path / "access.toml").write_text(access_toml(), encoding="utf-8")
    (docs / "hr" / f"{MARKER.lower()}-broken.md").write_text("", encoding="utf-8")
    bot = start_bot(index_dir, access_file=tmp_path / "access.toml", docs_dir=docs,
                    **BOT_SETTINGS)

    def summary_in(channel: str) -> str:
        since = len(slack.all_calls)
        status, _response = bot.send_command("reindex", user=ADMIN, channel=channel)
        assert status == 200

        def finished() -> str:
            return next((json.dumps(c.params, ensure_ascii=False) for c in slack.all_calls[since:]
                         if "finished" in str(c.params.get("text", ""))), "")

        wait_until(finished, timeout=60)
        return finished()

    public = summary_in(PUBLIC_CHANNEL)
    assert MARKER.lower() not in public.lower()
    assert "1 more skipped or warned files are not named here" in public
    in_set = summary_in(HR_CHANNEL)
    assert f"{MARKER.lower()}-broken.md" in in_set.lower()  # the twin: named where allowed
