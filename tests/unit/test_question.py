"""Every surface parsed into one Question: who asked, where, on which surface (bot/question.py)."""

from __future__ import annotations

import pytest

from bot.question import Question, question_from_command, question_from_event

BODY = {"team_id": "T1", "event_id": "Ev1"}


def test_a_channel_mention_is_answered_in_a_new_thread_under_it() -> None:
    event = {"type": "app_mention", "user": "U1", "text": "<@UBOT> 締め切りは？",
             "ts": "1.000100", "channel": "C1", "team": "T2"}
    assert question_from_event(BODY, event, "UBOT") == Question(
        text="締め切りは？", user="U1", team="T2", channel="C1", channel_type=None,
        surface="thread", thread_ts="1.000100", message_ts="1.000100", in_thread=False)


def test_a_follow_up_in_a_thread_is_answered_there_with_its_history() -> None:
    event = {"type": "app_mention", "user": "U1", "text": "<@UBOT> and then?",
             "ts": "1.000200", "thread_ts": "1.000100", "channel": "C1"}
    question = question_from_event(BODY, event, "UBOT")
    assert question is not None
    assert (question.thread_ts, question.message_ts, question.in_thread) == (
        "1.000100", "1.000200", True)
    assert question.team == "T1"  # the envelope's team when the event names none


def test_a_direct_message_is_a_question_and_says_where_it_was_asked() -> None:
    event = {"type": "message", "channel_type": "im", "user": "U1", "text": "hello?",
             "ts": "1.000300", "channel": "D1"}
    question = question_from_event(BODY, event, "UBOT")
    assert question is not None
    assert (question.channel, question.channel_type, question.surface) == ("D1", "im",
                                                                         "thread")


@pytest.mark.parametrize("event", [
    {"type": "message", "channel_type": "channel", "user": "U1", "text": "<@UBOT> hi",
     "ts": "1.1", "channel": "C1"},  # comes as app_mention too
    {"type": "message", "channel_type": "im", "subtype": "message_changed", "ts": "1.1",
     "channel": "D1"},
    {"type": "app_mention", "user": "U1", "bot_id": "B2", "text": "hi", "ts": "1.1",
     "channel": "C1"},
    {"type": "message", "channel_type": "im", "user": "UBOT", "text": "mine", "ts": "1.1",
     "channel": "D1"},
    {"type": "app_mention", "user": "U1", "text": 5, "ts": "1.1", "channel": "C1"},
])
def test_what_nobody_asked_the_bot_is_no_question(event: dict) -> None:
    assert question_from_event(BODY, event, "UBOT") is None


def test_a_slash_command_carries_its_asker_and_response_url_and_no_thread_yet() -> None:
    command = {"user_id": "U1", "channel_id": "C1", "team_id": "T1", "text": " q ",
               "response_url": "https://hooks.slack.com/commands/T1/1/x"}
    assert question_from_command(command, "q") == Question(
        text="q", user="U1", team="T1", channel="C1", channel_type=None, surface="thread",
        thread_ts=None, message_ts=None,
        response_url="https://hooks.slack.com/commands/T1/1/x")
    assert question_from_command({"channel_id": "C1"}, "q") is None
