"""The impact-ordered lexical search of a large segment (`retrieval.stores.local.impact`), on
real saved segments: exact where it must be, the exact path with an access filter, segments
saved before the impact arrays existed, hidden rows."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from retrieval.stores.local import SPARSE_FILE
from retrieval.stores.local.impact import LexicalChoice, top_positive
from retrieval.stores.local.store import HybridStore

DIM = 8
# every segment takes the impact path, however small (the default keeps small ones exact)
DEEP = LexicalChoice(min_positions=0, min_depth=10_000)
SHALLOW = LexicalChoice(min_positions=0, min_depth=1, depth_per_k=0, rescore_per_k=1)


def unit_vectors(n: int) -> np.ndarray:
    vectors = np.random.default_rng(0).normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def saved_segment(folder: Path, sparse: list[dict[int, float]],
                  lexical: LexicalChoice | None = None) -> HybridStore:
    """A segment saved with these chunks' sparse weights (and the impact arrays where
    `lexical` wants them), reopened read-only (mapped)."""
    store = HybridStore(folder, DIM, device="cpu")
    if lexical is not None:
        store.lexical = lexical
    ids = [f"c{i}" for i in range(len(sparse))]
    store.add(ids, [f"text {i}" for i in ids], [{"source": f"s{i % 7}"} for i in range(len(ids))],
              unit_vectors(len(ids)), sparse)
    store.save()
    store.close()
    return HybridStore(folder, DIM, device="cpu", read_only=True)


def zipf_corpus(n: int, seed: int = 1) -> list[dict[int, float]]:
    rng = np.random.default_rng(seed)
    return [{int(t): float(w) for t, w in zip(rng.zipf(1.3, 12) % 300,
                                               rng.uniform(0.02, 0.4, 12), strict=True)}
            for _ in range(n)]


def queries(count: int) -> list[dict[int, float]]:
    rng = np.random.default_rng(2)
    return [{int(t): float(w) for t, w in zip(rng.zipf(1.3, 6) % 300, rng.uniform(0.05, 0.3, 6),
                                              strict=True)} for _ in range(count)]


def test_reading_every_posting_gives_the_exact_top_k(tmp_path: Path) -> None:
    segment = saved_segment(tmp_path, zipf_corpus(400))
    segment.lexical = DEEP  # depth 10,000 >= the postings of every token
    for query in queries(20):
        scores, rows = segment.search_sparse(query, 10)
        exact_scores, exact_rows = segment.search_sparse(query, 10, exact=True)
        assert len(rows) == len(exact_rows) > 0
        np.testing.assert_allclose(scores, exact_scores, rtol=1e-6)
        # rows agree except where two chunks tie exactly
        assert set(rows.tolist()) == set(exact_rows.tolist()) or np.isclose(
            scores[-1], scores[-2])


def crafted(folder: Path) -> tuple[HybridStore, list[int]]:
    """Chunk 1 is the best for {1, 2} only by summing two tokens that each rank it second."""
    segment = saved_segment(folder, [{1: 1.0}, {1: 0.9, 2: 0.9}, {2: 0.95}, {3: 1.0}])
    return segment, segment.stored_rows().tolist()


def test_a_shallow_search_can_miss_what_the_exact_one_finds(tmp_path: Path) -> None:
    segment, rows = crafted(tmp_path)
    segment.lexical = SHALLOW  # one posting per token, one candidate rescored
    scores, found = segment.search_sparse({1: 1.0, 2: 1.0}, 1)
    assert found.tolist() != [rows[1]]  # the approximation this test relies on
    assert scores[0] == pytest.approx(1.0)  # what it returns is scored exactly
    _scores, exact = segment.search_sparse({1: 1.0, 2: 1.0}, 1, exact=True)
    assert exact.tolist() == [rows[1]]


def test_an_access_filter_takes_the_exact_path(tmp_path: Path) -> None:
    segment, rows = crafted(tmp_path)
    segment.lexical = SHALLOW
    allowed = np.asarray(rows, np.int64)
    scores, found = segment.search_sparse({1: 1.0, 2: 1.0}, 1, rows=allowed)
    assert found.tolist() == [rows[1]] and scores[0] == pytest.approx(1.8)
    _scores, found = segment.search_sparse({1: 1.0, 2: 1.0}, 3, rows=allowed[[0, 2]])
    assert found.tolist() == [rows[0], rows[2]]  # only the allowed rows, best first


def test_small_segments_and_the_default_stay_exact(tmp_path: Path) -> None:
    segment, rows = crafted(tmp_path)
    segment.lexical = LexicalChoice(min_positions=5, min_depth=1, depth_per_k=0,
                                    rescore_per_k=1)  # 4 chunks < 5
    assert segment.search_sparse({1: 1.0, 2: 1.0}, 1)[1].tolist() == [rows[1]]
    segment.lexical = LexicalChoice(min_depth=1, depth_per_k=0, rescore_per_k=1)
    assert segment.search_sparse({1: 1.0, 2: 1.0}, 1)[1].tolist() == [rows[1]]


def test_the_exact_top_k_of_many_scores_is_the_sorted_one() -> None:
    """`top_positive`'s sampled threshold never changes the answer: ties, zeros, few
    positives, and scores that put fewer than k above the threshold."""
    rng = np.random.default_rng(4)
    cases = [rng.random(300_000).astype(np.float32),
             np.round(rng.random(300_000), 2).astype(np.float32),  # many ties
             np.where(rng.random(300_000) < 0.0001, rng.random(300_000), 0).astype(np.float32),
             np.zeros(300_000, np.float32)]
    skewed = np.zeros(300_000, np.float32)
    skewed[1::64] = 1.0  # every sampled score high, none of the others
    skewed[::64] = 0.5
    cases.append(skewed)
    for scores in cases:
        for k in (1, 10, 50, 1000):
            top = top_positive(scores, k)
            positive = np.flatnonzero(scores > 0)
            expected = positive[np.lexsort((positive, -scores[positive]))][:k]
            assert top.tolist() == expected.tolist()


def test_the_impact_arrays_are_saved_mapped_and_made_for_old_segments(tmp_path: Path) -> None:
    corpus = zipf_corpus(200)
    plain = saved_segment(tmp_path / "plain", corpus)  # the default reads no impact arrays
    with zipfile.ZipFile(tmp_path / "plain" / SPARSE_FILE) as archive:
        assert not any(name.startswith("impact_") for name in archive.namelist())
    plain.close()
    segment = saved_segment(tmp_path, corpus, DEEP)
    with zipfile.ZipFile(tmp_path / SPARSE_FILE) as archive:
        assert {"impact_positions.npy", "impact_weights.npy"} <= set(archive.namelist())
    assert segment._impact is not None and isinstance(segment._impact[0], np.memmap)
    segment.lexical = DEEP
    expected = [segment.search_sparse(q, 10, exact=True) for q in queries(5)]
    segment.close()
    # a segment saved before impact arrays existed: the same file without them
    with np.load(tmp_path / SPARSE_FILE) as saved:
        old = {name: saved[name] for name in saved.files if not name.startswith("impact_")}
    with open(tmp_path / SPARSE_FILE, "wb") as handle:
        np.savez(handle, **old)
    reopened = HybridStore(tmp_path, DIM, device="cpu", read_only=True)
    reopened.lexical = DEEP
    for query, (exact_scores, _rows) in zip(queries(5), expected, strict=True):
        scores, _found = reopened.search_sparse(query, 10)
        np.testing.assert_allclose(scores, exact_scores, rtol=1e-6)


def test_hidden_rows_never_come_back(tmp_path: Path) -> None:
    segment, rows = crafted(tmp_path)
    segment.lexical = DEEP
    segment.hide(np.asarray([rows[1]]))
    _scores, found = segment.search_sparse({1: 1.0, 2: 1.0}, 4)
    assert found.tolist() == [rows[0], rows[2]]
