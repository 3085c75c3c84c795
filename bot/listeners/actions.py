"""👍/👎 feedback buttons under answers."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App

from bot.context import BotContext
from bot.feedback import is_answer_id
from bot.render import FEEDBACK_DOWN_ACTION_ID, FEEDBACK_UP_ACTION_ID

logger = logging.getLogger(__name__)


def register(app: App, ctx: BotContext) -> None:
    @app.action(FEEDBACK_UP_ACTION_ID)
    def on_up(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        record_vote(ctx, ack, body, action, "up")

    @app.action(FEEDBACK_DOWN_ACTION_ID)
    def on_down(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        record_vote(ctx, ack, body, action, "down")


def record_vote(ctx: BotContext, ack: Ack, body: dict[str, Any], action: dict[str, Any],
                vote: str) -> None:
    ack()
    answer_id = action.get("value")
    if not is_answer_id(answer_id):
        logger.warning("ignored a vote whose value is not an answer id (%s)",
                       type(answer_id).__name__)
        return
    user = _text_at(body, "user", "id") or ""
    channel = _text_at(body, "channel", "id")
    ctx.feedback.vote(answer_id, user, vote, channel)
    thread_ts = _text_at(body, "message", "thread_ts") or _text_at(body, "message", "ts")
    if channel and user:
        thanks = "Thanks for the feedback!" if vote == "up" else (
            "Thanks — noted. The admins review answers marked unhelpful.")
        ctx.client.chat_postEphemeral(channel=channel, user=user, text=thanks,
                                      thread_ts=thread_ts)


def _text_at(payload: Any, *keys: str) -> str | None:
    """payload[key][key]…, when every step is an object and the end is a string."""
    for key in keys:
        payload = payload.get(key) if isinstance(payload, dict) else None
    return payload if isinstance(payload, str) else None
