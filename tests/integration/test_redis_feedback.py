"""Feedback of every replica in one real Redis, read with `kotae feedback`; with Redis gone,
votes go to the local file (nothing lost) and the operator is told once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.feedback import SharedFeedbackLog
from tests.fakes.openai_server import FakeOpenAIServer, Reply
from tests.fakes.slack_signing import action_body, post_signed
from tests.integration.bot_harness import FORM, SECRET, Bot, StartBot, mention
from tests.redis_server import RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]


def kotae(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KOTAE_", "SLACK_"))}
    return subprocess.run([sys.executable, "-m", "kotae", *args], cwd=cwd,
                          env={**clean, "PYTHONPATH": str(REPO_ROOT), **env},
                          capture_output=True, text=True, timeout=120, check=False)


def answer(bot: Bot, ts: str, event_id: str) -> dict[str, Any]:
    """Ask on `bot`; the feedback button of its answer."""
    bot.send_event(mention("When is the on-call handoff?", ts), event_id)
    [reply] = bot.wait_for_final("C1", ts)
    return next(e for b in reply["blocks"] if b["type"] == "actions"
                for e in b["elements"] if e["action_id"] == "kotae_feedback_down")


def click(bot: Bot, button: dict[str, Any], user: str, ts: str) -> None:
    payload = {"type": "block_actions", "user": {"id": user}, "team": {"id": "T1"},
               "channel": {"id": "C1"}, "container": {"type": "message"},
               "message": {"ts": ts, "thread_ts": ts},
               "actions": [{**button, "type": "button", "block_id": "kotae_feedback",
                            "action_ts": "1"}],
               "response_url": bot.slack.response_url(), "trigger_id": "t"}
    before = len(bot.slack.calls("chat.postEphemeral"))
    status, _text, _elapsed = post_signed(f"{bot.url}/slack/events", action_body(payload),
                                          SECRET, content_type=FORM)
    assert status == 200
    bot.slack.wait_for("chat.postEphemeral", count=before + 1)


@pytest.fixture
def replicas(start_bot: StartBot, redis_server: RedisServer, tmp_path: Path,
             fake_openai: FakeOpenAIServer) -> tuple[Bot, Bot]:
    fake_openai.responder = lambda _request: Reply(text="Monday [1].")
    shared = {"redis_url": redis_server.url, "redis_prefix": "kotae-test:"}
    return (start_bot(**shared, feedback_path=tmp_path / "a" / "feedback.jsonl"),
            start_bot(**shared, feedback_path=tmp_path / "b" / "feedback.jsonl"))


def test_votes_from_every_replica_and_process_are_read_with_one_command(
        replicas: tuple[Bot, Bot], redis_server: RedisServer, tmp_path: Path) -> None:
    first, second = replicas
    assert isinstance(first.ctx.feedback, SharedFeedbackLog)
    button = answer(first, "1600000200.000100", "EvFb1")
    click(second, button, "U7", "1600000200.000100")  # the vote reaches the other replica
    env = {"KOTAE_REDIS_URL": redis_server.url, "KOTAE_REDIS_PREFIX": "kotae-test:",
           "KOTAE_FEEDBACK_PATH": str(tmp_path / "c" / "feedback.jsonl")}
    script = ("from bot.feedback import open_feedback\n"
              "from bot.settings import BotSettings\n"
              "open_feedback(BotSettings(_env_file=None)).vote("
              f"{button['value']!r}, 'U8', 'up', 'C1')\n")
    other = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
                           capture_output=True, text=True, check=False)
    assert other.returncode == 0, other.stderr

    result = kotae("feedback", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    votes = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(v["user"], v["vote"]) for v in votes] == [("U7", "down"), ("U8", "up")]
    assert all(v["type"] == "vote" and v["answer_id"] == button["value"] for v in votes)
    assert all(v["question"] == "When is the on-call handoff?" for v in votes)
    assert not (tmp_path / "a" / "feedback.jsonl").exists()  # Redis took them all
    everything = kotae("feedback", "--all", env=env, cwd=tmp_path)
    assert [json.loads(line)["type"] for line in everything.stdout.splitlines()] == [
        "answer", "vote", "vote"]


def test_redis_down_votes_go_to_the_local_file_and_nothing_is_lost(
        replicas: tuple[Bot, Bot], redis_server: RedisServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    first, _second = replicas
    button = answer(first, "1600000201.000100", "EvFb2")
    redis_server.stop()
    with caplog.at_level(logging.WARNING):
        click(first, button, "U7", "1600000201.000100")
        click(first, button, "U9", "1600000201.000100")
    lost = [r for r in caplog.records if "is unreachable" in r.getMessage()]
    assert len(lost) == 1 and "writes feedback to" in lost[0].getMessage()
    local = [json.loads(line) for line in
             (tmp_path / "a" / "feedback.jsonl").read_text().splitlines()]
    assert [(r["user"], r["question"]) for r in local] == [
        ("U7", "When is the on-call handoff?"), ("U9", "When is the on-call handoff?")]

    env = {"KOTAE_REDIS_URL": redis_server.url, "KOTAE_REDIS_PREFIX": "kotae-test:",
           "KOTAE_FEEDBACK_PATH": str(tmp_path / "a" / "feedback.jsonl")}
    down = kotae("feedback", env=env, cwd=tmp_path)
    assert down.returncode == 1 and "Traceback" not in down.stderr
    [line] = down.stderr.strip().splitlines()
    assert "KOTAE_REDIS_URL" in line

    redis_server.start()  # back (empty: nothing persisted); this machine's file still counts
    result = kotae("feedback", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["user"] for line in result.stdout.splitlines()] == ["U7", "U9"]


def test_without_redis_kotae_feedback_reads_the_local_file(tmp_path: Path) -> None:
    path = tmp_path / "feedback.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"at": 1.0, "type": "answer", "answer_id": "a1", "question": "q"},
        {"at": 2.0, "type": "vote", "answer_id": "a1", "vote": "up", "user": "U1",
         "channel": "C1", "question": "q"}]) + "\n")
    result = kotae("feedback", env={"KOTAE_FEEDBACK_PATH": str(path)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [vote] = [json.loads(line) for line in result.stdout.splitlines()]
    assert vote["user"] == "U1" and vote["vote"] == "up"
