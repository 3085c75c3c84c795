"""The earlier messages of a Slack thread, as the conversation a follow-up question belongs to."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.question import Question, strip_mentions
from retrieval.types import Turn

logger = logging.getLogger(__name__)

# conversations.replies pages oldest-first; a thread is read to its end through at most this
# many pages (Slack recommends <= 200 messages a page), keeping only the newest messages.
HISTORY_PAGE_SIZE = 200
HISTORY_MAX_PAGES = 5


class ThreadHistory:
    def __init__(self, client: WebClient, token_length: Callable[[str], int], *,
                 bot_user_id: str, max_messages: int, max_tokens: int) -> None:
        self.client, self.token_length, self.bot_user_id = client, token_length, bot_user_id
        self.max_messages, self.max_tokens = max_messages, max_tokens

    def read(self, question: Question) -> list[Turn]:
        """The newest earlier messages of the thread, within the message and token bounds.

        conversations.replies pages from the OLDEST message, so the thread is read to its end
        (bounded) and only the last `max_messages` are kept.
        """
        if self.max_messages <= 0 or self.max_tokens <= 0:
            return []
        newest: deque[dict[str, Any]] = deque(maxlen=self.max_messages)
        seen: set[str] = set()
        cursor: str | None = None
        for _page in range(HISTORY_MAX_PAGES):
            try:
                response = self.client.conversations_replies(
                    channel=question.channel, ts=question.thread_ts, limit=HISTORY_PAGE_SIZE,
                    cursor=cursor)
            except SlackApiError as error:
                logger.info("could not read the thread: %s", error.response.get("error"))
                break
            for message in response.get("messages", []):
                ts = message.get("ts")
                if ts in seen or ts == question.message_ts or not message.get("text"):
                    continue  # Slack may repeat the parent message at the top of each page
                seen.add(ts)
                newest.append(message)
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not (response.get("has_more") and cursor):
                break
        else:
            logger.warning("thread %s is longer than %d messages; history comes from its "
                           "first %d", question.thread_ts, HISTORY_PAGE_SIZE * HISTORY_MAX_PAGES,
                           HISTORY_PAGE_SIZE * HISTORY_MAX_PAGES)
        return self._turns(newest)

    def _turns(self, newest: deque[dict[str, Any]]) -> list[Turn]:
        """Newest first until the token budget is spent, then back in thread order."""
        turns: list[Turn] = []
        budget = self.max_tokens
        for message in reversed(newest):
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
