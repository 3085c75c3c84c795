"""Slack settings on top of the retrieval settings: still one object reading the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from retrieval.settings import Settings


def _alias(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class BotSettings(Settings):
    slack_bot_token: SecretStr | None = Field(None, validation_alias=_alias("SLACK_BOT_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(
        None, validation_alias=_alias("SLACK_SIGNING_SECRET"))
    slack_app_token: SecretStr | None = Field(None, validation_alias=_alias("SLACK_APP_TOKEN"))
    slack_api_url: str = Field("https://slack.com/api/", validation_alias=_alias("SLACK_API_URL"),
                               description="Slack Web API base URL (proxies, GovSlack, tests)")

    host: str = Field("127.0.0.1", description="HTTP mode: interface to listen on")
    port: int = Field(3000, description="HTTP mode: port (/slack/events, /healthz)")
    http_threads: int = Field(8, ge=1, description="HTTP mode: server threads (acks only)")

    slash_command: str = "/kotae"
    admin_user_ids: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Slack user ids allowed to reindex (comma-separated)")
    workspace_admins_are_admins: bool = Field(
        False, description="also let workspace admins/owners reindex (checked with users.info)")
    admin_channel: str | None = Field(
        None, description="channel id where scheduled reindexes post their summary (unset: "
        "the log only)")

    # An answer mostly waits on the chat model, so more workers than cores pays; but their
    # Python work competes with acks for the GIL. Measured in bench/slack.py on 2 cores (50
    # mentions at once): 4 answered slower than stock Bolt, 16 pushed ack p99 past 100 ms.
    answer_workers: int = Field(8, ge=1, description="answers written at the same time")
    answers_per_user: int = Field(2, ge=1, description="answers per user at the same time")
    answer_queue_limit: int = Field(100, ge=1, description="waiting answers before refusing")
    queued_notice_after_s: float = Field(
        0.5, ge=0, description="tell a waiting user they are queued after this long")
    dedupe_ttl_s: float = Field(600.0, description="how long an event id is remembered")
    redis_dedupe_ttl_s: float = Field(
        86_400.0, ge=3600, description="with KOTAE_REDIS_URL: how long Redis remembers an "
        "event id (at least an hour: Slack retries, and replays delayed events)")
    thread_history_messages: int = Field(20, ge=0)
    thread_history_tokens: int = Field(1500, ge=0)
    stream_update_interval_s: float = Field(0.8, description="between visible updates")
    reindex_progress_interval_s: float = Field(
        1.0, ge=0, description="between updates of a reindex's progress message")
    reindex_stale_after_s: float = Field(
        60.0, ge=2, description="a reindex whose process has not been heard from this long "
        "(killed, out of memory) gets its progress message marked stopped by any bot process")
    shutdown_grace_s: float = Field(
        8.0, ge=0, description="on Ctrl-C or SIGTERM: how long answers in flight may take to "
        "finish before their askers are told to ask again (keep it under the service "
        "manager's stop timeout: docker's is 10 s)")
    feedback_path: Path = Path(".kotae/feedback.jsonl")
    access_membership_ttl_s: float = Field(
        60.0, ge=0, description="how long Slack channel and user group memberships are "
                                "remembered for access control (a user who leaves a channel "
                                "loses its documents within this time)")

    @field_validator("slash_command")
    @classmethod
    def _slash(cls, value: str) -> str:
        return value if value.startswith("/") else f"/{value}"

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    @field_validator("admin_user_ids", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip().startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
