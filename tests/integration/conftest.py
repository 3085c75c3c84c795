"""Fixtures for the integration tests that talk to a running bot (see bot_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from retrieval.embeddings import BGEM3Embeddings
from retrieval.settings import Settings
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.slack_api import FakeSlackAPI
from tests.integration.bot_harness import Bot, StartBot, make_bot


@pytest.fixture
def start_bot(settings: Settings, embeddings: BGEM3Embeddings, sample_index_dir: Path,
              fake_slack: FakeSlackAPI, fake_openai: FakeOpenAIServer, tmp_path: Path
              ) -> Iterator[StartBot]:
    """Starts bots (see `StartBot`) and stops every one of them at teardown."""
    defaults = settings
    started: list[Bot] = []

    def start(index_dir: Path | None = None, *, settings: Settings | None = None,
              **overrides: Any) -> Bot:
        running = make_bot(settings or defaults, embeddings, index_dir or sample_index_dir,
                           fake_slack, fake_openai, tmp_path, **overrides)
        started.append(running)
        return running

    yield start
    for running in started:
        running.server.stop()


@pytest.fixture
def bot(start_bot: StartBot) -> Bot:
    """A bot with the default test settings, on the sample index."""
    return start_bot()
