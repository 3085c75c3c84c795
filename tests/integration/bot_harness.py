"""A kotae bot on real HTTP for integration tests: waitress + Bolt + the app factory, talking
to the fake Slack Web API and the fake OpenAI server on 127.0.0.1.

The fixtures that start these bots, `start_bot` and `bot`, are in tests/integration/conftest.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.error import URLError
from urllib.request import urlopen

from bot.app import create_app
from bot.context import BotContext
from bot.server import HttpServer
from bot.settings import BotSettings
from retrieval.embeddings import BGEM3Embeddings
from retrieval.service import KotaeService
from retrieval.settings import Settings
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_signing import event_body, post_signed, slash_body

SECRET = "test-signing-secret"
FORM = "application/x-www-form-urlencoded"


@dataclass
class Bot:
    url: str
    ctx: BotContext
    slack: FakeSlackAPI
    llm: FakeOpenAIServer
    server: HttpServer

    def send_event(self, event: dict[str, Any], event_id: str,
                   headers: dict[str, str] | None = None) -> tuple[int, float]:
        status, _text, elapsed = post_signed(f"{self.url}/slack/events",
                                             event_body(event, event_id), SECRET,
                                             extra_headers=headers)
        return status, elapsed

    def send_command(self, text: str, user: str = "U1", channel: str = "C1"
                     ) -> tuple[int, str]:
        body = slash_body(text=text, user_id=user, channel_id=channel,
                          response_url=self.slack.response_url())
        status, response, _elapsed = post_signed(f"{self.url}/slack/events", body, SECRET,
                                                 content_type=FORM)
        return status, response

    def bot_replies(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        return [m for m in self.slack.thread_messages(channel, thread_ts) if m.get("bot_id")]

    def wait_for_final(self, channel: str, thread_ts: str, count: int = 1,
                       timeout: float = 20.0) -> list[dict[str, Any]]:
        """Bot replies in the thread once they carry their final blocks."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = self.bot_replies(channel, thread_ts)
            finished = [r for r in replies if r.get("blocks")]
            if len(finished) >= count:
                time.sleep(0.3)  # let anything extra (a duplicate) show up too
                return self.bot_replies(channel, thread_ts)
            time.sleep(0.05)
        replies = self.bot_replies(channel, thread_ts)
        raise AssertionError(f"no final reply in {thread_ts}: {replies}")


def mention(text: str, ts: str, user: str = "U1", channel: str = "C1",
            thread_ts: str | None = None, **extra: Any) -> dict[str, Any]:
    event = {"type": "app_mention", "user": user, "text": f"<@UBOT> {text}", "ts": ts,
             "channel": channel, "event_ts": ts, "team": "T1",
             "client_msg_id": f"msg-{ts}", **extra}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def blocks_text(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def make_bot(settings: Settings, embeddings: BGEM3Embeddings, index_dir: Path,
             fake_slack: FakeSlackAPI, fake_openai: FakeOpenAIServer | None,
             tmp_path: Path, **overrides: Any) -> Bot:
    # exclude_unset: a setting left unset (e.g. docs_dir) stays unset, as in a real deployment
    values = {**settings.model_dump(exclude_unset=True), "index_dir": index_dir,
              "chat_max_retries": 0, "chat_timeout": 5.0, "slack_bot_token": "xoxb-test",
              "slack_signing_secret": SECRET, "slack_api_url": fake_slack.base_url,
              "port": 0, "admin_user_ids": ["UADMIN"], "stream_update_interval_s": 0.05,
              "feedback_path": tmp_path / "feedback.jsonl", **overrides}
    if fake_openai is not None:
        values.update(openai_api_key="sk-test", openai_base_url=fake_openai.base_url)
    bot_settings = BotSettings(_env_file=None, **values)  # type: ignore[call-arg]
    service = KotaeService(bot_settings, embeddings=embeddings)
    app, ctx = create_app(bot_settings, service)
    server = HttpServer(app, lambda: service.status(), "127.0.0.1", 0, 4,
                        signing_secret=SECRET).start()
    return Bot(f"http://127.0.0.1:{server.port}", ctx, fake_slack, fake_openai, server)


class StartBot(Protocol):
    def __call__(self, index_dir: Path | None = None, *, settings: Settings | None = None,
                 **overrides: Any) -> Bot:
        """A running bot on `index_dir` (default: the sample index), built from `settings`
        (default: the test settings) with BotSettings `overrides`."""
        ...


# --- a bot in its own process (`kotae serve`, run_bot) ---


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_bot_reply(slack: FakeSlackAPI, channel: str, thread_ts: str,
                       timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = [m for m in slack.thread_messages(channel, thread_ts) if m.get("bot_id")]
        if any(m.get("blocks") for m in replies):
            time.sleep(0.5)
            return [m for m in slack.thread_messages(channel, thread_ts) if m.get("bot_id")]
        time.sleep(0.1)
    raise AssertionError("no reply in the thread")


def wait_for_health(process: subprocess.Popen, port: int, timeout: float = 90) -> dict | None:
    """GET /healthz until the server answers (None if the process exits or time runs out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                return json.loads(response.read())
        except (URLError, ConnectionError):
            time.sleep(0.3)
    return None


def mention_event(ts: str) -> dict:
    return {"type": "app_mention", "user": "U1", "text": "<@UBOT> When is the on-call handoff?",
            "ts": ts, "channel": "C1", "event_ts": ts, "team": "T1", "client_msg_id": f"m{ts}"}
