"""From a `Question` to its answer: the queue, the delivery its surface needs, one apology path.

`take` runs on a Bolt listener thread, after the ack: it opens a slash command's thread (or
falls back to a private answer), then queues the answer. `answer` runs on the queue's
workers: it streams the answer from the service into the delivery, and turns any failure
into an apology — the asker never hears nothing. Everything the bot tells an asker about
their question is written here.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import replace

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.access import Audiences
from bot.delivery import Delivery, delivery_for
from bot.errors import failure_reason
from bot.feedback import FeedbackLog
from bot.history import ThreadHistory
from bot.question import Question, Surface
from bot.render import escape_mrkdwn
from bot.workers import AnswerQueue
from retrieval.access import AccessInvalid
from retrieval.service import KotaeService
from retrieval.types import Answer, Turn

logger = logging.getLogger(__name__)

HINT = "Ask me a question about your documents, e.g. `@kotae 経費精算の締め切りは？`"
QUEUED: dict[Surface, str] = {
    "thread": ":hourglass: You're in the queue — I'll answer here as soon as I can.",
    "private": ":hourglass: You're in the queue — the answer will follow.",
}
NARROWED = (":lock: I couldn't check your Slack channel and user group memberships just now, "
            "so this answer uses only documents shared with everyone or with you by name.")
# The details (file, line, paths) go to the log: a path may name a restricted document.
ACCESS_BROKEN = ("kotae's access configuration cannot be used right now, so I answer nothing "
                 "until an admin fixes it (the details are in kotae's log).")
# When the bot stops (a deploy, Ctrl-C): a question it will not answer is told so, in words
# that say asking again works (another replica, or this one restarted, will take it).
STOPPING = (":warning: kotae is restarting and did not get to this question. Please ask again "
            "in a minute.")
STOPPED_MID_ANSWER = ("kotae was restarted before it finished this answer. Please ask again in "
                      "a minute.")
BUSY: dict[Surface, str] = {
    "thread": ":warning: I'm answering too many questions right now. Please ask again in a "
              "minute.",
    "private": ":warning: Too many questions right now; please ask again in a minute.",
}


class Answerer:
    def __init__(self, service: KotaeService, queue: AnswerQueue, history: ThreadHistory,
                 feedback: FeedbackLog, client: WebClient, progress_client: WebClient, *,
                 interval_s: float, audiences: Audiences | None = None) -> None:
        """`client` posts what must land; `progress_client` what may be skipped (previews,
        the thinking status); `interval_s`: between visible updates of a growing reply;
        `audiences`: who each answer is for (None: access control off)."""
        self.service, self.queue, self.history, self.feedback = service, queue, history, feedback
        self.audiences = audiences
        self.client, self.progress_client, self.interval_s = client, progress_client, interval_s
        self._in_flight: set[Delivery] = set()  # what `drain` apologizes in
        self._in_flight_lock = threading.Lock()

    def take(self, question: Question) -> None:
        """Queue an answer; tell the asker when it has to wait or cannot be taken."""
        if not question.text:
            self.delivery(question).tell(HINT)
            return
        if question.surface == "thread" and question.thread_ts is None:
            question = self._open_thread(question)
        delivery = self.delivery(question)
        outcome = self.queue.submit(
            question.user, functools.partial(self.answer, question),
            on_wait=functools.partial(delivery.tell, QUEUED[question.surface]),
            on_drop=functools.partial(delivery.tell, STOPPING))
        if outcome == "rejected":
            delivery.tell(BUSY[question.surface])
        elif outcome == "closed":
            delivery.tell(STOPPING)

    def drain(self, timeout_s: float) -> int:
        """The bot is stopping: no new answers, the queued ones told to ask again, the
        running ones given up to `timeout_s` to finish; those still running then get an
        apology in place of the rest of their answer. Returns how many did."""
        unfinished = self.queue.drain(timeout_s)
        if not unfinished:
            return 0
        with self._in_flight_lock:
            deliveries = list(self._in_flight)
        for delivery in deliveries:
            delivery.apologize(STOPPED_MID_ANSWER)
        return len(deliveries)

    def answer(self, question: Question) -> Answer | None:
        """The whole reply to one question. Never raises for a failure of the answer itself,
        and never stays silent."""
        delivery = self.delivery(question)
        with self._in_flight_lock:
            self._in_flight.add(delivery)
        delivery.start()
        try:
            # who reads this answer decides what it may use; decided before anything is read
            audience = self.audiences.of(question) if self.audiences is not None else None
            if audience is not None and audience.narrowed:
                delivery.tell(NARROWED)
            history: list[Turn] = self.history.read(question) if question.in_thread else []
            final: Answer | None = None
            for event in self.service.stream(question.text, history, audience=audience):
                if isinstance(event, Answer):
                    final = event
                else:
                    delivery.append(event)
            if final is None:
                raise RuntimeError("the answer chain ended without an answer")
            delivery.finish(final)
            if question.surface == "thread":  # only thread answers carry the vote buttons
                self.feedback.answered(final.answer_id, question.text)
            return final
        except AccessInvalid as error:
            logger.error("no answer in %s: %s", question.channel, error)
            delivery.apologize(ACCESS_BROKEN)
            return None
        except Exception as error:  # the edge: every failure becomes a message to the asker
            logger.exception("answering in %s (%s) failed", question.channel, question.surface)
            delivery.apologize(failure_reason(error))
            return None
        finally:
            with self._in_flight_lock:
                self._in_flight.discard(delivery)
            delivery.close()

    def delivery(self, question: Question) -> Delivery:
        return delivery_for(question, self.client, self.progress_client, self.interval_s)

    def _open_thread(self, question: Question) -> Question:
        """A slash command's question, posted where everyone sees it, to answer in its thread;
        where the bot cannot post, the same question answered privately."""
        try:
            posted = self.client.chat_postMessage(
                channel=question.channel,
                # as typed: a `<!channel>` in the question must not ping the channel
                text=f"<@{question.user}> asked: {escape_mrkdwn(question.text)}")
        except SlackApiError as error:
            logger.info("cannot post in %s (%s); answering ephemerally", question.channel,
                        error.response.get("error"))
            return replace(question, surface="private")
        return replace(question, thread_ts=posted["ts"], message_ts=posted["ts"])
