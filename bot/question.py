"""Every surface a question arrives on, turned into one `Question`: who asked, where, and what.

The listeners call these parsers and hand the result on; nothing after this module reads a
Slack payload. Who asked (user, team) and where (channel, channel type, thread, surface) are
what the answer is delivered to — and what an access check needs to decide what the asker
may see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

_MENTION = re.compile(r"<@[A-Z0-9]+>")

# "thread": the answer is written in a Slack thread everyone in the channel sees;
# "private": only the asker sees it, through the slash command's response URL.
Surface = Literal["thread", "private"]


@dataclass(frozen=True)
class Question:
    text: str
    user: str
    team: str | None
    channel: str
    # Slack's word for the channel ("im", "channel", "group", "mpim") where the payload says
    # it: message events do, app_mention events and slash commands do not (None).
    channel_type: str | None
    surface: Surface
    thread_ts: str | None  # where the answer goes; None: a slash command's thread, not yet open
    message_ts: str | None  # the question's own message (for the reaction), if any
    in_thread: bool = False  # asked inside an existing thread: read it as history
    response_url: str | None = None  # slash commands: where a private answer goes


def strip_mentions(text: str) -> str:
    return _MENTION.sub("", text).strip()


def question_from_event(body: dict[str, Any], event: dict[str, Any],
                        bot_user_id: str | None) -> Question | None:
    """The question in an app_mention (in a channel or a thread) or a direct message; None
    for an event nobody asked the bot with."""
    if event.get("type") == "message" and event.get("channel_type") != "im":
        return None  # in a channel, a message that names the bot also comes as app_mention
    if event.get("subtype") or event.get("bot_id") or event.get("user") in (None, bot_user_id):
        return None  # edits, deletions, joins, other bots and ourselves
    parent = event.get("thread_ts")
    return Question(
        text=strip_mentions(event.get("text", "")), user=event["user"],
        team=event.get("team") or body.get("team_id"), channel=event["channel"],
        channel_type=event.get("channel_type"), surface="thread",
        thread_ts=parent or event["ts"], message_ts=event["ts"],
        in_thread=bool(parent) and parent != event["ts"],
    )


def question_from_command(command: dict[str, Any], text: str) -> Question:
    """A slash command's question (`text`: the command text, stripped). Its thread is opened
    when it is answered (see `Answerer.take`), so `thread_ts` is None here."""
    return Question(
        text=text, user=command["user_id"], team=command.get("team_id"),
        channel=command["channel_id"], channel_type=None, surface="thread",
        thread_ts=None, message_ts=None, response_url=command.get("response_url"),
    )
