"""`kotae serve` as deployed: HTTP mode in its own process, and Socket Mode against a local
websocket — both answering a mention in its thread, once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.app import create_app
from bot.server import socket_mode_handler
from bot.settings import BotSettings
from retrieval.embeddings import BGEM3Embeddings
from retrieval.service import KotaeService
from retrieval.settings import Settings
from tests.fakes.openai_server import FakeOpenAIServer, Reply
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_signing import event_body, post_signed, retry_headers
from tests.fakes.socket_mode import FakeSocketModeServer
from tests.helpers import interrupt
from tests.integration.bot_harness import (
    free_port,
    mention_event,
    wait_for_bot_reply,
    wait_for_health,
)

SECRET = "serve-secret"



def test_kotae_serve_http_answers_once_under_retries(
        tiny_model_dir: Path, sample_index_dir: Path, fake_slack: FakeSlackAPI,
        fake_openai: FakeOpenAIServer, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOTAE_", "OPENAI_", "SLACK_"))}
    env.update({
        "KOTAE_EMBEDDING_MODEL": str(tiny_model_dir), "KOTAE_EMBEDDING_DEVICE": "cpu",
        "KOTAE_INDEX_DIR": str(sample_index_dir), "KOTAE_PORT": str(port),
        "KOTAE_FEEDBACK_PATH": str(tmp_path / "feedback.jsonl"),
        "SLACK_BOT_TOKEN": "xoxb-serve", "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake_slack.base_url, "OPENAI_API_KEY": "sk-serve",
        "OPENAI_BASE_URL": fake_openai.base_url, "KOTAE_CHAT_MAX_RETRIES": "0",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    })
    fake_openai.push(Reply(text="Every Monday at 10:00 JST [1].", chunk_delay_s=0.05))
    process = subprocess.Popen([sys.executable, "-m", "kotae", "serve"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        health = wait_for_health(process, port)
        assert health is not None, "kotae serve did not come up"
        assert health["index_version"] and health["chunks"] > 0
        assert health["embedding_device"] == "cpu"

        url = f"http://127.0.0.1:{port}/slack/events"
        body = event_body(mention_event("1600000001.000100"), "EvServe")
        assert post_signed(url, body, SECRET)[0] == 200
        time.sleep(0.3)
        assert post_signed(url, body, SECRET, extra_headers=retry_headers(1))[0] == 200
        replies = wait_for_bot_reply(fake_slack, "C1", "1600000001.000100")
        assert len(replies) == 1
        blocks = json.dumps(replies[0]["blocks"], ensure_ascii=False)
        assert "Every Monday at 10:00 JST [1]" in blocks and "Sources" in blocks
        assert len(fake_openai.requests) == 1
    finally:
        _code, output = interrupt(process)
    assert "xoxb-serve" not in output and "sk-serve" not in output and SECRET not in output


def test_socket_mode_answers_a_mention(
        settings: Settings, embeddings: BGEM3Embeddings, sample_index_dir: Path,
        fake_slack: FakeSlackAPI, fake_socket_mode: FakeSocketModeServer,
        fake_openai: FakeOpenAIServer, tmp_path: Path) -> None:
    bot_settings = BotSettings(
        _env_file=None,  # type: ignore[call-arg]
        **{**settings.model_dump(), "index_dir": sample_index_dir,
           "slack_bot_token": "xoxb-test", "slack_app_token": "xapp-1-test",
           "slack_api_url": fake_slack.base_url, "openai_api_key": "sk-test",
           "openai_base_url": fake_openai.base_url, "feedback_path": tmp_path / "f.jsonl"})
    app, _ctx = create_app(bot_settings, KotaeService(bot_settings, embeddings=embeddings))
    handler = socket_mode_handler(app, "xapp-1-test")
    fake_openai.push(Reply(text="Monday [1]."))
    handler.connect()
    try:
        fake_socket_mode.wait_for_connection()
        payload = json.loads(event_body(mention_event("1600000002.000100"), "EvSocket"))
        first = fake_socket_mode.send_envelope("events_api", payload)
        assert fake_socket_mode.wait_for_ack(first, timeout=3) == {"envelope_id": first}
        retry = fake_socket_mode.send_envelope("events_api", payload, retry_attempt=1,
                                               retry_reason="timeout")
        assert fake_socket_mode.wait_for_ack(retry, timeout=3)
        replies = wait_for_bot_reply(fake_slack, "C1", "1600000002.000100", timeout=20)
        assert len(replies) == 1 and "Monday [1]." in json.dumps(replies[0]["blocks"])
    finally:
        handler.client.auto_reconnect_enabled = False
        fake_socket_mode.close_connections()
        handler.close()


@pytest.mark.parametrize("missing", ["SLACK_BOT_TOKEN", "both secrets"])
def test_serve_without_slack_settings_says_what_to_set(missing: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOTAE_", "SLACK_"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    if missing != "SLACK_BOT_TOKEN":
        env["SLACK_BOT_TOKEN"] = "xoxb-x"
    result = subprocess.run([sys.executable, "-m", "kotae", "serve"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2  # a usage error: a setting is missing (kotae/cli.py)
    expected = "SLACK_BOT_TOKEN" if missing == "SLACK_BOT_TOKEN" else "SLACK_APP_TOKEN"
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_make_demo_serves_the_bot_when_slack_tokens_are_in_dot_env(
        tiny_model_dir: Path, sample_index_dir: Path, fake_slack: FakeSlackAPI,
        tmp_path: Path) -> None:
    """`make demo` runs `kotae demo`; Slack settings in .env (not exported) must count."""
    import shutil

    index_dir = tmp_path / "index"
    shutil.copytree(sample_index_dir, index_dir)
    port = free_port()
    (tmp_path / ".env").write_text("\n".join([
        "SLACK_BOT_TOKEN=xoxb-dotenv", f"SLACK_SIGNING_SECRET={SECRET}",
        f"SLACK_API_URL={fake_slack.base_url}", f"KOTAE_PORT={port}",
        f"KOTAE_EMBEDDING_MODEL={tiny_model_dir}", "KOTAE_EMBEDDING_DEVICE=cpu",
        f"KOTAE_INDEX_DIR={index_dir}", f"KOTAE_FEEDBACK_PATH={tmp_path / 'feedback.jsonl'}",
    ]) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOTAE_", "OPENAI_", "SLACK_"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    process = subprocess.Popen([sys.executable, "-m", "kotae", "demo"], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        health = wait_for_health(process, port)
        assert health is not None, "kotae demo did not start the bot"
        assert health["ok"] and health["chunks"] > 0
    finally:
        _code, output = interrupt(process)
    assert "listening on" in output and "xoxb-dotenv" not in output


def test_serve_with_a_broken_prompts_dir_stops_at_startup(
        fake_slack: FakeSlackAPI, tmp_path: Path) -> None:
    """A KOTAE_PROMPTS_DIR mistake is found before the bot listens, not on the first question."""
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "answer.md").write_text("Answer the question in {language}.\n", "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOTAE_", "OPENAI_", "SLACK_"))}
    env.update({
        "KOTAE_PROMPTS_DIR": str(prompts), "KOTAE_PORT": str(free_port()),
        "KOTAE_EMBEDDING_MODEL": str(tmp_path / "no-model"), "KOTAE_EMBEDDING_DEVICE": "cpu",
        "KOTAE_INDEX_DIR": str(tmp_path / "index"),
        "KOTAE_FEEDBACK_PATH": str(tmp_path / "feedback.jsonl"),
        "SLACK_BOT_TOKEN": "xoxb-serve", "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake_slack.base_url, "OPENAI_API_KEY": "sk-serve",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    })
    result = subprocess.run([sys.executable, "-m", "kotae", "serve"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "answer.md" in result.stderr and "{sources}" in result.stderr
    assert "Traceback" not in result.stderr and "listening on" not in result.stderr


@pytest.mark.parametrize("route", ["closed port", "invalid token"])
def test_serve_without_a_route_to_slack_says_so_in_one_line(
        route: str, tiny_model_dir: Path, fake_slack: FakeSlackAPI, tmp_path: Path) -> None:
    """Bolt's App() checks the token with auth.test at construction: no route to Slack (or a
    refused token) used to end `kotae serve` in two tracebacks ending in URLError."""
    url = f"http://127.0.0.1:{free_port()}/api/" if route == "closed port" else fake_slack.base_url
    fake_slack.fail("auth.test", "invalid_auth")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOTAE_", "OPENAI_", "SLACK_"))}
    env.update({
        "SLACK_BOT_TOKEN": "xoxb-serve", "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": url,
        "KOTAE_EMBEDDING_MODEL": str(tiny_model_dir), "KOTAE_EMBEDDING_DEVICE": "cpu",
        "KOTAE_INDEX_DIR": str(tmp_path / "index"), "KOTAE_PORT": str(free_port()),
        "KOTAE_FEEDBACK_PATH": str(tmp_path / "feedback.jsonl"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    })
    result = subprocess.run([sys.executable, "-m", "kotae", "serve"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    expected = (f"error: cannot reach Slack at {url}: " if route == "closed port"
                else f"error: Slack at {url} refused SLACK_BOT_TOKEN (invalid_auth)")
    assert line.startswith(expected), result.stderr
    assert "Traceback" not in result.stderr and "listening on" not in result.stderr
