"""HybridRetriever: combined scores equal FlagEmbedding's compute_score; modes; LangChain API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from langchain_core.documents import Document

from retrieval.embeddings import BGEM3Embeddings
from retrieval.retriever import HybridRetriever
from retrieval.stores.local import IndexLayout, LiveIndex
from retrieval.stores.local.store import HybridStore

PASSAGES = [
    "経費精算の締め切りは毎月25日です。領収書の画像を添付して申請してください。",
    "On-call handoff happens every Monday at 10:00 JST in the #ops channel.",
    "リモートワークの申請は前日の18時までに上長へ連絡します。",
    "FAISS stores dense vectors; the sparse index gives lexical matches for rare words.",
    "Vacation requests need two weeks of notice and approval from your manager.",
    "kotae は Slack のスレッドに出典付きで答えを返します。",
]
QUERIES = ["経費精算の締め切りはいつ？", "When is the on-call handoff?", "FAISS sparse lexical"]
WEIGHTS = [0.4, 0.2, 0.4]


def build_index(root: Path, embeddings: BGEM3Embeddings) -> LiveIndex:
    layout = IndexLayout(root)
    version, build_dir = layout.new_build()
    store = HybridStore(build_dir, embeddings.dimension, device="cpu")
    views = embeddings.encode_passages(PASSAGES)
    store.add([f"p{i}" for i in range(len(PASSAGES))], PASSAGES,
              [{"source": f"/docs/{i}.md"} for i in range(len(PASSAGES))],  # untitled: text as is
              views.dense, views.sparse)
    store.save()
    store.close()
    layout.publish(version, build_dir, {"version": version, "dim": embeddings.dimension})
    return LiveIndex(root, device="cpu")


@pytest.fixture
def retriever(tmp_path: Path, embeddings: BGEM3Embeddings) -> HybridRetriever:
    return HybridRetriever(index=build_index(tmp_path, embeddings), embeddings=embeddings,
                           weights=WEIGHTS, k=len(PASSAGES), candidates=len(PASSAGES))


@pytest.mark.parametrize("query", QUERIES)
def test_combined_scores_equal_flagembedding_compute_score(
        retriever: HybridRetriever, embeddings: BGEM3Embeddings, query: str) -> None:
    hits = {hit.chunk_id: hit for hit in retriever.search(query, mode="all")}
    assert len(hits) == len(PASSAGES)
    for i, passage in enumerate(PASSAGES):
        # one pair per batch: FlagEmbedding pads passages within a batch, which changes
        # ColBERT maxima, while stored vectors carry no padding
        reference = embeddings.flag_model.compute_score(
            [(query, passage)], batch_size=1, max_query_length=embeddings.query_max_tokens,
            max_passage_length=embeddings.passage_max_tokens, weights_for_different_modes=WEIGHTS)
        hit = hits[f"p{i}"]
        assert hit.dense == pytest.approx(reference["dense"][0], abs=1e-4)
        assert hit.sparse == pytest.approx(reference["sparse"][0], abs=1e-4)
        assert hit.colbert == pytest.approx(reference["colbert"][0], abs=1e-4)
        assert hit.score == pytest.approx(reference["colbert+sparse+dense"][0], abs=1e-4)


def test_hybrid_mode_equals_sparse_plus_dense(retriever: HybridRetriever,
                                             embeddings: BGEM3Embeddings) -> None:
    query = QUERIES[0]
    hits = retriever.search(query, mode="hybrid")
    reference = embeddings.flag_model.compute_score(
        [(query, PASSAGES[int(hit.chunk_id[1:])]) for hit in hits], batch_size=1,
        max_query_length=embeddings.query_max_tokens, weights_for_different_modes=WEIGHTS)
    np.testing.assert_allclose([hit.score for hit in hits], reference["sparse+dense"], atol=1e-4)
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert all(hit.colbert is None for hit in hits)


def test_sparse_mode_ranks_by_lexical_overlap(retriever: HybridRetriever) -> None:
    hits = retriever.search("経費精算の締め切り", mode="sparse", k=3)
    assert hits[0].chunk_id == "p0"
    assert hits[0].score == hits[0].sparse
    # passages sharing no token with the query are not candidates at all in sparse mode
    assert all(hit.sparse and hit.sparse > 0 for hit in hits)
    assert "p1" not in {hit.chunk_id for hit in hits}


def test_dense_mode_scores_are_cosine(retriever: HybridRetriever,
                                      embeddings: BGEM3Embeddings) -> None:
    hits = retriever.search(PASSAGES[4], mode="dense", k=3)
    query = np.asarray(embeddings.embed_query(PASSAGES[4]))
    passages = embeddings.encode_passages(PASSAGES).dense
    for hit in hits:
        assert hit.score == pytest.approx(float(passages[int(hit.chunk_id[1:])] @ query),
                                          abs=1e-5)


def test_k_limits_and_metadata_survive(retriever: HybridRetriever) -> None:
    hits = retriever.search(QUERIES[1], k=2)
    assert len(hits) == 2
    assert all(hit.metadata["source"].startswith("/docs/") for hit in hits)


def test_langchain_retriever_interface(retriever: HybridRetriever) -> None:
    retriever.k = 3
    documents = retriever.invoke("On-call handoff Monday")
    assert len(documents) == 3 and all(isinstance(doc, Document) for doc in documents)
    assert {"chunk_id", "score", "dense_score", "sparse_score"} <= set(documents[0].metadata)
    scores = [doc.metadata["score"] for doc in documents]
    assert scores == sorted(scores, reverse=True)


def test_an_empty_index_says_how_to_build_it(tmp_path: Path,
                                             embeddings: BGEM3Embeddings) -> None:
    from retrieval.errors import IndexMissing

    layout = IndexLayout(tmp_path)
    version, build_dir = layout.new_build()
    store = HybridStore(build_dir, embeddings.dimension, device="cpu")
    store.save()
    store.close()
    layout.publish(version, build_dir, {"version": version, "dim": embeddings.dimension})
    retriever = HybridRetriever(index=LiveIndex(tmp_path, device="cpu"), embeddings=embeddings)
    with pytest.raises(IndexMissing, match="kotae index"):
        retriever.search("経費精算")


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid", "all"])
def test_hits_are_ranked_by_their_combined_score(retriever: HybridRetriever, mode: str) -> None:
    hits = retriever.search(QUERIES[0], mode=mode)  # type: ignore[arg-type]
    assert hits and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for hit in hits:
        parts = {"dense": hit.dense, "sparse": hit.sparse, "colbert": hit.colbert}
        if mode in ("dense", "sparse"):
            assert hit.score == pytest.approx(parts[mode])
        else:
            assert hit.dense is not None and hit.sparse is not None
            expected = (WEIGHTS[0] * hit.dense + WEIGHTS[1] * hit.sparse
                        + (WEIGHTS[2] * hit.colbert if mode == "all" else 0.0))
            total = sum(WEIGHTS) if mode == "all" else WEIGHTS[0] + WEIGHTS[1]
            assert (hit.colbert is not None) == (mode == "all")
            assert hit.score == pytest.approx(expected / total)
