"""The reindex lock in a real Redis: one holder, named to the others; renewed while held;
freed by expiry when its holder crashes; released only by its holder; a publish refused once
the lock is lost or Redis is gone."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from retrieval.errors import IndexLocked
from retrieval.redis_state import (
    IndexLockLost,
    RedisIndexLock,
    RedisUnavailable,
    SharedLockVersions,
    with_shared_lock,
)
from retrieval.settings import Settings
from retrieval.stores import open_store_backend
from retrieval.stores.local import LocalVersions
from tests.helpers import wait_until
from tests.redis_server import RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY = "kotae-test:index-lock:/srv/index"


def make_lock(server: RedisServer, ttl_s: float = 30.0) -> RedisIndexLock:
    return RedisIndexLock(server.url, key=KEY, ttl_s=ttl_s, location="/srv/index")


def test_a_second_indexer_is_refused_and_told_who_holds_the_lock(
        redis_server: RedisServer) -> None:
    first, second = make_lock(redis_server), make_lock(redis_server)
    with first.hold("Slack user UADMIN"):
        with pytest.raises(IndexLocked) as refused, second.hold("cli"):
            pass
        assert "Slack user UADMIN" in str(refused.value)
        assert "/srv/index" in str(refused.value) and "Redis" in str(refused.value)
    with second.hold("cli"):  # released: the next one gets it
        assert second.holder()["holder"] == "cli"
    assert redis_server.client().get(KEY) is None


def test_the_lock_is_renewed_while_held(redis_server: RedisServer) -> None:
    lock = make_lock(redis_server, ttl_s=0.6)
    with lock.hold("a long reindex") as held:
        time.sleep(1.5)  # well past the expiry: only the renewals keep it
        with pytest.raises(IndexLocked), make_lock(redis_server).hold("cli"):
            pass
        held.confirm()
        assert 0 < redis_server.client().pttl(KEY) <= 600


def test_a_crashed_holder_frees_the_lock_after_its_expiry(redis_server: RedisServer) -> None:
    script = (
        "import time\n"
        "from retrieval.redis_state import RedisIndexLock\n"
        f"lock = RedisIndexLock({redis_server.url!r}, key={KEY!r}, ttl_s=1.5, "
        "location='/srv/index')\n"
        "with lock.hold('an indexer that crashes'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(120)\n")
    crashing = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT,
                                stdout=subprocess.PIPE, text=True)
    try:
        assert crashing.stdout is not None and crashing.stdout.readline().strip() == "held"
    finally:
        crashing.kill()  # kill -9: no release, no more renewals
        crashing.wait()
    lock = make_lock(redis_server)
    with pytest.raises(IndexLocked, match="an indexer that crashes"), lock.hold("next"):
        pass
    started = time.monotonic()

    def acquired() -> bool:
        try:
            with lock.hold("next"):
                return True
        except IndexLocked:
            return False

    wait_until(acquired, timeout=5, interval=0.1)
    assert time.monotonic() - started < 2.5


def test_only_the_holder_releases_and_a_lost_lock_refuses_to_publish(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    client = redis_server.client()
    with make_lock(redis_server).hold("first") as first:
        client.delete(KEY)  # as if it had expired while its holder stalled
        second = make_lock(redis_server)
        with second.hold("second"):
            with pytest.raises(IndexLockLost, match="nothing was published"):
                first.confirm()
            with caplog.at_level(logging.WARNING):
                first.release()  # the first holder leaves: the second's lock stays
            assert second.holder()["holder"] == "second"
            assert "expired before this indexer released it" in caplog.text
    assert client.get(KEY) is None  # the second released its own


def test_redis_unreachable_refuses_the_lock_in_one_line_without_the_password(
        redis_server: RedisServer, tmp_path: Path) -> None:
    redis_server.password = "s3cret-pw"
    redis_server.restart()
    lock = RedisIndexLock(redis_server.url, key=KEY, ttl_s=5, location="/srv/index")
    redis_server.stop()
    with pytest.raises(RedisUnavailable) as refused, lock.hold("cli"):
        pass
    message = str(refused.value)
    assert "KOTAE_REDIS_URL" in message and "nothing was indexed" in message
    assert "s3cret-pw" not in message and "redis://:***@127.0.0.1" in message
    assert "\n" not in message


def test_a_build_is_not_published_when_redis_goes_away_before_the_switch(
        redis_server: RedisServer, tmp_path: Path) -> None:
    settings = Settings(_env_file=None, index_dir=tmp_path / "index",  # type: ignore[call-arg]
                        redis_url=redis_server.url, redis_prefix="kotae-test:",
                        redis_lock_ttl_s=5)
    versions = open_store_backend(settings)
    assert isinstance(versions, SharedLockVersions)
    assert isinstance(versions.backend, LocalVersions)
    with versions.lock("cli"):
        build = versions.begin_build(4)
        build.store.add(["c1"], ["text"], [{"source": "a.md"}],
                        np.ones((1, 4), dtype=np.float32), [{1: 0.5}])
        redis_server.kill()
        with pytest.raises(RedisUnavailable, match="nothing was published"):
            build.publish({"files": 1, "chunks": 1})
        build.discard()
    assert versions.current_version() is None  # nothing half-switched
    redis_server.start()
    with versions.lock("cli"):  # Redis is back: the next reindex runs
        build = versions.begin_build(4)
        build.store.add(["c1"], ["text"], [{"source": "a.md"}],
                        np.ones((1, 4), dtype=np.float32), [{1: 0.5}])
        build.publish({"files": 1, "chunks": 1})
    assert versions.current_version() == build.version


def test_an_indexer_without_redis_on_the_same_folder_still_counts(
        redis_server: RedisServer, tmp_path: Path) -> None:
    """`kotae index` run without KOTAE_REDIS_URL beside the replicas: the backend's own lock
    (a file lock) is taken after Redis's, so neither indexer runs over the other."""
    settings = Settings(_env_file=None, index_dir=tmp_path / "index",  # type: ignore[call-arg]
                        redis_url=redis_server.url, redis_prefix="kotae-test:")
    shared = open_store_backend(settings)
    other = LocalVersions(tmp_path / "index")
    with other.lock("kotae index without Redis"), \
            pytest.raises(IndexLocked, match="kotae index without Redis"), shared.lock("bot"):
        pass
    assert redis_server.client().keys("kotae-test:index-lock:*") == []  # Redis's released
    with shared.lock("bot"), pytest.raises(IndexLocked, match="bot"), \
            other.lock("kotae index without Redis"):
        pass


def test_without_a_redis_url_the_backend_keeps_its_own_lock(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, index_dir=tmp_path / "index")  # type: ignore[call-arg]
    assert isinstance(open_store_backend(settings), LocalVersions)
    backend = LocalVersions(tmp_path / "index")
    assert with_shared_lock(backend, settings) is backend


def test_a_local_index_is_locked_per_machine_and_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same relative path from another working directory is the same folder; the same
    path on another machine is another index (its replica refreshes its own)."""
    import socket

    from retrieval.redis_state.lock import scope

    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    relative = scope(LocalVersions(Path("../index")))
    monkeypatch.chdir(REPO_ROOT)
    assert relative == scope(LocalVersions(tmp_path / "index"))
    assert relative == f"{socket.gethostname()}:{(tmp_path / 'index').resolve()}"


def test_the_backend_s_extras_stay_visible_through_the_shared_lock(
        redis_server: RedisServer, sample_index_dir: Path, tiny_model_dir: Path) -> None:
    from retrieval.service import KotaeService

    settings = Settings(_env_file=None, index_dir=sample_index_dir,  # type: ignore[call-arg]
                        embedding_model=str(tiny_model_dir), redis_url=redis_server.url)
    status = KotaeService(settings).status()
    assert isinstance(KotaeService(settings).index.versions, SharedLockVersions)
    assert status["index_size"].endswith("segment(s)"), status["index_size"]
