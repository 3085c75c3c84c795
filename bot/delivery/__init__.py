"""Where an answer is written: one `Delivery` per surface of a `Question`.

`bot.answering` drives every answer through this protocol, so the answer path — and its one
apology path — is the same whether the answer goes into a thread or privately to the asker.
"""

from __future__ import annotations

from typing import Protocol

from slack_sdk import WebClient

from bot.delivery.private import PrivateDelivery
from bot.delivery.thread import ThreadDelivery
from bot.question import Question
from retrieval.types import Answer


class Delivery(Protocol):
    def tell(self, text: str) -> None:
        """A short notice to the asker (queued, busy, a hint)."""

    def start(self) -> None:
        """Show that an answer is being written."""

    def append(self, piece: str) -> None:
        """Text the model has just written (a preview: `finish` replaces it)."""

    def finish(self, answer: Answer) -> None:
        """The final answer; raises when Slack will not take it (then `apologize` follows)."""

    def apologize(self, reason: str) -> None:
        """Instead of the answer: why there is none."""

    def close(self) -> None:
        """Always called last: clear what `start` showed."""


def delivery_for(question: Question, client: WebClient, progress_client: WebClient,
                 interval_s: float) -> Delivery:
    if question.surface == "private":
        return PrivateDelivery(client, question)
    return ThreadDelivery(client, progress_client, question, interval_s)


__all__ = ["Delivery", "PrivateDelivery", "ThreadDelivery", "delivery_for"]
