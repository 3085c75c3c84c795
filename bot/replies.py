"""Writing an answer into a Slack thread: thinking status, a reply that grows as the model
writes, the final Block Kit message, and an apology instead of silence when anything fails."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.render import SlackMessage, render_answer, render_error, render_progress
from retrieval.chain import Turn
from retrieval.errors import KotaeError
from retrieval.types import Answer

logger = logging.getLogger(__name__)

THINKING_REACTION = "hourglass_flowing_sand"
_MENTION = re.compile(r"<@[A-Z0-9]+>")


def escape_mrkdwn(text: str) -> str:
    """Slack's three control characters; nothing else needs escaping in plain text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class Question:
    text: str
    user: str
    channel: str
    thread_ts: str  # where the answer goes
    message_ts: str | None  # the question's own message (for the reaction), if any
    team: str | None = None
    in_thread: bool = False  # asked inside an existing thread: read it as history


def strip_mentions(text: str) -> str:
    return _MENTION.sub("", text).strip()


class ThinkingStatus:
    """`assistant.threads.setStatus` where Slack allows it (assistant threads), else a reaction."""

    def __init__(self, client: WebClient, question: Question) -> None:
        self.client, self.question = client, question
        self._kind: str | None = None

    def start(self) -> None:
        q = self.question
        try:
            self.client.assistant_threads_setStatus(channel_id=q.channel, thread_ts=q.thread_ts,
                                                    status="is thinking…")
            self._kind = "status"
            return
        except SlackApiError:
            pass
        if q.message_ts:
            try:
                self.client.reactions_add(channel=q.channel, timestamp=q.message_ts,
                                          name=THINKING_REACTION)
                self._kind = "reaction"
            except SlackApiError as error:
                logger.info("no thinking indicator: %s", error.response.get("error"))

    def clear(self) -> None:
        q = self.question
        try:
            if self._kind == "status":
                self.client.assistant_threads_setStatus(channel_id=q.channel,
                                                        thread_ts=q.thread_ts, status="")
            elif self._kind == "reaction" and q.message_ts:
                self.client.reactions_remove(channel=q.channel, timestamp=q.message_ts,
                                             name=THINKING_REACTION)
        except SlackApiError as error:
            logger.info("could not clear the thinking indicator: %s",
                        error.response.get("error"))


class GrowingReply:
    """One reply that shows the answer as it is written.

    Uses Slack's streaming API (chat.startStream/appendStream/stopStream) and falls back to
    posting a message and editing it (chat.update) where streaming is not available. The
    final Block Kit message replaces whatever was streamed.
    """

    def __init__(self, client: WebClient, question: Question, interval_s: float) -> None:
        self.client, self.question, self.interval_s = client, question, interval_s
        self.text = ""
        self.ts: str | None = None
        self._mode = "stream"  # stream -> update (fallback)
        self._sent = 0  # characters of `text` already visible
        self._last_flush = 0.0
        self._stream_open = False

    def append(self, piece: str) -> None:
        self.text += piece
        if time.monotonic() - self._last_flush >= self.interval_s:
            self._flush()

    def _flush(self) -> None:
        self._last_flush = time.monotonic()
        q = self.question
        if self._mode == "stream":
            try:
                if self.ts is None:
                    response = self.client.chat_startStream(
                        channel=q.channel, thread_ts=q.thread_ts, markdown_text=self.text,
                        recipient_user_id=q.user, recipient_team_id=q.team)
                    self.ts = response["ts"]
                    self._stream_open = True
                else:
                    self.client.chat_appendStream(channel=q.channel, ts=self.ts,
                                                  markdown_text=self.text[self._sent:])
                self._sent = len(self.text)
                return
            except SlackApiError as error:
                logger.info("streaming unavailable (%s); editing a message instead",
                            error.response.get("error"))
                self._close_stream()
                self._mode = "update"
        progress = render_progress(self.text)
        if self.ts is None:
            self.ts = self.client.chat_postMessage(channel=q.channel, thread_ts=q.thread_ts,
                                                   text=progress)["ts"]
        else:
            self.client.chat_update(channel=q.channel, ts=self.ts, text=progress)
        self._sent = len(self.text)

    def _close_stream(self) -> None:
        if self._stream_open and self.ts:
            self._stream_open = False
            try:
                self.client.chat_stopStream(channel=self.question.channel, ts=self.ts)
            except SlackApiError as error:
                logger.info("chat.stopStream failed: %s", error.response.get("error"))

    def finish(self, messages: list[SlackMessage]) -> None:
        """Replace the growing reply with the final message(s); post the rest after it."""
        self._close_stream()
        first, rest = messages[0], messages[1:]
        q = self.question
        replaced = False
        if self.ts is not None:
            try:
                self.client.chat_update(channel=q.channel, ts=self.ts, text=first.text,
                                        blocks=first.blocks)
                replaced = True
            except SlackApiError as error:
                logger.warning("could not replace the streamed reply: %s",
                               error.response.get("error"))
        if not replaced:
            self.client.chat_postMessage(channel=q.channel, thread_ts=q.thread_ts,
                                         text=first.text, blocks=first.blocks)
        for message in rest:
            self.client.chat_postMessage(channel=q.channel, thread_ts=q.thread_ts,
                                         text=message.text, blocks=message.blocks)


AnswerStream = Callable[[str, list[Turn]], Iterable[str | Answer]]


class ThreadAnswerer:
    """The whole reply to one question. Never raises and never stays silent."""

    def __init__(self, client: WebClient, stream: AnswerStream,
                 token_length: Callable[[str], int], *, bot_user_id: str | None,
                 history_messages: int, history_tokens: int, interval_s: float,
                 on_answer: Callable[[Answer, Question], None] | None = None) -> None:
        self.client, self.stream, self.token_length = client, stream, token_length
        self.bot_user_id = bot_user_id
        self.history_messages, self.history_tokens = history_messages, history_tokens
        self.interval_s = interval_s
        self.on_answer = on_answer

    def answer(self, question: Question) -> Answer | None:
        status = ThinkingStatus(self.client, question)
        status.start()
        reply = GrowingReply(self.client, question, self.interval_s)
        try:
            history = self.thread_history(question) if question.in_thread else []
            final: Answer | None = None
            for event in self.stream(question.text, history):
                if isinstance(event, Answer):
                    final = event
                else:
                    reply.append(event)
            if final is None:
                raise RuntimeError("the answer chain ended without an answer")
            reply.finish(render_answer(final))
            if self.on_answer is not None:
                self.on_answer(final, question)
            return final
        except Exception as error:  # the edge: every failure becomes a message in the thread
            reason = str(error) if isinstance(error, KotaeError) else (
                "something went wrong on my side. Please try again in a moment.")
            logger.exception("answering in %s failed", question.channel)
            self.apologize(question, reason, reply)
            return None
        finally:
            status.clear()

    def apologize(self, question: Question, reason: str, reply: GrowingReply | None = None
                  ) -> None:
        blocks = render_error(reason)
        text = "Sorry — I couldn't answer that: " + escape_mrkdwn(reason)
        try:
            if reply is not None and reply.ts is not None:
                reply.finish([SlackMessage(text=text, blocks=blocks)])
            else:
                self.client.chat_postMessage(channel=question.channel,
                                             thread_ts=question.thread_ts, text=text,
                                             blocks=blocks)
        except SlackApiError as error:
            logger.error("could not post the apology: %s", error.response.get("error"))

    def thread_history(self, question: Question) -> list[Turn]:
        """Earlier messages of the thread, newest kept first within the message/token bounds."""
        try:
            response = self.client.conversations_replies(
                channel=question.channel, ts=question.thread_ts,
                limit=self.history_messages + 1)
        except SlackApiError as error:
            logger.info("could not read the thread: %s", error.response.get("error"))
            return []
        turns: list[Turn] = []
        budget = self.history_tokens
        messages = [m for m in response.get("messages", [])
                    if m.get("ts") != question.message_ts and m.get("text")]
        for message in reversed(messages[-self.history_messages:]):
            is_bot = bool(message.get("bot_id")) or message.get("user") == self.bot_user_id
            text = strip_mentions(message["text"])
            cost = self.token_length(text)
            if not text or cost > budget:
                if turns:
                    break
                continue
            budget -= cost
            turns.append(Turn("assistant" if is_bot else "user", text))
        turns.reverse()
        return turns
