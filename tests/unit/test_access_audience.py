"""Which audience each Slack surface answers for: channel answers are for the channel (never
the asker's own grants), DMs with kotae and response-URL answers for the asker alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from slack_sdk import WebClient

from bot.access import Audiences, SlackDirectory, is_private
from bot.question import question_from_command, question_from_event
from retrieval.access import AccessControl, Audience

ACCESS = """\
[[sets]]
name = "hr"
paths = ["docs/hr"]
users = ["U0HRBOSS1"]
"""


@pytest.fixture
def audiences(tmp_path: Path) -> Audiences:
    path = tmp_path / "access.toml"
    path.write_text(ACCESS, encoding="utf-8")
    # nothing here names a user group or channel, so no Slack call is ever made
    client = WebClient(token="xoxb-test", base_url="http://127.0.0.1:9/api/")
    return Audiences(AccessControl(path), SlackDirectory(client, ttl_s=60))


def event(**fields: object) -> dict[str, object]:
    return {"type": "app_mention", "user": "U0HRBOSS1", "channel": "C0GENERAL", "ts": "1.0",
            "text": "<@UBOT> pay bands?", **fields}


def test_a_mention_by_a_permitted_user_is_for_the_channel(audiences: Audiences) -> None:
    question = question_from_event({}, event(), "UBOT")
    assert question is not None and not is_private(question)
    assert audiences.of(question) == Audience.in_channel("C0GENERAL")


def test_a_group_dm_mention_is_for_the_group(audiences: Audiences) -> None:
    question = question_from_event({}, event(channel="G0MPIM001", channel_type="mpim"), "UBOT")
    assert question is not None
    assert audiences.of(question) == Audience.in_channel("G0MPIM001")


def test_a_dm_with_kotae_is_for_the_asker(audiences: Audiences) -> None:
    question = question_from_event({}, event(type="message", channel="D0HRBOSS1",
                                             channel_type="im", text="pay bands?"), "UBOT")
    assert question is not None and is_private(question)
    assert audiences.of(question) == Audience.private("U0HRBOSS1")


def test_a_slash_command_is_for_the_channel_until_answered_privately(
        audiences: Audiences) -> None:
    question = question_from_command({"user_id": "U0HRBOSS1", "channel_id": "C0GENERAL",
                                      "response_url": "http://127.0.0.1:9/r"}, "pay bands?")
    assert question is not None
    assert audiences.of(question) == Audience.in_channel("C0GENERAL")
    private = replace(question, surface="private")
    assert audiences.of(private) == Audience.private("U0HRBOSS1")


def test_with_access_control_off_there_is_no_audience(tmp_path: Path) -> None:
    client = WebClient(token="xoxb-test", base_url="http://127.0.0.1:9/api/")
    off = Audiences(AccessControl(None), SlackDirectory(client, ttl_s=60))
    question = question_from_event({}, event(), "UBOT")
    assert question is not None and off.of(question) is None
