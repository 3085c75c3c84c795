"""@-mentions in channels and threads, and direct messages."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App

from bot.context import BotContext
from bot.replies import Question, strip_mentions

logger = logging.getLogger(__name__)

HINT = "Ask me a question about your documents, e.g. `@kotae 経費精算の締め切りは？`"


def register(app: App, ctx: BotContext) -> None:
    @app.event("app_mention")
    def on_mention(body: dict[str, Any], event: dict[str, Any]) -> None:
        handle_question(ctx, body, event)

    @app.event("message")
    def on_message(body: dict[str, Any], event: dict[str, Any]) -> None:
        if event.get("channel_type") == "im":
            handle_question(ctx, body, event)


def handle_question(ctx: BotContext, body: dict[str, Any], event: dict[str, Any]) -> None:
    if event.get("subtype") or event.get("bot_id") or event.get("user") in (None,
                                                                           ctx.bot_user_id):
        return  # edits, deletions, joins, other bots and ourselves
    if not ctx.recent.first_time(body.get("event_id"), event.get("client_msg_id")):
        logger.info("duplicate delivery of %s ignored", body.get("event_id"))
        return
    thread_ts = event.get("thread_ts") or event["ts"]
    question = Question(
        text=strip_mentions(event.get("text", "")), user=event["user"],
        channel=event["channel"], thread_ts=thread_ts, message_ts=event["ts"],
        team=event.get("team") or body.get("team_id"),
        in_thread=bool(event.get("thread_ts")) and event.get("thread_ts") != event["ts"],
    )
    if not question.text:
        ctx.client.chat_postMessage(channel=question.channel, thread_ts=thread_ts, text=HINT)
        return
    ctx.ask_in_thread(question)
