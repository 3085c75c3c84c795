"""Every surface a question arrives on, turned into one `Question`: who asked, where, and what.

The listeners call these parsers and hand the result on; nothing after this module reads a
Slack payload. Who asked (user, team) and where (channel, channel type, thread, surface) are
what the answer is delivered to — and what an access check needs to decide what the asker
may see.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

logger = logging.getLogger(__name__)

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


class _Asked(BaseModel):
    """The fields a question is read from, with the types Slack sends: a payload that has
    them otherwise was not sent by Slack, and is not a question."""

    model_config = ConfigDict(extra="ignore", strict=True)


Fields = TypeVar("Fields", bound=_Asked)


class _Message(_Asked):  # an app_mention or message event
    user: str
    channel: str
    ts: str
    text: str = ""
    thread_ts: str | None = None
    team: str | None = None
    channel_type: str | None = None


class _Command(_Asked):  # a slash command's form fields
    user_id: str
    channel_id: str
    team_id: str | None = None
    response_url: str | None = None


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
    message = _read(_Message, event, body.get("event_id"))
    if message is None:
        return None
    team = body.get("team_id")
    return Question(
        text=strip_mentions(message.text), user=message.user,
        team=message.team or (team if isinstance(team, str) else None),
        channel=message.channel, channel_type=message.channel_type, surface="thread",
        thread_ts=message.thread_ts or message.ts, message_ts=message.ts,
        in_thread=bool(message.thread_ts) and message.thread_ts != message.ts,
    )


def question_from_command(command: dict[str, Any], text: str) -> Question | None:
    """A slash command's question (`text`: the command text, stripped); None when the command
    does not say who ran it where. Its thread is opened when it is answered (see
    `Answerer.take`), so `thread_ts` is None here."""
    fields = _read(_Command, command, command.get("trigger_id"))
    if fields is None:
        return None
    return Question(
        text=text, user=fields.user_id, team=fields.team_id, channel=fields.channel_id,
        channel_type=None, surface="thread", thread_ts=None, message_ts=None,
        response_url=fields.response_url,
    )


def _read(model: type[Fields], payload: dict[str, Any], name: object) -> Fields | None:
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        first = error.errors()[0]
        logger.warning("ignored %s: not a question as Slack sends one (%s: %s)", name or
                       "a payload", ".".join(map(str, first["loc"])), first["msg"])
        return None
