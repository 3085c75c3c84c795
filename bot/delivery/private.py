"""Delivering an answer only the asker sees, through the slash command's response URL: where
the bot cannot post in the channel (not a member, a DM with someone else)."""

from __future__ import annotations

from slack_bolt.context.respond import Respond
from slack_sdk import WebClient

from bot.question import Question
from bot.render import render_answer, render_apology
from retrieval.types import Answer


class PrivateDelivery:
    """One question's private reply (see `bot.delivery.Delivery`): no thinking status and no
    preview, since a response URL takes only a few posts; the whole answer comes at the end."""

    def __init__(self, client: WebClient, question: Question) -> None:
        # as Bolt builds `respond` for a listener: through the same proxy and TLS settings
        self.respond = Respond(response_url=question.response_url, proxy=client.proxy,
                               ssl=client.ssl)

    def tell(self, text: str) -> None:
        self.respond(text=text)

    def start(self) -> None:
        pass

    def append(self, piece: str) -> None:
        pass

    def finish(self, answer: Answer) -> None:
        for message in render_answer(answer, feedback=False):
            self.respond(text=message.text, blocks=message.blocks)

    def apologize(self, reason: str) -> None:
        apology = render_apology(reason)
        self.respond(text=apology.text, blocks=apology.blocks)

    def close(self) -> None:
        pass
