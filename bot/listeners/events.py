"""@-mentions in channels and threads, and direct messages."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App, BoltRequest

from bot.context import BotContext
from bot.dedupe import is_redelivery
from bot.question import question_from_event

logger = logging.getLogger(__name__)


def register(app: App, ctx: BotContext) -> None:
    @app.event("app_mention")
    def on_mention(body: dict[str, Any], event: dict[str, Any], request: BoltRequest) -> None:
        handle_question(ctx, body, event, is_redelivery(request.headers))

    @app.event("message")
    def on_message(body: dict[str, Any], event: dict[str, Any], request: BoltRequest) -> None:
        handle_question(ctx, body, event, is_redelivery(request.headers))


def handle_question(ctx: BotContext, body: dict[str, Any], event: dict[str, Any],
                    redelivery: bool = False) -> None:
    """`redelivery`: Slack's retry of an event (see `bot.dedupe.SharedEvents` for why it
    matters while Redis is unreachable)."""
    question = question_from_event(body, event, ctx.bot_user_id)
    if question is None:
        return
    if not ctx.recent.first_time(body.get("event_id"), event.get("client_msg_id"),
                                 redelivery=redelivery):
        logger.info("duplicate delivery of %s ignored", body.get("event_id"))
        return
    ctx.answerer.take(question)
