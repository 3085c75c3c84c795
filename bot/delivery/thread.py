"""Delivering an answer into a Slack thread: a thinking status, a reply that grows as the model
writes, the final Block Kit message — or the apology that replaces it."""

from __future__ import annotations

import logging
import time

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.errors import SLACK_CALL_ERRORS
from bot.question import Question
from bot.render import (
    ELLIPSIS,
    Block,
    SlackMessage,
    escape_mrkdwn,
    render_answer,
    render_apology,
    render_progress,
)
from retrieval.types import Answer

logger = logging.getLogger(__name__)

THINKING_REACTION = "hourglass_flowing_sand"

# Streamed text is only a preview (the final Block Kit message replaces it), so it stays well
# under Slack's limits: 12,000 characters of markdown_text per start/appendStream call.
STREAM_CALL_CHARS = 4_000
STREAM_TOTAL_CHARS = 10_000

# What a Slack call that may be skipped can raise.
SKIPPABLE = SLACK_CALL_ERRORS


def _why(error: Exception) -> str:
    return (str(error.response.get("error")) if isinstance(error, SlackApiError)
            else type(error).__name__)


class ThreadDelivery:
    """One question's reply in its thread (see `bot.delivery.Delivery`).

    `client` posts what must land (the answer, the apology, notices); `progress_client` what
    may be skipped (the thinking status, the growing preview)."""

    def __init__(self, client: WebClient, progress_client: WebClient, question: Question,
                 interval_s: float) -> None:
        self.client, self.question = client, question
        self.status = ThinkingStatus(progress_client, question)
        self.reply = GrowingReply(client, question, interval_s, progress_client)

    def tell(self, text: str) -> None:
        self.client.chat_postMessage(channel=self.question.channel,
                                     thread_ts=self.question.thread_ts, text=text)

    def start(self) -> None:
        self.status.start()

    def append(self, piece: str) -> None:
        self.reply.append(piece)

    def finish(self, answer: Answer) -> None:
        self.reply.finish(render_answer(answer), answer.text)

    def apologize(self, reason: str) -> None:
        """The apology replaces what was shown of the answer, or is posted in the thread."""
        apology = render_apology(reason)
        q = self.question
        try:
            if self.reply.ts is not None:
                self.reply.finish([apology], answer_text=None)
            else:
                self.client.chat_postMessage(channel=q.channel, thread_ts=q.thread_ts,
                                             text=apology.text, blocks=apology.blocks)
        except SlackApiError as error:
            logger.error("could not post the apology: %s", error.response.get("error"))

    def close(self) -> None:
        self.status.clear()


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
    final Block Kit message replaces whatever was streamed. Everything before that final
    message is best effort, sent through `progress_client` (no wait for Retry-After): a
    refused or rate-limited progress update is logged and skipped, never allowed to cost
    or delay the answer itself.
    """

    def __init__(self, client: WebClient, question: Question, interval_s: float,
                 progress_client: WebClient | None = None) -> None:
        self.client, self.question, self.interval_s = client, question, interval_s
        self.progress_client = progress_client or client
        self.text = ""
        self.ts: str | None = None
        self._mode = "stream"  # stream -> update (fallback)
        self._sent = 0  # characters of `text` already visible
        self._streamed = 0  # characters of escaped text sent through the streaming API
        self._stream_full = False  # STREAM_TOTAL_CHARS reached: the rest waits for the end
        self._last_flush = 0.0
        self._stream_open = False

    def append(self, piece: str) -> None:
        self.text += piece
        if time.monotonic() - self._last_flush >= self.interval_s:
            self._flush()

    def _flush(self) -> None:
        self._last_flush = time.monotonic()
        if self._mode == "stream":
            try:
                self._stream_pending()
                return
            except OSError as error:  # the network, after slack_sdk's own retry
                logger.info("streaming failed (%s); the text follows with the next update",
                            type(error).__name__)
                return
            except SlackApiError as error:
                if error.response.status_code == 429:
                    logger.info("streaming rate limited; the text follows with the next update")
                    return
                logger.info("streaming unavailable (%s); editing a message instead",
                            error.response.get("error"))
                self._close_stream([])
                self._mode = "update"
        try:
            self._show_progress()
        except SKIPPABLE as error:
            logger.warning("progress update skipped (%s); the final message still follows",
                           _why(error))

    def _stream_pending(self) -> None:
        """Send what the model wrote since the last call, escaped like the final message (the
        model must not post `<!channel>`), in pieces of at most STREAM_CALL_CHARS, and stop
        adding once STREAM_TOTAL_CHARS have been streamed."""
        if self._stream_full or self._sent == len(self.text):
            return
        q = self.question
        pending = self.text[self._sent:]
        fits = _escaped_prefix(pending, STREAM_TOTAL_CHARS - len(ELLIPSIS) - 2 - self._streamed)
        pieces = _escaped_pieces(pending[:fits], STREAM_CALL_CHARS)
        if fits < len(pending):
            pieces.append((0, "\n\n" + ELLIPSIS))
        for raw_length, markdown in pieces:
            if self.ts is None:
                response = self.progress_client.chat_startStream(
                    channel=q.channel, thread_ts=q.thread_ts, markdown_text=markdown,
                    recipient_user_id=q.user, recipient_team_id=q.team)
                self.ts = response["ts"]
                self._stream_open = True
            else:
                self.progress_client.chat_appendStream(channel=q.channel, ts=self.ts,
                                                       markdown_text=markdown)
            self._sent += raw_length
            self._streamed += len(markdown)
        if fits < len(pending):
            self._stream_full = True
            logger.info("streamed %d characters; the rest comes with the final message",
                        self._streamed)

    def _show_progress(self) -> None:
        q = self.question
        progress = render_progress(self.text)
        if self.ts is None:
            self.ts = self.progress_client.chat_postMessage(
                channel=q.channel, thread_ts=q.thread_ts, text=progress)["ts"]
        else:
            self.progress_client.chat_update(channel=q.channel, ts=self.ts, text=progress)
        self._sent = len(self.text)

    def _close_stream(self, trailer: list[Block]) -> bool:
        """Stop the stream; True when `trailer` (sources, buttons) was attached to it.

        chat.stopStream's `blocks` are appended under the streamed text rather than replacing
        it, so only the blocks that are not the answer text go there.
        """
        if not (self._stream_open and self.ts):
            return False
        self._stream_open = False
        q = self.question
        if trailer:
            try:
                self.client.chat_stopStream(channel=q.channel, ts=self.ts, blocks=trailer)
                return True
            except SKIPPABLE as error:
                logger.info("chat.stopStream refused the blocks (%s); stopping without",
                            _why(error))
        try:
            self.client.chat_stopStream(channel=q.channel, ts=self.ts)
        except SKIPPABLE as error:
            logger.info("chat.stopStream failed: %s", _why(error))
        return False

    def finish(self, messages: list[SlackMessage], answer_text: str | None) -> None:
        """Replace the growing reply with the final message(s); post the rest after it.

        `answer_text` is the final answer's text (markers renumbered, invented ones dropped);
        None when `messages` are an apology. What was streamed is the model's raw text, so the
        stream stands for the answer only when it is exactly `answer_text`: then the rest of it
        and the trailer (sources, buttons) go out through chat.stopStream, and where Slack
        refuses the chat.update that swaps in the final Block Kit rendering, the stopped
        stream stays as the answer. Otherwise (markers renumbered, an answer cut short by a
        failed model, an apology) nothing more is streamed, and a refused edit means the final
        message is posted.
        """
        first, rest = messages[0], messages[1:]
        q = self.question
        is_answer = answer_text is not None and self.text.strip() == answer_text.strip()
        if self._stream_open and is_answer:
            try:
                self._stream_pending()
            except SKIPPABLE as error:
                logger.info("could not stream the end of the answer: %s", _why(error))
        streamed_answer = is_answer and not self._stream_full and self._sent == len(self.text)
        trailer = first.trailer if streamed_answer and not rest else []
        complete = self._close_stream(trailer) and streamed_answer
        replaced = False
        if self.ts is not None:
            try:
                self.client.chat_update(channel=q.channel, ts=self.ts, text=first.text,
                                        blocks=first.blocks)
                replaced = True
            except SlackApiError as error:
                logger.warning("could not replace the streamed reply: %s",
                               error.response.get("error"))
        if not replaced and not complete:
            self.client.chat_postMessage(channel=q.channel, thread_ts=q.thread_ts,
                                         text=first.text, blocks=first.blocks)
        for message in rest:
            self.client.chat_postMessage(channel=q.channel, thread_ts=q.thread_ts,
                                         text=message.text, blocks=message.blocks)


def _escaped_prefix(text: str, budget: int) -> int:
    """How many characters of `text` fit in `budget` characters once escaped."""
    used = 0
    for index, char in enumerate(text):
        used += len(escape_mrkdwn(char))
        if used > budget:
            return index
    return len(text)


def _escaped_pieces(text: str, limit: int) -> list[tuple[int, str]]:
    """(raw length, escaped text) pieces of `text`, each at most `limit` once escaped."""
    pieces: list[tuple[int, str]] = []
    while text:
        cut = max(1, _escaped_prefix(text, limit))
        pieces.append((cut, escape_mrkdwn(text[:cut])))
        text = text[cut:]
    return pieces


