"""The Slack app factory. No work at import time; tests pass a WebClient pointed at a fake."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.http_retry import RateLimitErrorRetryHandler, RetryHandler, default_retry_handlers

from bot.access import Audiences, MembershipUnknown, SlackDirectory
from bot.answering import Answerer
from bot.context import BotContext
from bot.dedupe import RecentEvents, SharedEvents
from bot.errors import SLACK_CALL_ERRORS, SlackUnavailable
from bot.feedback import open_feedback
from bot.history import ThreadHistory
from bot.listeners import actions, commands, events
from bot.reindex import ReindexCoordinator
from bot.settings import BotSettings
from bot.stale_progress import FileProgressNotes, RedisProgressNotes
from bot.workers import AnswerQueue
from retrieval.access import AccessInvalid
from retrieval.redis_state import RedisLink
from retrieval.service import KotaeService

logger = logging.getLogger(__name__)


def make_client(settings: BotSettings) -> WebClient:
    if settings.slack_bot_token is None:
        raise ValueError("SLACK_BOT_TOKEN is not set (xoxb-…, from OAuth & Permissions)")
    # Slack answers bursts (many answers at once) with HTTP 429 and a Retry-After; one retry
    # after that wait turns most of them into a short delay for the messages that must land.
    return WebClient(token=settings.slack_bot_token.get_secret_value(),
                     base_url=settings.slack_api_url,
                     retry_handlers=[*default_retry_handlers(),
                                     RateLimitErrorRetryHandler(max_retry_count=1)])


def best_effort_client(client: WebClient) -> WebClient:
    """`client` without the wait for Retry-After, for calls that may be skipped (streamed
    text, progress edits, thinking status, reindex progress): a rate-limited one is dropped
    at once rather than stall the thread writing the answer or the index."""
    return _copy(client, retry_handlers=[handler for handler in client.retry_handlers
                                         if not isinstance(handler, RateLimitErrorRetryHandler)])


# slack_sdk logs a failed call at ERROR, then raises. The startup checks turn what it raises
# into the one line the operator reads, so their client logs nothing of its own.
_SILENT = logging.Logger("kotae.startup-check", logging.CRITICAL)


def startup_client(client: WebClient) -> WebClient:
    """`client` for the checks before the bot starts (see `_SILENT`)."""
    return _copy(client, retry_handlers=client.retry_handlers, logger=_SILENT)


def _copy(client: WebClient, *, retry_handlers: list[RetryHandler],
          logger: logging.Logger | None = None) -> WebClient:
    return WebClient(token=client.token, base_url=client.base_url, timeout=client.timeout,
                     ssl=client.ssl, proxy=client.proxy, headers=dict(client.headers),
                     team_id=client.default_params.get("team_id"), logger=logger,
                     retry_handlers=retry_handlers)


def create_app(settings: BotSettings, service: KotaeService, client: WebClient | None = None,
               progress_client: WebClient | None = None) -> tuple[App, BotContext]:
    """`client` posts what must land (answers, apologies, summaries); `progress_client` what
    may be skipped (default: `client` without the rate-limit retry).

    Raises SlackUnavailable when Slack cannot be reached or refuses the bot token: Bolt's
    App() checks the token with auth.test, and so does this factory, first, to learn the
    bot's user id and to say what went wrong in one line. With KOTAE_REDIS_URL, Redis is
    checked before that (RedisUnavailable).
    """
    shared = shared_state(settings)
    client = client or make_client(settings)
    progress_client = progress_client or best_effort_client(client)
    bot_user_id = bot_identity(client, settings.slack_api_url)
    signing_secret = (settings.slack_signing_secret.get_secret_value()
                      if settings.slack_signing_secret else "")
    app = App(
        client=client,
        signing_secret=signing_secret,
        # Listeners only parse, dedupe and hand off, so a few threads keep acks fast; the
        # answers themselves run on AnswerQueue's own pool.
        listener_executor=ThreadPoolExecutor(max_workers=8, thread_name_prefix="bolt"),
        logger=logging.getLogger("slack_bolt"),
    )
    feedback = open_feedback(settings, shared)
    queue = AnswerQueue(settings.answer_workers, settings.answers_per_user,
                        settings.answer_queue_limit, settings.queued_notice_after_s)
    audiences = check_access(service, SlackDirectory(
        startup_client(client), ttl_s=settings.access_membership_ttl_s))
    history = ThreadHistory(client, service.embeddings.token_length, bot_user_id=bot_user_id,
                            max_messages=settings.thread_history_messages,
                            max_tokens=settings.thread_history_tokens)
    ctx = BotContext(
        settings=settings, service=service, client=client, bot_user_id=bot_user_id,
        recent=(SharedEvents(shared, settings.redis_dedupe_ttl_s, settings.dedupe_ttl_s)
                if shared else RecentEvents(settings.dedupe_ttl_s)),
        answerer=Answerer(service, queue, history, feedback, client, progress_client,
                          interval_s=settings.stream_update_interval_s, audiences=audiences),
        reindex=ReindexCoordinator(client, service.reindex, settings.admin_user_ids,
                                   settings.workspace_admins_are_admins,
                                   update_interval_s=settings.reindex_progress_interval_s,
                                   progress_client=progress_client, access=service.access,
                                   check_access=service.check_access,
                                   notes=(RedisProgressNotes(shared) if shared
                                          else FileProgressNotes(settings.index_dir)),
                                   heartbeat_s=settings.reindex_stale_after_s / 6),
        feedback=feedback,
    )
    events.register(app, ctx)
    commands.register(app, ctx)
    actions.register(app, ctx)

    @app.error
    def on_error(error: Exception, body: dict[str, Any]) -> None:
        logger.error("unhandled error in a listener: %s", error, exc_info=error)

    return app, ctx


def shared_state(settings: BotSettings) -> RedisLink | None:
    """With KOTAE_REDIS_URL: the Redis every replica shares event dedupe and feedback
    through, answering PING now (else RedisUnavailable stops the start-up). What the bot
    does while it is unreachable later is in `SharedEvents` and `SharedFeedbackLog`; the
    operator is told once, in the words below."""
    if settings.redis_url is None:
        return None
    return RedisLink.open(
        settings.redis_url.get_secret_value(), prefix=settings.redis_prefix,
        lost=("Until it answers, this replica dedupes events in its own memory and drops "
              "Slack's retries (another replica may have answered them), writes feedback "
              f"to {settings.feedback_path}, and refuses reindexes."),
        back="Events are deduped across replicas and feedback goes to Redis again.")


def check_access(service: KotaeService, directory: SlackDirectory) -> Audiences | None:
    """With KOTAE_ACCESS_FILE set: `#channel-name`s resolved through Slack, and the file and
    its sets checked against the index now, so a broken configuration stops the start-up
    (AccessInvalid naming the file and line) instead of answering from a wider set."""
    if not service.access.enabled:
        return None

    def resolve(name: str) -> str | None:
        try:
            return directory.channel_id(name)
        except MembershipUnknown as error:
            raise AccessInvalid(f"{service.access.path}: cannot resolve #{name} through "
                                f"Slack ({error}); kotae needs channels:read and "
                                "groups:read, or use the channel id") from None

    service.access.bind_channel_names(resolve)
    service.check_access()
    return Audiences(service.access, directory)


def bot_identity(client: WebClient, api_url: str) -> str:
    """The bot's user id (auth.test), which tells its own messages in a thread from others'."""
    try:
        return startup_client(client).auth_test()["user_id"]
    except SLACK_CALL_ERRORS as error:
        raise SlackUnavailable.from_error(error, api_url) from error
