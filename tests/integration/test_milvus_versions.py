"""Atomic versions on Milvus (Milvus Lite 2.5, the real engine; over TCP where processes share
it): an incremental reindex inserts only the chunks of changed files; Ctrl-C, kill -9 or Milvus
going away mid-build leave the old version serving with nothing half-built visible, and the
next reindex succeeds; prune drops what only old versions saw; another model or dimension is
refused; Milvus unreachable at start is one line and exit 1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from retrieval.embeddings import BGEM3Embeddings
from retrieval.errors import KotaeError
from retrieval.indexer import Indexer, IndexProgress
from retrieval.service import KotaeService
from retrieval.settings import Settings
from retrieval.stores import ServedIndex, open_store_backend
from retrieval.stores.milvus import MilvusIncompatible, MilvusVersions
from tests.integration.milvus_fixtures import LiteServer, lite_config, lite_server, lite_versions

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def milvus_settings(settings: Settings, sample_docs: Path, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"store": "milvus", "docs_dir": sample_docs,
                                       "milvus_uri": str(tmp_path / "milvus" / "kotae.db")})


def milvus_of(settings: Settings) -> MilvusVersions:
    versions = open_store_backend(settings)
    assert isinstance(versions, MilvusVersions)
    return versions


def edit(docs: Path, name: str, extra: str) -> None:
    path = docs / name
    path.write_text(path.read_text("utf-8") + f"\n\n{extra}\n", encoding="utf-8")


def served_hits(settings: Settings, embeddings: BGEM3Embeddings) -> list[tuple[str, float]]:
    from retrieval.retriever import HybridRetriever

    found = HybridRetriever.from_settings(settings, ServedIndex(open_store_backend(settings)),
                                          embeddings).search("経費精算の締め切り", k=5)
    return [(hit.chunk_id, round(hit.score, 5)) for hit in found]


def test_an_incremental_reindex_inserts_only_the_changed_files_chunks_and_prune_drops_the_rest(
        milvus_settings: Settings, sample_docs: Path, embeddings: BGEM3Embeddings) -> None:
    first = Indexer(milvus_settings, embeddings).run()
    versions = milvus_of(milvus_settings)
    stored = versions.stored_rows()
    assert stored == {"chunks": first.chunks_total, "files": len(first.added)}
    served = versions.open_version(first.version)
    unchanged = [s for s in served.files() if not s.endswith("office-guide.txt")]
    guide = next(s for s in served.files() if s.endswith("office-guide.txt"))
    rows_before = served.rows_of(unchanged)

    edit(sample_docs, "office-guide.txt", "The printer on floor 3 is now on the left.")
    second = Indexer(milvus_settings, embeddings).run()
    assert second.switched and [Path(s).name for s in second.updated] == ["office-guide.txt"]
    changed_chunks = len(versions.open_version(second.version).chunks_of(guide))
    after = versions.stored_rows()
    # the new version's own rows are the changed file's chunks and its file record, no more
    assert after == {"chunks": stored["chunks"] + changed_chunks, "files": stored["files"] + 1}
    new = versions.open_version(second.version)
    np.testing.assert_array_equal(new.rows_of(unchanged), rows_before)  # shared, not copied
    assert new.count == second.chunks_total
    shown = KotaeService(milvus_settings, embeddings=embeddings).status()["index_size"]
    assert shown.startswith(f"{second.chunks_total} chunk rows in this version, "
                            f"{after['chunks']} stored in "), shown

    edit(sample_docs, "office-guide.txt", "And the coffee machine moved.")
    third = Indexer(milvus_settings, embeddings).run()
    kept = {key.removeprefix("version:") for key, _b in versions.meta_rows.listed("version")}
    assert kept == {second.version, third.version}
    seen = (versions.open_version(third.version).count
            + len(versions.open_version(second.version).chunks_of(guide)))
    assert versions.stored_rows()["chunks"] == seen  # what only the first version saw is gone


def test_ctrl_c_mid_build_leaves_the_old_version_serving_and_the_next_run_succeeds(
        milvus_settings: Settings, sample_docs: Path, embeddings: BGEM3Embeddings) -> None:
    first = Indexer(milvus_settings, embeddings).run()
    versions = milvus_of(milvus_settings)
    before, hits = versions.stored_rows(), served_hits(milvus_settings, embeddings)
    for name in ("office-guide.txt", "expense-ja.md", "oncall-runbook.md"):
        edit(sample_docs, name, f"An edit of {name} that Ctrl-C interrupts.")
    (sample_docs / "remote-work-ja.txt").unlink()

    def interrupt(progress: IndexProgress) -> None:
        if progress.phase == "embedding" and progress.files_done >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Indexer(milvus_settings, embeddings).run(progress=interrupt)
    assert versions.current_version() == first.version
    assert versions.stored_rows() == before and versions.open_builds() == []
    assert served_hits(milvus_settings, embeddings) == hits  # the deleted file still answers
    build = versions.begin_build(embeddings.dimension, base=first.version)
    assert build.store.count == first.chunks_total  # the deletes it made are undone too
    build.discard()

    summary = Indexer(milvus_settings, embeddings).run()
    assert summary.switched and len(summary.updated) == 3 and len(summary.removed) == 1


CRASHING_INDEXER = """
import os, sys, time
from retrieval.embeddings import BGEM3Embeddings
from retrieval.indexer import Indexer
from retrieval.settings import Settings

settings = Settings(_env_file=None, store="milvus", milvus_uri=sys.argv[1],
                    embedding_model=sys.argv[2], embedding_device="cpu", index_dir=sys.argv[3],
                    docs_dir=sys.argv[4], chunk_size=200, chunk_overlap=20)

def wait_to_be_killed(progress):
    if progress.phase == "embedding" and progress.files_done >= 2:
        print("mid-build", flush=True)
        time.sleep(600)

Indexer(settings, BGEM3Embeddings.from_settings(settings)).run(progress=wait_to_be_killed)
"""


@pytest.fixture
def served_lite(tmp_path: Path) -> Iterator[str]:
    with lite_server(tmp_path / "served" / "kotae.db") as server:
        yield server.uri


def test_kill_9_mid_build_on_a_shared_milvus_keeps_the_old_version_serving(
        milvus_settings: Settings, sample_docs: Path, embeddings: BGEM3Embeddings,
        served_lite: str, tmp_path: Path) -> None:
    """Two processes on one Milvus over TCP (the code path of a cluster)."""
    settings = milvus_settings.model_copy(update={"milvus_uri": served_lite})
    first = Indexer(settings, embeddings).run()
    versions = milvus_of(settings)
    served = ServedIndex(versions, check_interval_s=0)
    count, before, hits = served.store().count, versions.stored_rows(), served_hits(settings,
                                                                                    embeddings)
    for name in ("office-guide.txt", "expense-ja.md", "oncall-runbook.md", "onboarding-ja.md"):
        edit(sample_docs, name, f"An edit of {name} that kill -9 interrupts.")

    indexer = subprocess.Popen(
        [sys.executable, "-c", CRASHING_INDEXER, served_lite, settings.embedding_model,
         str(tmp_path / "other-index"), str(sample_docs)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"})
    try:
        assert indexer.stdout is not None
        line = indexer.stdout.readline()
        assert line.strip() == "mid-build", indexer.stderr.read() if indexer.stderr else ""
        assert versions.open_builds() and versions.stored_rows()["chunks"] > before["chunks"]
        os.kill(indexer.pid, signal.SIGKILL)
    finally:
        indexer.kill()
        indexer.wait(timeout=30)
    # what the killed build wrote is there, and no reader sees it
    assert versions.current_version() == first.version and served.store().count == count
    assert served_hits(settings, embeddings) == hits

    summary = Indexer(settings, embeddings).run()  # removes the stale build, then succeeds
    assert summary.switched and len(summary.updated) == 4
    assert versions.open_builds() == []
    assert served.store().count == summary.chunks_total and served.version == summary.version


def test_milvus_going_away_mid_reindex_leaves_the_served_version_untouched(
        milvus_settings: Settings, sample_docs: Path, embeddings: BGEM3Embeddings,
        tmp_path: Path) -> None:
    db = tmp_path / "flaky" / "kotae.db"
    with lite_server(db) as server:
        settings = milvus_settings.model_copy(update={"milvus_uri": server.uri})
        first = Indexer(settings, embeddings).run()
        before = milvus_of(settings).stored_rows()
    edit(sample_docs, "office-guide.txt", "An edit Milvus never receives.")
    with lite_server(db) as server:
        settings = milvus_settings.model_copy(update={"milvus_uri": server.uri})
        indexer = Indexer(settings, embeddings)
        assert isinstance(indexer.versions, MilvusVersions)
        indexer.versions.milvus.timeout_s = 3.0  # fail fast once the server is gone
        indexer.versions.milvus.read_timeout_s = 3.0

        def stop_milvus(progress: IndexProgress) -> None:
            if progress.phase == "embedding":
                server.stop()

        with pytest.raises(KotaeError, match="KOTAE_MILVUS_URI"):
            indexer.run(progress=stop_milvus)
    with lite_server(db) as server:
        settings = milvus_settings.model_copy(update={"milvus_uri": server.uri})
        versions = milvus_of(settings)
        assert versions.current_version() == first.version
        assert versions.open_version(first.version).count == first.chunks_total
        summary = Indexer(settings, embeddings).run()
        assert summary.switched and versions.open_builds() == []
        assert versions.stored_rows()["chunks"] > before["chunks"]


def test_collections_of_another_model_or_dimension_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "m" / "kotae.db"
    ours = lite_versions(db, "refuse", model="BAAI/bge-m3")
    build = ours.begin_build(8)
    build.store.add(["a#0"], ["a"], [{"source": "a"}], np.eye(1, 8, dtype=np.float32), [{1: 1.0}])
    build.publish({"dim": 8})
    other = MilvusVersions(lite_config(db, "refuse"), model="other/model",
                           lock_dir=tmp_path / "lock", milvus=ours.milvus)
    with pytest.raises(MilvusIncompatible, match=r"hold 8-d vectors of BAAI/bge-m3.*other/model"):
        other.begin_build(8)
    with pytest.raises(MilvusIncompatible, match="KOTAE_MILVUS_COLLECTION=refuse"):
        other.open_version(build.version)
    with pytest.raises(MilvusIncompatible, match=r"hold 8-d vectors.*embeds 1024-d"):
        ours.begin_build(1024)
    assert ours.open_version(build.version).count == 1  # nothing was mixed in


@pytest.mark.parametrize("command", [["index"], ["serve"]])
def test_milvus_unreachable_at_start_is_one_line_and_exit_1(command: list[str],
                                                            tmp_path: Path) -> None:
    from tests.integration.milvus_fixtures import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "KOTAE_STORE": "milvus", "KOTAE_MILVUS_URI": uri,
           "KOTAE_INDEX_DIR": str(tmp_path / "index"), "SLACK_BOT_TOKEN": "xoxb-test",
           "SLACK_SIGNING_SECRET": "secret", "KOTAE_PORT": str(free_port())}
    result = subprocess.run([sys.executable, "-m", "kotae", *command], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: Milvus is unreachable at KOTAE_MILVUS_URI=" + uri)


def test_a_replica_serves_a_version_another_process_published_within_a_second_or_two(
        served_lite: str, tmp_path: Path) -> None:
    """Readers poll the pointer row once a second; searches running meanwhile, on many
    threads, each see one whole version (the old one or the new one, never a mix)."""
    from concurrent.futures import ThreadPoolExecutor

    def versions_over_tcp() -> MilvusVersions:
        config = lite_config(served_lite, "replica")
        return MilvusVersions(config, model="m", lock_dir=tmp_path / "lock")

    writer, replica = versions_over_tcp(), ServedIndex(versions_over_tcp())
    rng = np.random.default_rng(0)

    def publish(count: int, base: str | None) -> str:
        build = writer.begin_build(8, base=base)
        vectors = rng.normal(size=(count, 8)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        sources = [f"{base or 'first'}-{i}.md" for i in range(count)]
        build.store.add([f"{s}#0" for s in sources], sources, [{"source": s} for s in sources],
                        vectors, [{1: 1.0}] * count)
        build.publish({"chunks": build.store.count})
        return build.version

    first = publish(30, None)
    assert replica.store().count == 30

    def search(_i: int) -> int:
        store = replica.store()
        _scores, rows = store.search_dense(np.ones((1, 8), np.float32), 100)
        found = int((rows[0] >= 0).sum())
        assert found == store.count  # a whole version: every chunk of it, nothing else
        return found

    with ThreadPoolExecutor(8) as pool:
        before = list(pool.map(search, range(40)))
        second = publish(20, first)
        published_at = time.monotonic()
        while replica.store().count != 50:
            assert time.monotonic() - published_at < 2.5, "the replica missed the switch"
            time.sleep(0.05)
        after = list(pool.map(search, range(40)))
    assert set(before) == {30} and set(after) == {50} and replica.version == second


def test_a_milvus_lite_file_another_process_holds_is_refused_naming_the_uri(
        tmp_path: Path) -> None:
    db = tmp_path / "held" / "kotae.db"
    holder = lite_versions(db, "held")  # this process opens the file (its Lite server)
    assert holder.current_version() is None
    probe = ("from tests.integration.milvus_fixtures import lite_versions\n"
             "from retrieval.stores.milvus import MilvusUnavailable\n"
             "try:\n"
             f"    lite_versions({str(db)!r}, 'held')\n"
             "except MilvusUnavailable as error:\n"
             "    print(error)\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.startswith(f"Milvus Lite cannot open KOTAE_MILVUS_URI={db}: "), (
        result.stdout + result.stderr)
    assert "opened by one process at a time" in result.stdout


def test_a_manifest_larger_than_a_milvus_varchar_round_trips(tmp_path: Path) -> None:
    """The manifest lists every file that failed: thousands of them outgrow one 64 KiB
    VARCHAR, so a value is split over rows (and a shorter one leaves no stale piece)."""
    versions = lite_versions(tmp_path / "big.db", "big")
    failed = {f"/docs/ファイル-{i:05d}.pdf": {"hash": f"{i:064x}", "reason": "encrypted PDF"}
              for i in range(3000)}
    build = versions.begin_build(8)
    build.publish({"dim": 8, "failed": failed})
    assert versions.manifest(build.version)["failed"] == failed
    versions.meta_rows.put("probe", "test", 0, {"failed": failed})
    versions.meta_rows.put("probe", "test", 0, {"small": True})
    assert versions.meta_rows.get("probe") == {"small": True}
    assert versions.milvus.get("meta", ["probe#1"], ["key"]) == []


def test_a_first_build_discarded_on_new_collections_leaves_no_open_build(
        tmp_path: Path) -> None:
    """Milvus Lite fails a query that returns a sparse vector on a collection without rows;
    the clean-up must not depend on one (the build would stay open until the next run)."""
    versions = lite_versions(tmp_path / "fresh.db", "fresh")
    build = versions.begin_build(8)
    assert versions.open_builds() == [build.store.build]
    build.discard()
    assert versions.open_builds() == [] and versions.stored_rows() == {"chunks": 0, "files": 0}


def test_milvus_going_away_mid_answer_fails_the_question_in_bounded_time_then_recovers(
        milvus_settings: Settings, embeddings: BGEM3Embeddings, tmp_path: Path) -> None:
    """A question while Milvus is down raises a KotaeError naming KOTAE_MILVUS_URI within the
    read timeout (the bot turns it into its apology); once Milvus is back on the same address,
    the same replica answers again without a restart."""
    from retrieval.retriever import HybridRetriever

    db = tmp_path / "answers" / "kotae.db"
    server = LiteServer(db)
    try:
        settings = milvus_settings.model_copy(update={"milvus_uri": server.uri})
        Indexer(settings, embeddings).run()
        versions = milvus_of(settings)
        versions.milvus.read_timeout_s = 2.0
        retriever = HybridRetriever.from_settings(
            settings, ServedIndex(versions, check_interval_s=0), embeddings)
        answered = [hit.chunk_id for hit in retriever.search("経費精算の締め切り")]
        assert answered
        server.stop()
        started = time.monotonic()
        with pytest.raises(KotaeError, match="KOTAE_MILVUS_URI=" + server.uri):
            retriever.search("経費精算の締め切り")
        assert time.monotonic() - started < 15
        server = LiteServer(db, server.port)
        deadline = time.monotonic() + 15  # gRPC reconnects with a backoff of about a second
        while True:
            try:
                again = [hit.chunk_id for hit in retriever.search("経費精算の締め切り")]
                break
            except KotaeError:
                assert time.monotonic() < deadline, "no answer after Milvus came back"
                time.sleep(0.5)
        assert again == answered
    finally:
        server.stop()


def test_one_index_reached_by_two_uris_has_one_lock_scope(served_lite: str,
                                                          tmp_path: Path) -> None:
    """`lock_scope` names the index by an id stored in Milvus, not by the URI as spelled, so a
    lock keyed by it is one lock however a replica or an operator reaches the server."""
    def versions_at(uri: str) -> MilvusVersions:
        return MilvusVersions(lite_config(uri, "scope"), model="m", lock_dir=tmp_path / "l")

    by_ip = versions_at(served_lite)
    by_name = versions_at(served_lite.replace("127.0.0.1", "localhost"))
    assert by_ip.location != by_name.location
    scope = by_name.lock_scope  # before any build: the first to ask makes the id
    assert scope.startswith("milvus index ") and by_ip.lock_scope == scope
    by_ip.begin_build(8).publish({})
    assert by_name.lock_scope == scope == versions_at(served_lite).lock_scope
    other = MilvusVersions(lite_config(served_lite, "another"), model="m",
                           lock_dir=tmp_path / "l")
    assert other.lock_scope != scope  # another collection prefix: another index
