"""@-mentions in channels and threads, and direct messages."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App

from bot.context import BotContext
from bot.question import question_from_event

logger = logging.getLogger(__name__)


def register(app: App, ctx: BotContext) -> None:
    @app.event("app_mention")
    def on_mention(body: dict[str, Any], event: dict[str, Any]) -> None:
        handle_question(ctx, body, event)

    @app.event("message")
    def on_message(body: dict[str, Any], event: dict[str, Any]) -> None:
        handle_question(ctx, body, event)


def handle_question(ctx: BotContext, body: dict[str, Any], event: dict[str, Any]) -> None:
    question = question_from_event(body, event, ctx.bot_user_id)
    if question is None:
        return
    if not ctx.recent.first_time(body.get("event_id"), event.get("client_msg_id")):
        logger.info("duplicate delivery of %s ignored", body.get("event_id"))
        return
    ctx.answerer.take(question)
