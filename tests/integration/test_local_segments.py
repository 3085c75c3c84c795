"""The local backend's segments on real FAISS and SQLite: copy-free versions, IVF with its
training reused, deletes that hide rows of shared segments, checks that catch a damaged file,
and pruning of the segments no version lists."""

from __future__ import annotations

import os
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

from retrieval.stores import FileRecord, ServedIndex
from retrieval.stores.base import IndexDamaged
from retrieval.stores.local import LocalVersions
from retrieval.stores.local.choice import DenseChoice
from retrieval.stores.local.plan import read_plan
from retrieval.stores.local.segments import CompactionPolicy

DIM = 16
PER_SOURCE = 4


def vectors_of(seed: int, n: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def add_source(store: object, source: str, seed: int) -> np.ndarray:
    vectors = vectors_of(seed, PER_SOURCE)
    ids = [f"{source}#{i}" for i in range(PER_SOURCE)]
    sparse = [{seed % 50 + 10: 1.0, 5: 0.25 + i / 10} for i in range(PER_SOURCE)]
    store.add(ids, [f"{source} text {i}" for i in range(PER_SOURCE)],  # type: ignore[attr-defined]
              [{"source": source}] * PER_SOURCE, vectors, sparse)
    store.record_file(FileRecord(source, f"h{seed}", 0.0, source, PER_SOURCE, 0.0))  # type: ignore[attr-defined]
    return vectors


def publish(versions: LocalVersions, edits: dict[str, int | None],
            base: str | None = None) -> str:
    """One version: each source re-added with vectors of its seed, or removed (None)."""
    build = versions.begin_build(DIM, base=base)
    for source, seed in edits.items():
        build.store.delete_source(source)
        if seed is not None:
            add_source(build.store, source, seed)
    build.publish({"version": build.version, "dim": DIM, "chunks": build.store.count,
                   "created_at": time.time()})  # prune orders versions by it
    versions.prune()
    return build.version


def mapped(array: np.ndarray) -> bool:
    """Whether `array` is a view of a memory-mapped file (not a copy read into memory)."""
    base = array
    while base is not None:
        if isinstance(base, np.memmap):
            return True
        base = getattr(base, "base", None)
    return False


def folder_files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def versions(tmp_path: Path) -> LocalVersions:
    return LocalVersions(tmp_path / "index", device="cpu",
                         compaction=CompactionPolicy(changed_fraction=0.5, max_segments=4))


def test_a_small_change_writes_a_small_segment_and_leaves_the_base_untouched(
        versions: LocalVersions) -> None:
    first = publish(versions, {f"s{i}.md": i for i in range(40)})
    base_segment = versions.layout.segments_dir / first
    before = folder_files(base_segment)
    second = publish(versions, {"s3.md": 1003, "new.md": 2000}, base=first)

    assert folder_files(base_segment) == before  # not rewritten, not even touched
    plan = read_plan(versions.layout.version_dir(second))
    assert [s.name for s in plan.segments] == [first, second]
    assert plan.segments[1].rows == 2 * PER_SOURCE and len(plan.deleted) == PER_SOURCE
    new_bytes = sum(p.stat().st_size for p in (versions.layout.segments_dir / second).iterdir())
    assert new_bytes < sum(p.stat().st_size for p in base_segment.iterdir())

    store = versions.open_version(second)
    assert store.count == 41 * PER_SOURCE
    assert set(store.files()) == {f"s{i}.md" for i in range(40)} | {"new.md"}
    # the edited file's new vectors are found, its old ones are gone
    _scores, rows = store.search_dense(vectors_of(1003, PER_SOURCE)[:1], 1)
    assert store.get_rows(rows[0].tolist())[int(rows[0][0])].chunk_id == "s3.md#0"
    _scores, rows = store.search_dense(vectors_of(3, PER_SOURCE)[:1], 3)
    assert all(c.chunk_id != "s3.md#0" for c in store.get_rows(rows[0].tolist()).values())
    old_rows = versions.open_version(first).rows_of(["s3.md"])
    assert not store.get_rows(old_rows.tolist()) and not len(set(store.rows_of(["s3.md"]))
                                                              & set(old_rows.tolist()))
    assert np.all(store.sparse_scores_of({13: 1.0}, old_rows) == 0.0)  # hidden rows score 0
    _top_scores, top_rows = store.search_sparse({13: 1.0}, 10)  # token of seed 3 and 1003
    assert set(top_rows.tolist()) == set(store.rows_of(["s3.md"]).tolist())
    # the version before still serves what it served
    assert versions.open_version(first).count == 40 * PER_SOURCE


def test_row_filters_and_lexical_scores_span_segments(versions: LocalVersions) -> None:
    first = publish(versions, {f"s{i}.md": i for i in range(10)})
    second = publish(versions, {"s2.md": None, "t.md": 77}, base=first)
    store = versions.open_version(second)
    visible = store.rows_of(["s1.md", "t.md"])
    _scores, rows = store.search_dense(vectors_of(77, PER_SOURCE)[:1], 50, rows=visible)
    found = rows[0][rows[0] >= 0]
    assert set(found.tolist()) == set(visible.tolist())
    query = {5: 1.0}
    exact = np.asarray([sum(query.get(t, 0.0) * w for t, w in store.sparse_of([r])[r].items())
                        for r in visible.tolist()])
    np.testing.assert_allclose(store.sparse_scores_of(query, visible), exact, rtol=1e-6)
    top_scores, top_rows = store.search_sparse(query, 3, rows=visible)
    assert len(top_rows) == 3 and set(top_rows.tolist()) <= set(visible.tolist())
    np.testing.assert_allclose(top_scores, np.sort(exact)[::-1][:3], rtol=1e-6)


def test_ivf_segments_find_what_flat_finds_and_compaction_reuses_the_centroids(
        tmp_path: Path) -> None:
    choice = DenseChoice(kind="ivf", nprobe=8, lists=8)  # nprobe = lists: exhaustive
    versions = LocalVersions(tmp_path / "ivf", device="cpu", dense=choice,
                             compaction=CompactionPolicy(changed_fraction=0.05))
    flat = LocalVersions(tmp_path / "flat", device="cpu", dense=DenseChoice(kind="flat"))
    edits = {f"s{i}.md": i for i in range(100)}
    first, reference = publish(versions, edits), publish(flat, edits)
    store, exact = versions.open_version(first), flat.open_version(reference)
    assert store.segments[0].is_ivf and not exact.segments[0].is_ivf
    queries = vectors_of(999, 5)
    np.testing.assert_array_equal(store.search_dense(queries, 10)[1],
                                  exact.search_dense(queries, 10)[1])
    np.testing.assert_allclose(store.vectors([5, 9]), exact.vectors([5, 9]), atol=1e-6)
    for sources in (["s1.md", "s2.md"], [f"s{i}.md" for i in range(0, 100, 2)]):
        # few visible rows: scored exactly; many: the IVF search with a selector
        visible = store.rows_of(sources)
        np.testing.assert_array_equal(store.search_dense(queries, 10, rows=visible)[1],
                                      exact.search_dense(queries, 10, rows=visible)[1])
    centroids = faiss.downcast_index(store.segments[0]._index.quantizer).reconstruct_n(0, 8)

    second = publish(versions, {f"s{i}.md": 500 + i for i in range(10)}, base=first)
    compacted = versions.open_version(second)
    assert len(compacted.segments) == 1 and compacted.count == 100 * PER_SOURCE
    reused = faiss.downcast_index(compacted.segments[0]._index.quantizer).reconstruct_n(0, 8)
    np.testing.assert_array_equal(reused, centroids)  # trained once, not again
    _scores, rows = compacted.search_dense(vectors_of(503, PER_SOURCE)[:1], 1)
    assert compacted.get_rows(rows[0].tolist())[int(rows[0][0])].chunk_id == "s3.md#0"


def test_segments_pile_up_to_the_limit_then_fold_into_one(versions: LocalVersions) -> None:
    version = publish(versions, {f"s{i}.md": i for i in range(50)})
    counts = []
    for step in range(4):
        version = publish(versions, {f"s{step}.md": 100 + step}, base=version)
        counts.append(len(read_plan(versions.layout.version_dir(version)).segments))
    assert counts == [2, 3, 4, 1]
    store = versions.open_version(version)
    assert store.count == 50 * PER_SOURCE and len(store.rows_of(["s3.md"])) == PER_SOURCE


def test_pruning_removes_the_segments_no_version_lists(versions: LocalVersions) -> None:
    first = publish(versions, {f"s{i}.md": i for i in range(10)})
    version = first
    for step in range(5):  # the 4th folds everything into one segment, the 5th adds one
        version = publish(versions, {f"s{step}.md": 100 + step}, base=version)
    kept = {p.name for p in versions.layout.versions_dir.iterdir()}
    listed = {s.name for v in kept for s in read_plan(versions.layout.version_dir(v)).segments}
    assert {p.name for p in versions.layout.segments_dir.iterdir()} == listed
    assert first not in listed


def test_a_crashed_build_leaves_the_old_version_serving_and_is_cleaned_up(
        versions: LocalVersions) -> None:
    first = publish(versions, {"a.md": 1})
    build = versions.begin_build(DIM, base=first)
    add_source(build.store, "b.md", 2)
    build.store.save()  # written, never published: a crash before the switch
    assert versions.current_version() == first
    assert ServedIndex(versions, check_interval_s=0).store().count == PER_SOURCE
    with versions.lock("test"):
        versions.remove_stale_builds()
    assert {p.name for p in versions.layout.segments_dir.iterdir()} == {first}


@pytest.mark.parametrize("damage", ["truncate", "flip"])
@pytest.mark.parametrize("target", ["segment sparse", "deleted list", "segment docstore"])
def test_a_damaged_file_is_named_and_the_previous_version_keeps_serving(
        versions: LocalVersions, damage: str, target: str) -> None:
    first = publish(versions, {f"s{i}.md": i for i in range(5)})
    served = ServedIndex(versions, check_interval_s=0)
    assert served.store().count == 5 * PER_SOURCE
    second = publish(versions, {"s1.md": None, "new.md": 9}, base=first)
    path = {"segment sparse": versions.layout.segments_dir / second / "sparse.npz",
            "deleted list": versions.layout.version_dir(second) / "deleted.npy",
            "segment docstore": versions.layout.segments_dir / second / "docstore.sqlite3",
            }[target]
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:-7]
    else:
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(IndexDamaged, match=str(path)):
        versions.open_version(second)
    assert served.store().count == 5 * PER_SOURCE  # still the first version
    with pytest.raises(IndexDamaged, match="--full"):
        versions.begin_build(DIM, base=second)
    assert ServedIndex(versions).versions.current_version() == second
    publish(versions, {f"s{i}.md": i for i in range(3)})  # --full: from nothing, it works
    assert served.store().count == 3 * PER_SOURCE


def test_a_process_starting_on_a_damaged_version_serves_the_previous_one(
        versions: LocalVersions, caplog: pytest.LogCaptureFixture) -> None:
    first = publish(versions, {f"s{i}.md": i for i in range(5)})
    second = publish(versions, {"s1.md": None, "new.md": 9}, base=first)
    path = versions.layout.segments_dir / second / "sparse.npz"
    path.write_bytes(path.read_bytes()[:-7])

    with caplog.at_level("ERROR"):
        served = ServedIndex(versions, check_interval_s=0)  # a bot starting now
        assert served.store().count == 5 * PER_SOURCE  # the first version, whole
    assert str(path) in caplog.text and first in caplog.text
    served.store()  # the damaged version is not retried on every search
    assert caplog.text.count("not served") == 1

    # with no older version to fall back on, the damage is said, never hidden
    path = versions.layout.segments_dir / first / "sparse.npz"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(IndexDamaged, match=r"sparse\.npz is damaged"):
        ServedIndex(versions).store()


def test_opening_maps_the_segment_instead_of_reading_it(versions: LocalVersions) -> None:
    first = publish(versions, {f"s{i}.md": i for i in range(20)})
    store = versions.open_version(first)
    matrix = store.segments[0]._sparse_matrix
    assert all(mapped(a) for a in (matrix.data, matrix.indices, matrix.indptr))
    sizes = versions.sizes(first)
    segment_dir = versions.layout.segments_dir / first
    on_disk = sum(p.stat().st_size for p in segment_dir.iterdir()) + sum(
        p.stat().st_size for p in versions.layout.version_dir(first).iterdir())
    assert sizes["disk_bytes"] == on_disk
    assert sizes["memory_bytes"] == (segment_dir / "dense.faiss").stat().st_size + (
        segment_dir / "sparse.npz").stat().st_size
    assert os.path.exists(segment_dir / "dense.faiss")


def test_small_segments_searched_with_numpy_match_faiss(
        versions: LocalVersions, monkeypatch: pytest.MonkeyPatch) -> None:
    from retrieval.stores.local import store as store_module

    first = publish(versions, {f"s{i}.md": i for i in range(30)})
    second = publish(versions, {"s4.md": None, "s7.md": 70}, base=first)
    queries = vectors_of(4242, 3)

    def searches() -> list[tuple[np.ndarray, np.ndarray]]:
        store = versions.open_version(second)
        visible = store.rows_of([f"s{i}.md" for i in range(0, 30, 3)])
        return [store.search_dense(queries, 7), store.search_dense(queries, 7, rows=visible),
                store.search_dense(queries, 200, rows=visible[:3]),
                store.search_dense(queries, 5, rows=visible[:0])]

    with_numpy = searches()
    monkeypatch.setattr(store_module, "_SMALL_FLAT", 0)  # every segment through FAISS
    with_faiss = searches()
    for (np_scores, np_ids), (f_scores, f_ids) in zip(with_numpy, with_faiss, strict=True):
        np.testing.assert_array_equal(np_ids, f_ids)
        found = f_ids >= 0
        np.testing.assert_allclose(np_scores[found], f_scores[found], rtol=1e-5)
