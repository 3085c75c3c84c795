"""Shared fixtures. Each section is self-contained; add new sections below the existing ones."""

# --- fakes for services we cannot reach ---
# Slack and OpenAI are unreachable from tests; these fixtures start local stand-ins that speak
# the real wire formats (see tests/fakes/). Requests to them must never go through a proxy.
import os
from collections.abc import Iterator

import pytest

from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.socket_mode import FakeSocketModeServer

os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    """An OpenAI-compatible server; script it with `.push(Reply(...))` or `.responder`."""
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def fake_slack() -> Iterator[FakeSlackAPI]:
    """Slack's Web API; use `WebClient(token="xoxb-test", base_url=fake_slack.base_url)`."""
    with FakeSlackAPI() as api:
        yield api


@pytest.fixture
def fake_socket_mode(fake_slack: FakeSlackAPI) -> Iterator[FakeSocketModeServer]:
    """Socket Mode endpoint, already handed out by `fake_slack`'s `apps.connections.open`."""
    with FakeSocketModeServer() as server:
        fake_slack.socket_mode_url = server.url
        yield server
        fake_slack.socket_mode_url = None


# --- end of fakes for services we cannot reach ---


# --- tiny bge-m3 model and index settings ---
# A bge-m3-shaped checkpoint with random weights, built once per session and loaded through the
# real FlagEmbedding code path (BGEM3FlagModel). Real weights can never be downloaded here.
from pathlib import Path  # noqa: E402

from retrieval.embeddings import BGEM3Embeddings  # noqa: E402
from retrieval.settings import Settings  # noqa: E402

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "kotae" / "samples"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from retrieval.tiny_model import build_tiny_bge_m3

    return build_tiny_bge_m3(tmp_path_factory.mktemp("tiny-bge-m3"))


@pytest.fixture(scope="session")
def embeddings(tiny_model_dir: Path) -> BGEM3Embeddings:
    """Shared, already-loaded embeddings on the tiny model (CPU, float32)."""
    model = BGEM3Embeddings(model_name_or_path=str(tiny_model_dir), device="cpu", batch_size=8,
                            passage_max_tokens=512, query_max_tokens=64)
    _ = model.flag_model
    return model


@pytest.fixture
def settings(tmp_path: Path, tiny_model_dir: Path) -> Settings:
    """Settings isolated from the developer's environment and `.env`."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        embedding_model=str(tiny_model_dir), embedding_device="cpu", query_max_tokens=64,
        index_dir=tmp_path / "index", docs_dir=SAMPLES_DIR, chunk_size=200, chunk_overlap=20,
        faiss_device="cpu", retrieval_mode="hybrid", openai_api_key=None,
    )


@pytest.fixture
def sample_docs(tmp_path: Path) -> Path:
    """A writable copy of the bundled sample corpus."""
    import shutil

    target = tmp_path / "docs"
    shutil.copytree(SAMPLES_DIR, target)
    return target


@pytest.fixture(scope="session")
def sample_index_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path,
                     embeddings: BGEM3Embeddings) -> Path:
    """The bundled samples indexed once per session (read-only for tests)."""
    from retrieval.indexer import Indexer

    index_dir = tmp_path_factory.mktemp("sample-index")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        embedding_model=str(tiny_model_dir), embedding_device="cpu", index_dir=index_dir,
        docs_dir=SAMPLES_DIR, chunk_size=200, chunk_overlap=20, faiss_device="cpu")
    summary = Indexer(settings, embeddings).run()
    assert summary.switched and not summary.failed
    return index_dir


# --- GPU marker: skipped with a visible reason where there is no GPU ---
def _gpu_skip_reason() -> str | None:
    import faiss
    import torch

    if not torch.cuda.is_available():
        return "needs an NVIDIA GPU: torch.cuda.is_available() is False on this machine"
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        return "needs faiss-gpu: this FAISS build has no GPU support (install faiss-gpu)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    reason = _gpu_skip_reason()
    if reason:
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=reason))


# --- a real redis-server (shared state of replicas, KOTAE_REDIS_URL) ---
from tests.redis_server import RedisServer, redis_server_binary  # noqa: E402


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running redis-server on a free port (`.url`, `.client()`, `.stop()`, `.restart()`);
    skipped, saying so, where redis-server is not installed."""
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("needs redis-server (Debian package redis-server; `make test` installs it)")
    server = RedisServer(binary, tmp_path / "redis").start()
    yield server
    server.stop()
