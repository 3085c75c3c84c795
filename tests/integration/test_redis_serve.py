"""Two `kotae serve` processes (HTTP mode, one signing secret) sharing one real Redis and one
index folder, as deployed behind a load balancer: every event delivered to both and retried to
either is answered once; `/kotae reindex` on one replica is served by the other within 5 s;
kill -9 of one replica in the middle of an answer leaves the other answering."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrieval.embeddings import BGEM3Embeddings
from retrieval.indexer import Indexer
from retrieval.settings import Settings
from tests.fakes.openai_server import FakeOpenAIServer, Reply
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_signing import event_body, post_signed, retry_headers, slash_body
from tests.helpers import interrupt, wait_until
from tests.integration.bot_harness import (
    FORM,
    free_port,
    mention_event,
    wait_for_bot_reply,
    wait_for_health,
)
from tests.redis_server import RedisServer

SECRET = "replica-secret"
REPO_ROOT = Path(__file__).resolve().parents[2]
NEW_FACT = "Backups run every night at 02:00 JST"

pytestmark = pytest.mark.slow


class Replica:
    def __init__(self, env: dict[str, str], name: str) -> None:
        self.name = name
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kotae", "serve"], env={**env, "KOTAE_PORT": str(self.port)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"

    def send(self, body: str, headers: dict[str, str] | None = None,
             content_type: str = "application/json") -> int:
        return post_signed(self.events_url, body, SECRET, content_type=content_type,
                           extra_headers=headers)[0]


@pytest.fixture
def replicas(tiny_model_dir: Path, embeddings: BGEM3Embeddings, sample_docs: Path,
             redis_server: RedisServer, fake_slack: FakeSlackAPI,
             fake_openai: FakeOpenAIServer, tmp_path: Path) -> Iterator[tuple[Replica, Replica]]:
    index_dir = tmp_path / "index"
    Indexer(Settings(_env_file=None, embedding_model=str(tiny_model_dir),  # type: ignore[call-arg]
                     embedding_device="cpu", index_dir=index_dir, docs_dir=sample_docs,
                     chunk_size=200, chunk_overlap=20, faiss_device="cpu"), embeddings).run()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOTAE_", "OPENAI_", "SLACK_"))}
    env.update({
        "KOTAE_EMBEDDING_MODEL": str(tiny_model_dir), "KOTAE_EMBEDDING_DEVICE": "cpu",
        "KOTAE_INDEX_DIR": str(index_dir), "KOTAE_DOCS_DIR": str(sample_docs),
        "KOTAE_CHUNK_SIZE": "200", "KOTAE_CHUNK_OVERLAP": "20", "KOTAE_FAISS_DEVICE": "cpu",
        "KOTAE_RETRIEVAL_MODE": "hybrid", "KOTAE_REDIS_URL": redis_server.url,
        "KOTAE_ADMIN_USER_IDS": "UADMIN", "KOTAE_CHAT_MAX_RETRIES": "0",
        "SLACK_BOT_TOKEN": "xoxb-replica", "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake_slack.base_url, "OPENAI_API_KEY": "sk-replica",
        "OPENAI_BASE_URL": fake_openai.base_url, "PYTHONPATH": str(REPO_ROOT),
    })
    started = [Replica({**env, "KOTAE_FEEDBACK_PATH": str(tmp_path / f"{name}.jsonl")}, name)
               for name in ("a", "b")]
    try:
        for replica in started:
            assert wait_for_health(replica.process, replica.port, timeout=120) is not None, (
                f"replica {replica.name} did not come up")
        yield started[0], started[1]
    finally:
        for replica in started:
            if replica.process.poll() is None:
                _code, output = interrupt(replica.process)
                assert "Traceback" not in output, output[-3000:]


def sources_of(request_json: dict) -> str:
    return json.dumps(request_json.get("messages", []), ensure_ascii=False)


def test_two_kotae_serve_replicas_share_redis(
        replicas: tuple[Replica, Replica], fake_slack: FakeSlackAPI,
        fake_openai: FakeOpenAIServer, sample_docs: Path) -> None:
    a, b = replicas
    fake_openai.responder = lambda request: Reply(
        text="Nightly at 02:00 [1]." if NEW_FACT in sources_of(request) else "Monday [1].",
        chunk_delay_s=0.02)

    # every delivery to both replicas, retries to either: one answer
    body = event_body(mention_event("1600000300.000100"), "EvReplicas")
    assert a.send(body) == 200 and b.send(body) == 200
    assert b.send(body, retry_headers(1)) == 200 and a.send(body, retry_headers(2)) == 200
    assert len(wait_for_bot_reply(fake_slack, "C1", "1600000300.000100")) == 1
    assert len(fake_openai.requests) == 1

    # /kotae reindex on A: B answers from the new version right after the switch
    (sample_docs / "backups.md").write_text(f"# Backups\n\n{NEW_FACT}.\n", "utf-8")
    command = slash_body(text="reindex", user_id="UADMIN",
                         response_url=fake_slack.response_url("reindex"))
    assert a.send(command, content_type=FORM) == 200
    wait_until(lambda: any("Reindex finished" in (call.params.get("text") or "")
                           for call in fake_slack.calls("chat.update")), timeout=120,
               interval=0.1)
    # sent at once: B's first search after the switch must already be on the new version
    # (ServedIndex reads the served version when its last look is 1 s old or more)
    event = {**mention_event("1600000300.000200"), "text": f"<@UBOT> {NEW_FACT}?"}
    assert b.send(event_body(event, "EvAfterReindex")) == 200
    [reply] = wait_for_bot_reply(fake_slack, "C1", "1600000300.000200")
    assert "Nightly at 02:00" in json.dumps(reply["blocks"], ensure_ascii=False)

    # kill -9 of A while it writes an answer: B keeps answering new questions
    fake_openai.responder = lambda _request: Reply(text="Monday, slowly [1].", chunk_delay_s=1)
    before = len(fake_openai.requests)
    assert a.send(event_body(mention_event("1600000300.000300"), "EvKilled")) == 200
    fake_openai.wait_for_requests(before + 1, timeout=20)
    a.process.send_signal(signal.SIGKILL)
    a.process.wait(timeout=10)
    fake_openai.responder = lambda _request: Reply(text="Monday [1].")
    assert b.send(event_body(mention_event("1600000300.000400"), "EvAfterKill")) == 200
    assert len(wait_for_bot_reply(fake_slack, "C1", "1600000300.000400")) == 1
