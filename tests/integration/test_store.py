"""HybridStore on real FAISS (CPU) and SQLite: cosine scores, sync of vectors and rows, disk."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from retrieval.stores.local import DENSE_FILE, SPARSE_FILE
from retrieval.stores.local.store import HybridStore

DIM = 16


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def add_chunks(store: HybridStore, ids: list[str], vectors: np.ndarray,
               source: str = "doc.md") -> list[int]:
    sparse = [{i + 1: 1.0, 100: 0.5} for i in range(len(ids))]
    metas = [{"source": source, "title": f"title {cid}"} for cid in ids]
    return store.add(ids, [f"text {cid}" for cid in ids], metas, vectors, sparse)


def test_dense_scores_are_cosine_similarities(tmp_path: Path) -> None:
    store = HybridStore(tmp_path, DIM, device="cpu")
    vectors = unit_vectors(20)
    rows = add_chunks(store, [f"c{i}" for i in range(20)], vectors)
    query = vectors[3] * 0.8 + vectors[7] * 0.2
    query /= np.linalg.norm(query)
    scores, found = store.search_dense(query[None, :], 5)
    expected = vectors @ query
    assert found[0][0] == rows[3]
    for score, row in zip(scores[0], found[0], strict=True):
        assert score == pytest.approx(expected[rows.index(int(row))], abs=1e-5)
    assert list(scores[0]) == sorted(scores[0], reverse=True)  # higher means more similar


def test_duplicate_chunk_id_replaces_instead_of_desyncing(tmp_path: Path) -> None:
    store = HybridStore(tmp_path, DIM, device="cpu")
    vectors = unit_vectors(3)
    add_chunks(store, ["a", "b", "c"], vectors)
    new_vectors = unit_vectors(1, seed=9)
    add_chunks(store, ["b"], new_vectors)
    assert store.count == 3
    scores, rows = store.search_dense(new_vectors, 1)
    assert store.get_rows(list(rows[0]))[int(rows[0][0])].chunk_id == "b"
    assert scores[0][0] == pytest.approx(1.0, abs=1e-5)
    db_rows = store._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    assert db_rows == store.count


def test_failed_add_leaves_store_unchanged(tmp_path: Path) -> None:
    store = HybridStore(tmp_path, DIM, device="cpu")
    add_chunks(store, ["a"], unit_vectors(1))
    with pytest.raises(ValueError):
        store.add(["x", "y"], ["t", "t"], [{"source": "s"}] * 2, unit_vectors(1), [{}, {}])
    with pytest.raises(AssertionError):
        bad_vectors = np.ones((1, DIM + 3), np.float32)  # wrong dimension: FAISS refuses
        store.add(["z"], ["t"], [{"source": "s"}], bad_vectors, [{1: 1.0}])
    assert store.count == 1
    assert store._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == 1


def test_a_failed_replacing_add_keeps_the_replaced_vectors(tmp_path: Path) -> None:
    store = HybridStore(tmp_path, DIM, device="cpu")
    vectors = unit_vectors(2)
    add_chunks(store, ["a", "b"], vectors)
    with pytest.raises(AssertionError):  # FAISS refuses the wrong dimension
        store.add(["a"], ["t"], [{"source": "doc.md"}], np.ones((1, DIM + 3), np.float32),
                  [{1: 1.0}])
    scores, rows = store.search_dense(vectors[:1], 1)  # "a" is still found by its vector
    assert store.get_rows(list(rows[0]))[int(rows[0][0])].chunk_id == "a"
    assert scores[0][0] == pytest.approx(1.0, abs=1e-5)
    assert store.count == 2 == store._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]


def test_delete_source_removes_vectors_rows_and_sparse(tmp_path: Path) -> None:
    store = HybridStore(tmp_path, DIM, device="cpu")
    add_chunks(store, ["a1", "a2"], unit_vectors(2), source="a.md")
    add_chunks(store, ["b1"], unit_vectors(1, seed=3), source="b.md")
    assert store.delete_source("a.md") == 2
    assert store.count == 1
    scores, rows = store.search_sparse({100: 1.0}, 10)
    assert len(rows) == 1 and scores[0] == pytest.approx(0.5)


def test_sparse_scores_are_lexical_dot_products(tmp_path: Path) -> None:
    store = HybridStore(tmp_path, DIM, device="cpu")
    rows = store.add(["a", "b"], ["x", "y"], [{"source": "s"}] * 2, unit_vectors(2),
                     [{5: 0.5, 7: 2.0}, {7: 1.0, 9: 3.0}])
    query = {7: 0.5, 9: 1.0, 12345: 9.0}
    scores, row_ids = store.search_sparse(query, 10)
    by_row = dict(zip(row_ids.tolist(), scores.tolist(), strict=True))
    assert by_row[rows[0]] == pytest.approx(2.0 * 0.5)
    assert by_row[rows[1]] == pytest.approx(1.0 * 0.5 + 3.0 * 1.0)
    assert row_ids.tolist() == [rows[1], rows[0]]  # best first
    # the same exact scores on demand, in the order asked; unknown rows score 0.0
    np.testing.assert_allclose(store.sparse_scores_of(query, np.asarray([rows[1], 999, rows[0]])),
                               [1.0 * 0.5 + 3.0 * 1.0, 0.0, 2.0 * 0.5])


def test_persistence_round_trip_without_pickle(tmp_path: Path) -> None:
    store = HybridStore(tmp_path, DIM, device="cpu")
    vectors = unit_vectors(5)
    add_chunks(store, [f"c{i}" for i in range(5)], vectors)
    store.save()
    store.close()
    with zipfile.ZipFile(tmp_path / SPARSE_FILE) as archive:  # plain arrays, no object pickles
        assert all(name.endswith(".npy") for name in archive.namelist())
    reopened = HybridStore(tmp_path, DIM, device="cpu", read_only=True)
    assert reopened.count == 5 and (tmp_path / DENSE_FILE).exists()
    _scores, rows = reopened.search_dense(vectors[2:3], 1)
    assert reopened.get_rows([int(rows[0][0])])[int(rows[0][0])].chunk_id == "c2"
    sparse, _rows = reopened.search_sparse({100: 2.0}, 10)
    assert len(sparse) == 5
    np.testing.assert_allclose(sparse, 1.0)
    np.testing.assert_allclose(reopened.vectors([int(rows[0][0])])[0], vectors[2], atol=1e-6)


def test_read_only_store_refuses_writes(tmp_path: Path) -> None:
    store = HybridStore(tmp_path, DIM, device="cpu")
    add_chunks(store, ["a"], unit_vectors(1))
    store.save()
    store.close()
    reopened = HybridStore(tmp_path, DIM, device="cpu", read_only=True)
    with pytest.raises(Exception, match="readonly"):
        add_chunks(reopened, ["b"], unit_vectors(1))
    assert reopened.count == 1
