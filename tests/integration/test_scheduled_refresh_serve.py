"""`kotae serve` as an operator runs it (`run_bot` in its own process, HTTP mode): with
KOTAE_REINDEX_INTERVAL set it refreshes the index on its own, publishing a changed document and
posting the summary to KOTAE_ADMIN_CHANNEL; and a reindex that fills the disk is said in Slack
in the same words as on the command line, the served version untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

from retrieval.embeddings import BGEM3Embeddings
from retrieval.indexer import Indexer
from retrieval.settings import Settings
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_signing import post_signed, slash_body
from tests.helpers import interrupt, wait_until
from tests.integration.bot_harness import free_port, wait_for_health
from tests.integration.test_indexer_diskfull import file_size_limit, largest_file

SECRET = "serve-secret"
ADMIN_CHANNEL = "CADMIN"
ROOT = Path(__file__).resolve().parents[2]
# The process `kotae serve` becomes once its settings are checked: settings from the
# environment, then run_bot (as tests/integration/test_bot_run.py runs it).
RUN_BOT = """
from bot.server import run_bot
from bot.settings import BotSettings
from retrieval.service import KotaeService

settings = BotSettings()
run_bot(settings, KotaeService(settings), announce=lambda line: print(line, flush=True))
"""


def serve(settings: Settings, slack: FakeSlackAPI, llm: FakeOpenAIServer, port: int,
          limit: int | None = None, **env: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("KOTAE_", "OPENAI_", "SLACK_"))}
    environ.update({
        "KOTAE_EMBEDDING_MODEL": settings.embedding_model, "KOTAE_EMBEDDING_DEVICE": "cpu",
        "KOTAE_INDEX_DIR": str(settings.index_dir), "KOTAE_FAISS_DEVICE": "cpu",
        "KOTAE_CHUNK_SIZE": str(settings.chunk_size),
        "KOTAE_CHUNK_OVERLAP": str(settings.chunk_overlap),
        "KOTAE_FEEDBACK_PATH": str(settings.index_dir.parent / "feedback.jsonl"),
        "SLACK_BOT_TOKEN": "xoxb-serve", "SLACK_API_URL": slack.base_url,
        "SLACK_SIGNING_SECRET": SECRET, "KOTAE_PORT": str(port),
        "OPENAI_API_KEY": "sk-serve", "OPENAI_BASE_URL": llm.base_url,
        "KOTAE_CHAT_MAX_RETRIES": "0", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **env,
    })
    return subprocess.Popen([sys.executable, "-c", RUN_BOT], env=environ, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=file_size_limit(limit) if limit else None)


def health(port: int) -> dict[str, object]:
    with urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return json.loads(response.read())


def posts_in(slack: FakeSlackAPI, channel: str) -> list[str]:
    return [call.text or "" for call in slack.calls("chat.postMessage")
            if call.params.get("channel") == channel]


def test_serve_with_an_interval_publishes_a_changed_document_and_tells_the_admins(
        settings: Settings, embeddings: BGEM3Embeddings, sample_docs: Path,
        fake_slack: FakeSlackAPI, fake_openai: FakeOpenAIServer) -> None:
    built = Indexer(settings, embeddings).run([sample_docs])  # records the folder it indexed
    port = free_port()
    process = serve(settings, fake_slack, fake_openai, port, KOTAE_REINDEX_INTERVAL="1s",
                    KOTAE_ADMIN_CHANNEL=ADMIN_CHANNEL)
    try:
        started = wait_for_health(process, port)
        assert started is not None, "the bot did not listen"
        assert started["index_version"] == built.version
        time.sleep(2.5)  # two rounds or more, with nothing changed: nothing published or posted
        assert health(port)["index_version"] == built.version
        assert posts_in(fake_slack, ADMIN_CHANNEL) == []

        edited = sample_docs / "oncall-runbook.md"
        edited.write_text(edited.read_text("utf-8") + "\n\n## Parking\n\nBikes go in the "
                          "basement rack; cars in the visitor lot.\n", "utf-8")
        wait_until(lambda: posts_in(fake_slack, ADMIN_CHANNEL), timeout=60, interval=0.2)
        [summary] = posts_in(fake_slack, ADMIN_CHANNEL)
        assert "Scheduled refresh finished" in summary and "updated 1" in summary
        version = summary.split("Now serving index version `", 1)[1].split("`", 1)[0]
        assert version != built.version
        wait_until(lambda: health(port)["index_version"] == version, timeout=15, interval=0.2)
    finally:
        code, output = interrupt(process)
    assert code == 0 and "Traceback" not in output, output


def test_a_reindex_that_fills_the_disk_is_said_in_slack_and_the_index_stays(
        settings: Settings, embeddings: BGEM3Embeddings, sample_docs: Path,
        fake_slack: FakeSlackAPI, fake_openai: FakeOpenAIServer) -> None:
    from tests.integration.test_indexer_cache import mixed_corpus

    built = Indexer(settings, embeddings).run([sample_docs])
    mixed_corpus(sample_docs / "more", files=60, seed=5)  # new chunks: more than there is room
    port = free_port()
    process = serve(settings, fake_slack, fake_openai, port, KOTAE_ADMIN_USER_IDS="UADMIN",
                    limit=largest_file(settings.index_dir) + 96 * 1024)
    try:
        assert wait_for_health(process, port) is not None, "the bot did not listen"
        body = slash_body(text="reindex", user_id="UADMIN", channel_id="C1",
                          response_url=fake_slack.response_url())
        status, _text, _elapsed = post_signed(f"http://127.0.0.1:{port}/slack/events", body,
                                              SECRET,
                                              content_type="application/x-www-form-urlencoded")
        assert status == 200

        def summary() -> str | None:
            texts = [call.text or "" for call in fake_slack.calls("chat.update")]
            return next((text for text in texts if "Reindex failed" in text), None)

        wait_until(summary, timeout=90, interval=0.2)
        text = summary()
        assert text is not None
        assert text.startswith(":warning: Reindex failed: The build stopped: no space left in "
                               f"{settings.index_dir} (File too large)")
        assert f"the index keeps serving {built.version}, untouched" in text
        assert health(port)["index_version"] == built.version
    finally:
        code, output = interrupt(process)
    assert code == 0 and "Traceback" not in output, output
