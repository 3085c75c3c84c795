"""👍/👎 feedback buttons under answers."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App

from bot.context import BotContext
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
    user = body.get("user", {}).get("id", "")
    channel = body.get("channel", {}).get("id")
    ctx.feedback.vote(action.get("value", ""), user, vote, channel)
    thread_ts = body.get("message", {}).get("thread_ts") or body.get("message", {}).get("ts")
    if channel and user:
        thanks = "Thanks for the feedback!" if vote == "up" else (
            "Thanks — noted. The admins review answers marked unhelpful.")
        ctx.client.chat_postEphemeral(channel=channel, user=user, text=thanks,
                                      thread_ts=thread_ts)
