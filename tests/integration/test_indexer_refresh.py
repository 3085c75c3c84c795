"""Scheduled refresh (KOTAE_REINDEX_INTERVAL): an incremental reindex through the index lock,
its summary logged and posted to KOTAE_ADMIN_CHANNEL; nothing changed publishes nothing."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from slack_sdk import WebClient

from bot.reindex import ScheduledRefresh
from retrieval.embeddings import BGEM3Embeddings
from retrieval.service import KotaeService
from retrieval.settings import Settings
from retrieval.stores import open_store_backend
from retrieval.stores.local.layout import BUILDING_PREFIX
from tests.fakes.slack_api import FakeSlackAPI
from tests.helpers import wait_until

CHANNEL = "CADMIN"


@pytest.fixture
def service(settings: Settings, embeddings: BGEM3Embeddings, sample_docs: Path) -> KotaeService:
    settings = settings.model_copy(update={"docs_dir": sample_docs})
    service = KotaeService(settings, embeddings)
    service.reindex()
    return service


def refresh(service: KotaeService, fake_slack: FakeSlackAPI,
            interval_s: float = 3600) -> ScheduledRefresh:
    client = WebClient(token="xoxb-test", base_url=fake_slack.base_url)
    return ScheduledRefresh(service.reindex, interval_s, client, CHANNEL)


def test_nothing_changed_publishes_and_posts_nothing(
        service: KotaeService, fake_slack: FakeSlackAPI,
        caplog: pytest.LogCaptureFixture) -> None:
    before = service.index.version
    with caplog.at_level(logging.INFO, logger="bot.reindex"):
        summary = refresh(service, fake_slack).run_once()
    assert summary is not None and not summary.switched and summary.chunks_embedded == 0
    assert service.index.version == before
    assert "nothing changed, nothing published" in caplog.text
    assert not fake_slack.calls("chat.postMessage")


def test_a_change_is_published_logged_and_posted(
        service: KotaeService, fake_slack: FakeSlackAPI, sample_docs: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    (sample_docs / "new-page.md").write_text("# New page\n\nBackups run at 02:00.\n", "utf-8")
    with caplog.at_level(logging.INFO, logger="bot.reindex"):
        summary = refresh(service, fake_slack).run_once()
    assert summary is not None and summary.switched and summary.added
    assert "scheduled refresh: added 1" in caplog.text and "chunks embedded" in caplog.text
    [post] = fake_slack.calls("chat.postMessage")
    assert post.params["channel"] == CHANNEL
    assert post.text is not None and post.text.startswith(
        ":white_check_mark: Scheduled refresh finished")
    assert "Chunks: embedded" in post.text


def test_another_indexer_holding_the_lock_means_this_round_is_skipped(
        service: KotaeService, fake_slack: FakeSlackAPI, sample_docs: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    (sample_docs / "new-page.md").write_text("# New page\n\nBackups run at 02:00.\n", "utf-8")
    before = service.index.version
    with open_store_backend(service.settings).lock("another replica"), \
            caplog.at_level(logging.INFO, logger="bot.reindex"):
        assert refresh(service, fake_slack).run_once() is None
    assert "scheduled refresh skipped" in caplog.text and "another replica" in caplog.text
    assert service.index.version == before and not fake_slack.calls("chat.postMessage")


def test_the_schedule_runs_until_stopped(service: KotaeService, fake_slack: FakeSlackAPI,
                                         sample_docs: Path) -> None:
    scheduled = refresh(service, fake_slack, interval_s=0.2).start()
    try:
        (sample_docs / "new-page.md").write_text("# New page\n\nBackups at 02:00.\n", "utf-8")
        [post] = fake_slack.wait_for("chat.postMessage", timeout=30)
        assert "Scheduled refresh finished" in (post.text or "")
    finally:
        scheduled.stop()
    time.sleep(0.5)  # stopped: no further round publishes
    assert len(fake_slack.calls("chat.postMessage")) == 1


def test_stopping_mid_refresh_publishes_nothing_and_frees_the_lock(
        service: KotaeService, fake_slack: FakeSlackAPI, sample_docs: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    before = service.index.version
    for n in range(12):  # thousands of chunks: still embedding when it is stopped
        (sample_docs / f"extra-{n}.md").write_text(f"# Extra {n}\n\n" + "\n\n".join(
            f"Paragraph {p} of extra {n}: backups, restores and retention {p * n}. " * 12
            for p in range(60)), "utf-8")
    scheduled = refresh(service, fake_slack, interval_s=0.01)
    builds = service.settings.index_dir / "versions"
    with caplog.at_level(logging.INFO, logger="bot.reindex"):
        scheduled.start()
        wait_until(lambda: any(p.name.startswith(BUILDING_PREFIX) for p in builds.iterdir()),
                   timeout=60, interval=0.01)
        started = time.monotonic()
        scheduled.stop(30)
        assert time.monotonic() - started < 10  # at its next batch, not the end of the build
    assert "scheduled refresh stopped" in caplog.text
    assert service.index.version == before  # nothing half-built was published
    assert not fake_slack.calls("chat.postMessage")
    assert service.reindex().switched  # the lock is free and the next run does the work
