"""Everything the listeners need, built once by the app factory and passed in."""

from __future__ import annotations

from dataclasses import dataclass

from slack_sdk import WebClient

from bot.dedupe import RecentEvents
from bot.feedback import FeedbackLog
from bot.reindex import ReindexCoordinator
from bot.replies import Question, ThreadAnswerer
from bot.settings import BotSettings
from bot.workers import AnswerQueue
from retrieval.service import KotaeService


@dataclass
class BotContext:
    settings: BotSettings
    service: KotaeService
    client: WebClient
    bot_user_id: str | None
    recent: RecentEvents
    queue: AnswerQueue
    answerer: ThreadAnswerer
    reindex: ReindexCoordinator
    feedback: FeedbackLog

    def ask_in_thread(self, question: Question) -> None:
        """Queue an answer; tell the user when it has to wait or cannot be taken."""

        def tell(text: str) -> None:
            self.client.chat_postMessage(channel=question.channel,
                                         thread_ts=question.thread_ts, text=text)

        outcome = self.queue.submit(
            question.user, lambda: self.answerer.answer(question),
            on_wait=lambda: tell(":hourglass: You're in the queue — I'll answer here as soon "
                                 "as I can."))
        if outcome == "rejected":
            tell(":warning: I'm answering too many questions right now. Please ask again in a "
                 "minute.")
