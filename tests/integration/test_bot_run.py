"""`run_bot`, what `kotae serve` runs once its settings are checked: Socket Mode or HTTP, until
Ctrl-C — and, when Slack cannot be reached or refuses a token, one clear line instead of the
tracebacks of Bolt's App() (auth.test) and of the Socket Mode connect."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bot.errors import CannotListen, SlackUnavailable
from bot.server import run_bot
from bot.settings import BotSettings
from retrieval.embeddings import BGEM3Embeddings
from retrieval.service import KotaeService
from retrieval.settings import Settings
from tests.fakes.openai_server import FakeOpenAIServer, Reply
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_signing import event_body, post_signed
from tests.fakes.socket_mode import FakeSocketModeServer
from tests.helpers import interrupt
from tests.integration.bot_harness import (
    free_port,
    mention_event,
    wait_for_bot_reply,
    wait_for_health,
)

SECRET = "run-secret"
ROOT = Path(__file__).resolve().parents[2]
# The process `kotae serve` becomes, without the CLI: settings from the environment, run_bot.
RUN_BOT = """
import sys
from bot.server import run_bot
from bot.settings import BotSettings
from retrieval.service import KotaeService

settings = BotSettings()
run_bot(settings, KotaeService(settings), announce=lambda line: print(line, flush=True))
print("run_bot returned", flush=True)
"""


def closed_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    return free_port()


def bot_settings(settings: Settings, index_dir: Path, tmp_path: Path, **slack: object
                 ) -> BotSettings:
    return BotSettings(_env_file=None,  # type: ignore[call-arg]
                       **{**settings.model_dump(), "index_dir": index_dir, "port": 0,
                          "feedback_path": tmp_path / "feedback.jsonl",
                          "slack_bot_token": "xoxb-run", **slack})


class Announced(list[str]):
    def __call__(self, line: str) -> None:
        self.append(line)


# --- one line instead of tracebacks ---


def test_an_unreachable_slack_api_is_one_clear_error(
        settings: Settings, embeddings: BGEM3Embeddings, sample_index_dir: Path,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{closed_port()}/api/"
    config = bot_settings(settings, sample_index_dir, tmp_path, slack_api_url=url,
                          slack_signing_secret=SECRET)
    announced = Announced()
    with pytest.raises(SlackUnavailable) as caught:
        run_bot(config, KotaeService(config, embeddings=embeddings), announce=announced)
    message = str(caught.value)
    assert message.startswith(f"cannot reach Slack at {url}: ")
    assert "Connection refused" in message
    assert message.endswith("; check the network/proxy or SLACK_API_URL")
    assert "\n" not in message and not announced  # never listened
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # said once, by us


def test_an_invalid_bot_token_is_one_clear_error(
        settings: Settings, embeddings: BGEM3Embeddings, sample_index_dir: Path,
        fake_slack: FakeSlackAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake_slack.fail("auth.test", "invalid_auth")
    config = bot_settings(settings, sample_index_dir, tmp_path,
                          slack_api_url=fake_slack.base_url, slack_signing_secret=SECRET)
    announced = Announced()
    with pytest.raises(SlackUnavailable) as caught:
        run_bot(config, KotaeService(config, embeddings=embeddings), announce=announced)
    assert str(caught.value) == (
        f"Slack at {fake_slack.base_url} refused SLACK_BOT_TOKEN (invalid_auth); check the "
        "token (xoxb-…, from OAuth & Permissions) or SLACK_API_URL")
    assert not announced
    assert len(fake_slack.calls("auth.test")) == 1  # asked once: Bolt's App() never ran
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_url_that_is_not_slack_s_web_api_is_one_clear_error(
        settings: Settings, embeddings: BGEM3Embeddings, sample_index_dir: Path,
        fake_slack: FakeSlackAPI, tmp_path: Path) -> None:
    url = fake_slack.base_url.replace("/api/", "/not-the-api/")
    config = bot_settings(settings, sample_index_dir, tmp_path, slack_api_url=url,
                          slack_signing_secret=SECRET)
    with pytest.raises(SlackUnavailable) as caught:
        run_bot(config, KotaeService(config, embeddings=embeddings))
    assert str(caught.value).startswith(f"cannot reach Slack at {url}: HTTP 404")


def test_an_invalid_app_token_is_one_clear_error(
        settings: Settings, embeddings: BGEM3Embeddings, sample_index_dir: Path,
        fake_slack: FakeSlackAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake_slack.fail("apps.connections.open", "invalid_auth")
    config = bot_settings(settings, sample_index_dir, tmp_path,
                          slack_api_url=fake_slack.base_url, slack_app_token="xapp-1-run")
    with pytest.raises(SlackUnavailable) as caught:
        run_bot(config, KotaeService(config, embeddings=embeddings), announce=Announced())
    assert str(caught.value).startswith(
        f"Slack at {fake_slack.base_url} refused SLACK_APP_TOKEN (invalid_auth); check the "
        "token (xapp-…")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_port_in_use_is_one_clear_error(
        settings: Settings, embeddings: BGEM3Embeddings, sample_index_dir: Path,
        fake_slack: FakeSlackAPI, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = bot_settings(settings, sample_index_dir, tmp_path,
                              slack_api_url=fake_slack.base_url, slack_signing_secret=SECRET,
                              host="127.0.0.1", port=port)
        with pytest.raises(CannotListen) as caught:
            run_bot(config, KotaeService(config, embeddings=embeddings))
    assert str(caught.value).startswith(f"cannot listen on http://127.0.0.1:{port}: ")
    assert "KOTAE_PORT" in str(caught.value)


# --- serving until Ctrl-C ---


def run_bot_process(tiny_model_dir: Path, index_dir: Path, tmp_path: Path,
                    slack: FakeSlackAPI, llm: FakeOpenAIServer, **env: str) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("KOTAE_", "OPENAI_", "SLACK_"))}
    environ.update({
        "KOTAE_EMBEDDING_MODEL": str(tiny_model_dir), "KOTAE_EMBEDDING_DEVICE": "cpu",
        "KOTAE_INDEX_DIR": str(index_dir), "KOTAE_FEEDBACK_PATH": str(tmp_path / "f.jsonl"),
        "SLACK_BOT_TOKEN": "xoxb-run", "SLACK_API_URL": slack.base_url,
        "OPENAI_API_KEY": "sk-run", "OPENAI_BASE_URL": llm.base_url,
        "KOTAE_CHAT_MAX_RETRIES": "0", "PYTHONPATH": str(ROOT), **env,
    })
    return subprocess.Popen([sys.executable, "-c", RUN_BOT], env=environ, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)



def test_http_mode_serves_health_and_answers_until_ctrl_c(
        tiny_model_dir: Path, sample_index_dir: Path, fake_slack: FakeSlackAPI,
        fake_openai: FakeOpenAIServer, tmp_path: Path) -> None:
    port = free_port()
    fake_openai.push(Reply(text="Every Monday at 10:00 JST [1]."))
    process = run_bot_process(tiny_model_dir, sample_index_dir, tmp_path, fake_slack,
                              fake_openai, SLACK_SIGNING_SECRET=SECRET, KOTAE_PORT=str(port))
    try:
        health = wait_for_health(process, port)
        assert health is not None, "run_bot did not listen"
        assert set(health) == {"ok", "index_version", "chunks", "documents",
                               "embedding_device", "retrieval_mode"} and health["chunks"] > 0
        body = event_body(mention_event("1600000003.000100"), "EvRun")
        assert post_signed(f"http://127.0.0.1:{port}/slack/events", body, SECRET)[0] == 200
        [reply] = wait_for_bot_reply(fake_slack, "C1", "1600000003.000100")
        assert "Every Monday at 10:00 JST [1]" in json.dumps(reply["blocks"], ensure_ascii=False)
    finally:
        code, output = interrupt(process)
    assert code == 0 and "Traceback" not in output
    assert f"kotae: listening on http://127.0.0.1:{port}/slack/events" in output
    assert "run_bot returned" in output


def test_socket_mode_answers_until_ctrl_c(
        tiny_model_dir: Path, sample_index_dir: Path, fake_slack: FakeSlackAPI,
        fake_socket_mode: FakeSocketModeServer, fake_openai: FakeOpenAIServer,
        tmp_path: Path) -> None:
    port = free_port()  # set, and never listened on: an app token means Socket Mode
    fake_openai.push(Reply(text="Monday [1]."))
    process = run_bot_process(tiny_model_dir, sample_index_dir, tmp_path, fake_slack,
                              fake_openai, SLACK_APP_TOKEN="xapp-1-run",
                              SLACK_SIGNING_SECRET=SECRET, KOTAE_PORT=str(port))
    try:
        fake_socket_mode.wait_for_connection(timeout=60)
        payload = json.loads(event_body(mention_event("1600000004.000100"), "EvRunSocket"))
        envelope = fake_socket_mode.send_envelope("events_api", payload)
        assert fake_socket_mode.wait_for_ack(envelope, timeout=5)
        [reply] = wait_for_bot_reply(fake_slack, "C1", "1600000004.000100")
        assert "Monday [1]." in json.dumps(reply["blocks"], ensure_ascii=False)
        assert wait_for_health(process, port, timeout=1) is None
    finally:
        code, output = interrupt(process)
    assert code == 0 and "Traceback" not in output
    assert "kotae: connecting to Slack in Socket Mode" in output
    assert "run_bot returned" in output


def test_socket_mode_on_sigterm_finishes_the_answer_in_flight_then_exits_0(
        tiny_model_dir: Path, sample_index_dir: Path, fake_slack: FakeSlackAPI,
        fake_socket_mode: FakeSocketModeServer, fake_openai: FakeOpenAIServer,
        tmp_path: Path) -> None:
    # 8 s: closing the Socket Mode connection takes a moment of its own before the drain,
    # and the answer must still be under way then (CI saw a 2 s answer finish first)
    fake_openai.push(Reply(text="Monday [1].", delay_s=8.0))
    process = run_bot_process(tiny_model_dir, sample_index_dir, tmp_path, fake_slack,
                              fake_openai, SLACK_APP_TOKEN="xapp-1-run",
                              SLACK_SIGNING_SECRET=SECRET, KOTAE_SHUTDOWN_GRACE_S="14")
    try:
        fake_socket_mode.wait_for_connection(timeout=60)
        payload = json.loads(event_body(mention_event("1600000004.000200"), "EvTermSocket"))
        envelope = fake_socket_mode.send_envelope("events_api", payload)
        assert fake_socket_mode.wait_for_ack(envelope, timeout=5)
        fake_openai.wait_for_requests(1, timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)  # as `docker stop` does
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0 and "Traceback" not in output, output[-3000:]
    [reply] = [m for m in fake_slack.thread_messages("C1", "1600000004.000200")
               if m.get("bot_id")]
    assert "Monday [1]." in json.dumps(reply["blocks"], ensure_ascii=False)
    assert "waiting up to 14s for 1 answer(s)" in output and "kotae: stopped" in output
