"""What the listeners are handed: the parts the app factory built, as plain data.

No behaviour lives here: a listener parses its payload and calls one of these parts.
"""

from __future__ import annotations

from dataclasses import dataclass

from slack_sdk import WebClient

from bot.answering import Answerer
from bot.dedupe import RecentEvents
from bot.feedback import FeedbackLog
from bot.reindex import ReindexCoordinator
from bot.settings import BotSettings
from retrieval.service import KotaeService


@dataclass(frozen=True)
class BotContext:
    settings: BotSettings
    service: KotaeService
    client: WebClient
    bot_user_id: str
    recent: RecentEvents
    answerer: Answerer
    reindex: ReindexCoordinator
    feedback: FeedbackLog
