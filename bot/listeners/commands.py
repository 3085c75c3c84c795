"""The slash command (default `/kotae`): a question, `status`, `help`, admin `reindex [--full]`."""

from __future__ import annotations

import logging
import time
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk.errors import SlackApiError

from bot.context import BotContext
from bot.render import render_answer, render_apology
from bot.replies import Question, failure_reason

logger = logging.getLogger(__name__)


def help_text(command: str) -> str:
    return "\n".join([
        "*kotae* answers questions from your team's documents, with sources.",
        f"• `{command} <question>` — ask (also: @-mention me in a channel or DM me)",
        f"• `{command} status` — index version, documents, chunks, model",
        f"• `{command} reindex [--full]` — rebuild the index (admins only)",
        f"• `{command} help` — this message",
    ])


def status_text(status: dict[str, Any]) -> str:
    when = status.get("last_indexed")
    last = time.strftime("%Y-%m-%d %H:%M", time.localtime(when)) if when else "never"
    return "\n".join([
        "*kotae status*",
        f"• index version: `{status.get('index_version') or 'none — run a reindex'}`",
        f"• documents: {status.get('documents', 0)} · chunks: {status.get('chunks', 0)}",
        f"• last indexed: {last}",
        f"• model: `{status.get('model')}` on `{status.get('embedding_device')}`",
        f"• retrieval mode: `{status.get('retrieval_mode')}`",
    ])


def safe_status_text(ctx: BotContext) -> str:
    """The status, or a short reason: the command must be acknowledged either way."""
    try:
        return status_text(ctx.service.status())
    except Exception as error:  # a broken index must not cost the ack (Slack shows a timeout)
        logger.exception("/kotae status failed")
        return f":warning: I couldn't read the index status: {failure_reason(error)}"


def register(app: App, ctx: BotContext) -> None:
    command = ctx.settings.slash_command

    @app.command(command)
    def on_command(ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        text = (command.get("text") or "").strip()
        word, _, rest = text.partition(" ")
        if word in ("", "help"):
            ack(text=help_text(ctx.settings.slash_command))
        elif word == "status":
            ack(text=safe_status_text(ctx))
        elif word == "reindex":
            ack(text=":arrows_counterclockwise: Reindex requested…")
            ctx.reindex.request(command["user_id"], command["channel_id"],
                                "--full" in rest.split(), respond)
        else:
            ack()
            ask(ctx, command, text, respond)


def ask(ctx: BotContext, command: dict[str, Any], text: str, respond: Respond) -> None:
    """Post the question where everyone sees it and answer in its thread; where the bot cannot
    post, answer privately through the response URL."""
    user, channel = command["user_id"], command["channel_id"]
    try:
        posted = ctx.client.chat_postMessage(channel=channel, text=f"<@{user}> asked: {text}")
    except SlackApiError as error:
        logger.info("cannot post in %s (%s); answering ephemerally", channel,
                    error.response.get("error"))

        def answer_privately() -> None:
            try:
                final = ctx.service.ask(text)
                for message in render_answer(final, feedback=False):
                    respond(text=message.text, blocks=message.blocks)
            except Exception as error:  # never silent: the asker hears why
                logger.exception("private answer in %s failed", channel)
                apology = render_apology(failure_reason(error))
                respond(text=apology.text, blocks=apology.blocks)

        outcome = ctx.queue.submit(user, answer_privately, on_wait=lambda: respond(
            text=":hourglass: You're in the queue — the answer will follow."))
        if outcome == "rejected":
            respond(text=":warning: Too many questions right now; please ask again in a minute.")
        return
    ctx.ask_in_thread(Question(text=text, user=user, channel=channel, thread_ts=posted["ts"],
                               message_ts=posted["ts"], team=command.get("team_id")))
