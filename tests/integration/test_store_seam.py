"""The store seam: each backend (local, and milvus on a real Milvus Lite) behind the protocols of
retrieval.stores.base, the backend registry, the served version following a switch, the old
import paths, and the versions side loading no FAISS (`kotae status` relies on it)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval.errors import IndexLocked, IndexMissing
from retrieval.settings import Settings
from retrieval.stores import (
    ChunkReader,
    ChunkStore,
    FileRecord,
    IndexBuild,
    IndexVersions,
    ServedIndex,
    open_store_backend,
)
from retrieval.stores.local import BUILDING_PREFIX, LocalVersions
from retrieval.stores.milvus import MilvusVersions
from tests.integration.milvus_fixtures import emptied, lite_versions

DIM = 8
REPO = Path(__file__).resolve().parents[2]


def unit_vectors(n: int) -> np.ndarray:
    vectors = np.random.default_rng(n).normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def publish(versions: IndexVersions, sources: list[str], base: str | None = None,
            remove: tuple[str, ...] = ()) -> str:
    """One version the way the Indexer makes one: begin, edit, publish, prune."""
    build = versions.begin_build(DIM, base=base)
    for source in remove:
        build.store.delete_source(source)
    if sources:
        build.store.add([f"{s}#0" for s in sources], [f"text of {s}" for s in sources],
                        [{"source": s} for s in sources], unit_vectors(len(sources)),
                        [{1: 1.0, 7: 0.5}] * len(sources))
    for source in sources:
        build.store.record_file(FileRecord(source, f"hash-{source}", 0.0, source, 1, 0.0))
    build.publish({"version": build.version, "dim": DIM, "chunks": build.store.count})
    versions.prune()
    return build.version


@pytest.fixture(scope="module")
def milvus_versions(tmp_path_factory: pytest.TempPathFactory) -> MilvusVersions:
    """One Milvus Lite file and collections for the module; each test empties them."""
    versions = lite_versions(tmp_path_factory.mktemp("milvus") / "seam.db", "seam")
    versions.begin_build(DIM).discard()  # creates the collections once
    return versions


@pytest.fixture
def local_versions(tmp_path: Path) -> LocalVersions:
    return LocalVersions(tmp_path / "index", device="cpu")


@pytest.fixture(params=["local", "milvus"])
def versions(request: pytest.FixtureRequest, tmp_path: Path) -> IndexVersions:
    if request.param == "local":
        return LocalVersions(tmp_path / "index", device="cpu")
    return emptied(request.getfixturevalue("milvus_versions"))


def unfinished_builds(versions: IndexVersions) -> list[object]:
    """What a build left behind that no reader may see."""
    if isinstance(versions, LocalVersions):
        return list(versions.layout.versions_dir.glob(f"{BUILDING_PREFIX}*"))
    assert isinstance(versions, MilvusVersions)
    current = versions.current_version()
    seen = versions.open_version(current).count if current else 0
    stored = versions.stored_rows()["chunks"]
    return [*versions.open_builds(), *(["unseen rows"] if stored != seen else [])]


def kept_versions(versions: IndexVersions) -> list[str]:
    if isinstance(versions, LocalVersions):
        return [p.name for p in versions.layout.versions_dir.iterdir()]
    assert isinstance(versions, MilvusVersions)
    return [key.removeprefix("version:") for key, _b in versions.meta_rows.listed("version")]


def test_each_backend_honours_the_protocols(versions: IndexVersions) -> None:
    assert isinstance(versions, IndexVersions)
    build = versions.begin_build(DIM)
    assert isinstance(build, IndexBuild) and isinstance(build.store, ChunkStore)
    build.discard()
    served = versions.open_version(publish(versions, ["a.md"]))
    assert isinstance(served, ChunkReader) and served.count == 1


def test_open_store_backend_picks_the_backend_by_name(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, index_dir=tmp_path / "index",  # type: ignore[call-arg]
                        faiss_device="cpu")
    versions = open_store_backend(settings)
    assert isinstance(versions, LocalVersions)
    assert versions.location == str(tmp_path / "index") and versions.device == "cpu"
    with pytest.raises(ValueError, match="unknown index backend 'nosuch'; known: local, milvus"):
        open_store_backend(settings, "nosuch")


def test_kotae_store_milvus_opens_milvus_lite_at_the_uri(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, index_dir=tmp_path / "index",  # type: ignore[call-arg]
                        store="milvus", milvus_uri=str(tmp_path / "m" / "kotae.db"),
                        milvus_collection="picked")
    versions = open_store_backend(settings)
    assert isinstance(versions, MilvusVersions)
    assert versions.location == f"milvus {tmp_path / 'm' / 'kotae.db'} db=default collection=picked"
    assert versions.current_version() is None  # nothing built: no collection created either
    assert not versions.milvus.has("chunks")


def test_a_build_from_a_version_starts_with_its_chunks_and_leaves_it_as_it_was(
        versions: IndexVersions) -> None:
    first = publish(versions, ["a.md", "b.md"])
    build = versions.begin_build(DIM, base=first)
    assert build.store.count == 2 and set(build.store.files()) == {"a.md", "b.md"}
    build.discard()
    second = publish(versions, ["c.md"], base=first, remove=("a.md",))
    assert versions.current_version() == second
    assert set(versions.file_records(second)) == {"b.md", "c.md"}
    assert set(versions.file_records(first)) == {"a.md", "b.md"}  # the one before, untouched
    assert versions.manifest(second)["chunks"] == 2


def test_a_discarded_build_leaves_nothing_and_the_served_version_serves(
        versions: IndexVersions) -> None:
    first = publish(versions, ["a.md"])
    served = ServedIndex(versions, check_interval_s=0)
    build = versions.begin_build(DIM, base=first)
    build.store.delete_source("a.md")
    build.discard()
    assert versions.current_version() == first and served.store().count == 1
    assert not unfinished_builds(versions)


def test_prune_keeps_the_served_version_and_one_before_it(versions: IndexVersions) -> None:
    made = [publish(versions, [f"{i}.md"]) for i in range(4)]
    kept = kept_versions(versions)
    assert len(kept) == 2 and made[-1] in kept
    assert versions.current_version() == made[-1]


def test_the_served_index_follows_a_switch(versions: IndexVersions) -> None:
    served = ServedIndex(versions, check_interval_s=0)
    with pytest.raises(IndexMissing, match=f"No index found in {versions.location}"):
        served.store()
    assert served.manifest() is None
    first = publish(versions, ["a.md"])
    assert served.store().count == 1 and served.version == first
    second = publish(versions, ["b.md", "c.md"], base=first)
    assert served.store().count == 3
    manifest = served.manifest()
    assert manifest is not None and manifest["version"] == second


def test_the_lock_admits_one_indexer_and_names_the_holder(versions: IndexVersions) -> None:
    with versions.lock("U123 via Slack"), pytest.raises(IndexLocked, match="U123 via Slack"), \
            versions.lock("cli"):
        pass
    with versions.lock("cli"):  # released
        pass


def test_the_old_import_paths_name_the_same_objects() -> None:
    import retrieval.store as old_store
    import retrieval.versions as old_versions
    from retrieval.stores import local
    from retrieval.stores.base import StoredChunk
    from retrieval.stores.local import store

    assert old_store.HybridStore is store.HybridStore
    assert old_store.faiss_has_gpu is store.faiss_has_gpu
    assert old_store.FileRecord is FileRecord and old_store.StoredChunk is StoredChunk
    assert old_store.read_file_records is local.read_file_records
    assert (old_store.DENSE_FILE, old_store.SPARSE_FILE, old_store.DOCSTORE_FILE) == (
        "dense.faiss", "sparse.npz", "docstore.sqlite3")
    assert old_versions.IndexLayout is local.IndexLayout
    assert old_versions.LiveIndex is local.LiveIndex
    assert issubclass(old_versions.LiveIndex, ServedIndex)


def test_reading_versions_imports_no_faiss_until_one_is_opened(
        local_versions: LocalVersions) -> None:
    versions = local_versions
    publish(versions, ["a.md"])
    probe = (
        "import sys\n"
        "import retrieval.versions, retrieval.service\n"
        "from retrieval.stores import ServedIndex\n"
        "from retrieval.stores.local import LocalVersions\n"
        f"versions = LocalVersions({str(versions.location)!r}, device='cpu')\n"
        "served = ServedIndex(versions)\n"
        "version = served.version\n"
        "print(served.manifest()['chunks'], sorted(versions.file_records(version)),\n"
        "      'faiss' in sys.modules)\n"
        "served.store()\n"
        "print('faiss' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                            text=True, timeout=60, check=True)
    assert result.stdout.splitlines() == ["1 ['a.md'] False", "True"]


@pytest.mark.parametrize("module", ["indexer", "retriever", "service", "vectorstore"])
def test_callers_import_no_backend_at_module_level(module: str) -> None:
    """Callers depend on the protocols: a backend is reached through retrieval.stores only."""
    tree = ast.parse((REPO / "retrieval" / f"{module}.py").read_text("utf-8"))
    imported = {node.module for node in tree.body
                if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in tree.body if isinstance(node, ast.Import)
                 for alias in node.names}
    backends = {name for name in imported if name in {"retrieval.store", "retrieval.versions"}
                or name.startswith("retrieval.stores.") or name == "faiss"}
    assert not backends


def test_prune_keeps_the_newest_previous_version_even_within_one_second(
        local_versions: LocalVersions) -> None:
    """Version names carry a one-second timestamp and a random suffix: within one second the
    suffix must not decide which previous version survives."""
    layout = local_versions.layout
    versions = local_versions
    names = ["v20260101T000000-ffffff", "v20260101T000000-aaaaaa", "v20260101T000000-000000"]
    for created_at, name in enumerate(names, start=1):  # made in this order
        build_dir = layout.versions_dir / f"{BUILDING_PREFIX}{name}"
        build_dir.mkdir(parents=True)
        layout.publish(name, build_dir, {"version": name, "dim": DIM,
                                         "created_at": 1000.0 + created_at})
    assert versions.current_version() == names[-1]
    assert sorted(p.name for p in layout.versions_dir.iterdir()) == sorted(names[1:])


def test_a_search_among_rows_returns_the_top_k_of_those_rows(versions: IndexVersions) -> None:
    """Exhaustive scores say what the top k among given rows is: a few rows, most rows, and
    rows that all rank low (a backend that searches the whole version and keeps the given rows
    must dig deep enough; Milvus does past 2,000 rows)."""
    n, k = 3000, 10
    rng = np.random.default_rng(7)
    dense = rng.normal(size=(n, DIM)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    sparse = [{int(t): float(w) for t, w in zip(rng.choice(60, 5, replace=False),
                                               rng.uniform(0.1, 1.0, 5), strict=True)}
              for _ in range(n)]
    build = versions.begin_build(DIM)
    ids = build.store.add([f"c{i}" for i in range(n)], [f"text {i}" for i in range(n)],
                          [{"source": f"s{i // 10}.md"} for i in range(n)], dense, sparse)
    build.publish({"version": build.version, "dim": DIM, "chunks": n})
    store = versions.open_version(build.version)
    row_of = np.asarray(ids, np.int64)
    query = dense[0] + 0.5 * rng.normal(size=DIM).astype(np.float32)
    lexical = {1: 0.7, 2: 0.4, 30: 0.9}
    true_dense = dense @ query
    true_sparse = np.asarray([sum(w * s.get(t, 0.0) for t, w in lexical.items())
                              for s in sparse])
    low = np.argsort(true_dense)[: 2100]
    for picked in (rng.choice(n, 30, replace=False), rng.choice(n, 2500, replace=False), low):
        rows = np.sort(row_of[picked])
        scores, found = store.search_dense(query[None, :], k, rows=rows)
        best = picked[np.argsort(-true_dense[picked])[:k]]
        assert sorted(found[0].tolist()) == sorted(row_of[best].tolist())
        np.testing.assert_allclose(np.sort(scores[0]), np.sort(true_dense[best]), atol=1e-5)
        lexical_scores, lexical_rows = store.search_sparse(lexical, k, rows=rows)
        positive = picked[true_sparse[picked] > 0]
        best = positive[np.argsort(-true_sparse[positive], kind="stable")[:k]]
        assert sorted(lexical_rows.tolist()) == sorted(row_of[best].tolist())
        np.testing.assert_allclose(lexical_scores, np.sort(true_sparse[best])[::-1], atol=1e-5)


def test_a_build_takes_back_what_it_added_itself(versions: IndexVersions) -> None:
    """Within one build (from nothing, then from a version): a file added and recorded, then
    deleted, or replaced by id, leaves no trace in the published version."""
    build = versions.begin_build(DIM)
    build.store.add(["a#0", "b#0"], ["text a", "text b"], [{"source": "a.md"}, {"source": "b.md"}],
                    unit_vectors(2), [{1: 1.0}, {2: 1.0}])
    for source in ("a.md", "b.md"):
        build.store.record_file(FileRecord(source, f"hash-{source}", 0.0, source, 1, 0.0))
    assert build.store.delete_source("a.md") == 1 and build.store.delete_source("zz.md") == 0
    build.store.add(["b#0"], ["text b again"], [{"source": "b.md"}], unit_vectors(1),
                    [{2: 2.0}])
    assert build.store.count == 1 and set(build.store.files()) == {"b.md"}
    build.publish({"version": build.version, "dim": DIM, "chunks": 1})
    served = versions.open_version(build.version)
    assert [c.text for c in served.get_by_chunk_ids(["a#0", "b#0"])] == ["text b again"]
    assert set(served.files()) == {"b.md"} and served.count == 1
    second = versions.begin_build(DIM, base=build.version)
    second.store.record_file(FileRecord("c.md", "hash-c", 0.0, "c.md", 0, 0.0))
    assert second.store.delete_source("c.md") == 0 and set(second.store.files()) == {"b.md"}
    second.discard()
