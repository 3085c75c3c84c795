"""The slash command (default `/kotae`): a question, `status`, `help`, admin `reindex [--full]`."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, Respond

from bot.context import BotContext
from bot.errors import failure_reason
from bot.question import question_from_command
from bot.render import escape_mrkdwn, slack_date

logger = logging.getLogger(__name__)


def help_text(command: str) -> str:
    return "\n".join([
        "*kotae* answers questions from your team's documents, with sources.",
        f"• `{command} <question>` — ask (also: @-mention me in a channel or DM me)",
        f"• `{command} status` — index version, documents, chunks, model (and, for admins, "
        "the document sets of access control)",
        f"• `{command} reindex [--full]` — rebuild the index (admins only)",
        f"• `{command} help` — this message",
    ])


def status_text(status: dict[str, Any], *, admin: bool = False) -> str:
    when = status.get("last_indexed")
    last = (slack_date(when, "{date_short_pretty} {time}", "%Y-%m-%d %H:%M") if when
            else "never")
    return "\n".join([
        "*kotae status*",
        f"• index version: `{status.get('index_version') or 'none — run a reindex'}`",
        f"• documents: {status.get('documents', 0)} · chunks: {status.get('chunks', 0)}",
        f"• last indexed: {last}",
        f"• model: `{status.get('model')}` on `{status.get('embedding_device')}`",
        f"• retrieval mode: `{status.get('retrieval_mode')}`",
        *access_lines(status.get("access") or {}, admin=admin),
    ])


def access_lines(access: dict[str, Any], *, admin: bool) -> list[str]:
    """Access control in the status. Set names, counts and errors are for admins only: an
    error can quote a path, and a path can name a restricted document."""
    if not access.get("enabled"):
        return []  # off: the status reads as it always did
    if not admin:
        return ["• access control: on (what you see depends on where you ask)"]
    if access.get("error"):
        return [f"• access control: :warning: `{escape_mrkdwn(access['error'])}` — "
                "no restricted answers until it is fixed"]
    unassigned = access.get("unassigned") or {}
    lines = [f"• access control: `{escape_mrkdwn(str(access.get('file')))}`, documents in no "
             f"set: visible to *{access.get('default')}* ({unassigned.get('files', 0)} "
             f"documents, {unassigned.get('chunks', 0)} chunks)"]
    lines += [f"    ◦ set `{escape_mrkdwn(s['name'])}`: {s['files']} documents, "
              f"{s['chunks']} chunks" for s in access.get("sets", [])]
    return lines


def safe_status_text(ctx: BotContext, user: str | None = None) -> str:
    """The status, or a short reason: the command must be acknowledged either way."""
    try:
        admin = bool(user) and ctx.reindex.is_admin(str(user))
        return status_text(ctx.service.status(), admin=admin)
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
            return
        if word == "status":
            user = command.get("user_id")
            ack(text=safe_status_text(ctx, user if isinstance(user, str) else None))
            return
        question = question_from_command(command, text)
        if question is None:  # no user or channel to act for: nothing to do
            ack()
        elif word == "reindex":
            ack(text=":arrows_counterclockwise: Reindex requested…")
            ctx.reindex.request(question.user, question.channel, "--full" in rest.split(),
                                respond)
        else:
            ack()
            ctx.answerer.take(question)
