"""Reindexing with the lock in a real Redis: replicas (and `kotae index`) refuse each other
with the holder's name, a scheduled refresh skips its round, every replica serves the new
version within seconds, Redis gone means a reindex refused (never two indexers) with the
served version untouched, and an unreachable Redis at start is one line and exit 1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.reindex import ScheduledRefresh
from retrieval.redis_state import RedisUnavailable
from retrieval.stores import open_store_backend
from tests.fakes.slack_api import FakeSlackAPI
from tests.helpers import wait_until
from tests.integration.bot_harness import Bot, StartBot, free_port
from tests.redis_server import RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pw-never-shown"


@pytest.fixture
def replicas(start_bot: StartBot, redis_server: RedisServer, sample_index_dir: Path,
             sample_docs: Path, tmp_path: Path) -> tuple[Bot, Bot]:
    """Two bots serving one index folder, locking it through Redis."""
    index_dir = tmp_path / "shared-index"
    shutil.copytree(sample_index_dir, index_dir)
    shared = {"redis_url": redis_server.url, "redis_prefix": "kotae-test:",
              "docs_dir": sample_docs, "reindex_progress_interval_s": 0}
    return start_bot(index_dir, **shared), start_bot(index_dir, **shared)


def reindex_reply(bot: Bot, fake_slack: FakeSlackAPI, count: int = 1) -> str:
    bot.send_command("reindex", user="UADMIN")
    return fake_slack.wait_for("response_url", count=count, timeout=30)[-1].params["text"]


def test_a_replica_is_refused_while_another_indexer_holds_the_redis_lock(
        replicas: tuple[Bot, Bot], fake_slack: FakeSlackAPI) -> None:
    first, second = replicas
    before = second.ctx.service.index.version
    with open_store_backend(first.ctx.service.settings).lock("kotae index (cli)"):
        text = reindex_reply(second, fake_slack)
        assert text.startswith(":hourglass: Another indexer is already running")
        assert "kotae index (cli)" in text and "Redis" in text
        refresh = ScheduledRefresh(first.ctx.service.reindex, 3600)
        assert refresh.run_once() is None  # the other replica's scheduled round: skipped
    assert second.ctx.service.index.version == before


def test_every_replica_serves_the_new_version_within_seconds(
        replicas: tuple[Bot, Bot], sample_docs: Path) -> None:
    first, second = replicas
    before = second.ctx.service.index.version
    second.ctx.service.index.store()  # serving the old version
    (sample_docs / "backups.md").write_text("# Backups\n\nBackups run at 02:00 JST.\n", "utf-8")
    summary = first.ctx.service.reindex(holder="Slack user UADMIN")
    assert summary.switched and summary.version != before
    switched = time.monotonic()
    wait_until(lambda: second.ctx.service.index.store().count == first.ctx.service.index
               .store().count and second.ctx.service.status()["index_version"]
               == summary.version, timeout=5, interval=0.05)
    assert time.monotonic() - switched < 5
    hits = second.ctx.service.search("Backups run at 02:00", k=3)
    assert any(hit.source.endswith("backups.md") for hit in hits)


def test_redis_down_refuses_a_reindex_and_keeps_the_served_version(
        replicas: tuple[Bot, Bot], redis_server: RedisServer, fake_slack: FakeSlackAPI) -> None:
    first, _second = replicas
    before = first.ctx.service.index.version
    redis_server.stop()
    text = reindex_reply(first, fake_slack)
    assert text.startswith(":warning: Reindex failed: cannot reach Redis at redis://127.0.0.1:")
    assert "KOTAE_REDIS_URL" in text and "nothing was indexed" in text
    assert first.ctx.service.index.version == before
    redis_server.start()
    first.send_command("reindex", user="UADMIN")  # Redis back: the reindex runs
    wait_until(lambda: any("Reindex finished" in (c.params.get("text") or "")
                           for c in fake_slack.calls("chat.update")), timeout=60, interval=0.1)


def test_redis_lost_in_the_middle_of_a_reindex_leaves_the_served_version(
        replicas: tuple[Bot, Bot], redis_server: RedisServer, sample_docs: Path) -> None:
    first, _second = replicas
    service = first.ctx.service
    before = service.index.version
    (sample_docs / "backups.md").write_text("# Backups\n\nBackups run at 02:00 JST.\n", "utf-8")

    def lose_redis(progress: object) -> None:
        if getattr(progress, "phase", None) == "embedding":
            redis_server.kill()

    with pytest.raises(RedisUnavailable, match="nothing was published"):
        service.reindex(holder="cli", progress=lose_redis)
    assert service.index.version == before
    assert not list((service.settings.index_dir / "versions").glob(".building-*"))
    redis_server.start()
    assert service.reindex(holder="cli").switched  # the next reindex succeeds


def _env(tiny_model_dir: Path, tmp_path: Path, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOTAE_", "OPENAI_", "SLACK_"))}
    env.update({
        "KOTAE_REDIS_URL": redis_url, "KOTAE_EMBEDDING_MODEL": str(tiny_model_dir),
        "KOTAE_EMBEDDING_DEVICE": "cpu", "KOTAE_INDEX_DIR": str(tmp_path / "index"),
        "KOTAE_FEEDBACK_PATH": str(tmp_path / "feedback.jsonl"),
        "KOTAE_PORT": str(free_port()), "SLACK_BOT_TOKEN": "xoxb-serve",
        "SLACK_SIGNING_SECRET": "serve-secret", "SLACK_API_URL": "http://127.0.0.1:9/api/",
        "OPENAI_API_KEY": "sk-serve", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "PYTHONPATH": str(REPO_ROOT),
    })
    return env


@pytest.mark.parametrize("command", [["serve"], ["index"]])
def test_unreachable_redis_at_start_is_one_line_and_exit_1(
        command: list[str], tiny_model_dir: Path, tmp_path: Path) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"  # nothing listens there
    result = subprocess.run([sys.executable, "-m", "kotae", *command], cwd=tmp_path,
                            env=_env(tiny_model_dir, tmp_path, url), capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: cannot reach Redis at redis://:***@127.0.0.1:")
    assert "(KOTAE_REDIS_URL)" in line
    assert PASSWORD not in result.stderr + result.stdout and "Traceback" not in result.stderr
    assert not (tmp_path / "index" / "CURRENT").exists()
