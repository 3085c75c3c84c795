"""HybridRetriever: dense + sparse (+ ColBERT) retrieval over the served index, as a LangChain
BaseRetriever.

Candidates are the dense top-N from FAISS and the sparse top-N from the lexical index. Each
candidate then gets all the scores of the mode — its dense score from its stored vector, its
sparse score from its stored weights, and in mode `all` a ColBERT score from one forward pass
over the candidates — and is ranked by the weighted mean FlagEmbedding's `compute_score` uses:

    dense: d    sparse: s    hybrid: (w0 d + w1 s) / (w0 + w1)    all: (w0 d + w1 s + w2 c) / Σw

In mode `all` the best `rerank` hybrid candidates are re-encoded at query time and scored with
ColBERT on the model's device; only they are ranked. On a 2-core CPU the real model encodes
about one 256-token passage per second, so `all` is the default only where a GPU is present.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from retrieval.chunking import embedding_text_for
from retrieval.embeddings import BGEM3Embeddings, cuda_available
from retrieval.settings import Settings
from retrieval.types import RetrievalMode, SearchHit
from retrieval.versions import LiveIndex


def default_mode(settings: Settings) -> RetrievalMode:
    if settings.retrieval_mode is not None:
        return settings.retrieval_mode
    return "all" if cuda_available() else "hybrid"


def colbert_score(query_vecs: np.ndarray, passage_vecs: np.ndarray) -> float:
    """Mean over query tokens of the best-matching passage token (FlagEmbedding's definition)."""
    if len(query_vecs) == 0 or len(passage_vecs) == 0:
        return 0.0
    return float((query_vecs @ passage_vecs.T).max(axis=1).sum() / len(query_vecs))


def combine(mode: RetrievalMode, weights: list[float], dense: float, sparse: float,
            colbert: float | None) -> float:
    w_dense, w_sparse, w_colbert = weights
    if mode == "dense":
        return dense
    if mode == "sparse":
        return sparse
    if mode == "hybrid" or colbert is None:
        return (w_dense * dense + w_sparse * sparse) / (w_dense + w_sparse)
    return (w_dense * dense + w_sparse * sparse + w_colbert * colbert) / sum(weights)


class HybridRetriever(BaseRetriever):
    """Returns Documents whose metadata carries `chunk_id` and the `score`s of each view."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: LiveIndex
    embeddings: BGEM3Embeddings
    mode: RetrievalMode = "hybrid"
    weights: list[float] = Field(default_factory=lambda: [0.4, 0.2, 0.4])
    k: int = 5
    candidates: int = 50
    rerank: int = 20  # mode all: hybrid finalists that get a ColBERT score

    @classmethod
    def from_settings(cls, settings: Settings, index: LiveIndex,
                      embeddings: BGEM3Embeddings) -> HybridRetriever:
        return cls(index=index, embeddings=embeddings, mode=default_mode(settings),
                   weights=settings.hybrid_weights, k=settings.top_k,
                   candidates=settings.candidates, rerank=settings.rerank_candidates)

    def search(self, query: str, *, mode: RetrievalMode | None = None, k: int | None = None,
               timings: dict[str, float] | None = None) -> list[SearchHit]:
        """Ranked hits for `query`; raises IndexMissing when there is no index."""
        mode = mode or self.mode
        k = k or self.k
        timings = timings if timings is not None else {}
        store = self.index.store()
        if store.count == 0:
            return []
        started = time.perf_counter()
        query_views = self.embeddings.encode_query(query, colbert=mode == "all")
        timings["embed_query_s"] = time.perf_counter() - started

        started = time.perf_counter()
        q_dense, q_sparse = query_views.dense[0], query_views.sparse[0]
        n = max(k, self.candidates)
        dense_by_row: dict[int, float] = {}
        if mode != "sparse":
            scores, rows = store.search_dense(q_dense[None, :], n)
            dense_by_row = {row: score for row, score in
                            zip(rows[0].tolist(), scores[0].tolist(), strict=True) if row >= 0}
        if mode == "dense":  # lexical scores would not change the ranking
            rows_list, sparse_by_row = list(dense_by_row), {}
        else:
            all_sparse, sparse_rows = store.sparse_scores(q_sparse)  # rows ascending
            sparse_top = sparse_rows[_top_positive(all_sparse, n)]
            rows_list = list(dict.fromkeys([*dense_by_row, *sparse_top.tolist()]))
            sparse_by_row = _lookup(rows_list, sparse_rows, all_sparse)
        missing_dense = [r for r in rows_list if r not in dense_by_row]
        if missing_dense:
            vectors = store.vectors(missing_dense)
            dense_by_row.update(zip(missing_dense, (vectors @ q_dense).tolist(), strict=True))
        timings["search_s"] = time.perf_counter() - started

        def ranked(rows: list[int], colbert: dict[int, float]) -> list[tuple[float, int]]:
            return sorted(((combine(mode, self.weights, dense_by_row.get(row, 0.0),
                                    sparse_by_row.get(row, 0.0), colbert.get(row)), row)
                           for row in rows), reverse=True)

        colbert_by_row: dict[int, float] = {}
        if mode == "all" and rows_list:
            # ColBERT re-encodes candidates: only the best hybrid ones are worth it
            finalists = [row for _s, row in ranked(rows_list, {})][:max(k, self.rerank)]
            stored = store.get_rows(finalists)
            started = time.perf_counter()
            colbert_by_row = self._colbert_scores(finalists, stored, query_views.colbert)
            timings["colbert_s"] = time.perf_counter() - started
            scored = ranked(finalists, colbert_by_row)[:k]
        else:
            scored = ranked(rows_list, {})[:k]
            stored = store.get_rows([row for _score, row in scored])  # only the k shown

        hits = [
            SearchHit(chunk_id=stored[row].chunk_id, text=stored[row].text,
                      metadata=stored[row].metadata, score=score,
                      dense=dense_by_row.get(row, 0.0), sparse=sparse_by_row.get(row),
                      colbert=colbert_by_row.get(row))
            for score, row in scored if row in stored
        ]
        return hits

    def _colbert_scores(self, rows: list[int], stored: dict[int, Any],
                        query_colbert: list[np.ndarray] | None) -> dict[int, float]:
        assert query_colbert is not None
        kept = [r for r in rows if r in stored]
        texts = [embedding_text_for(str(stored[r].metadata.get("title", "")),
                                    list(stored[r].metadata.get("heading_path") or []),
                                    stored[r].text) for r in kept]
        scores = self.embeddings.colbert_scores(query_colbert[0], texts)
        return dict(zip(kept, scores.tolist(), strict=True))

    def _get_relevant_documents(self, query: str, *,
                                run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [hit_to_document(hit) for hit in self.search(query)]


def _top_positive(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the n highest positive scores, best first (argpartition: no full sort)."""
    if not len(scores):
        return np.zeros(0, np.int64)
    top = np.argpartition(-scores, n - 1)[:n] if len(scores) > n else np.arange(len(scores))
    top = top[scores[top] > 0]
    return top[np.argsort(-scores[top], kind="stable")]


def _lookup(rows: list[int], sorted_rows: np.ndarray, values: np.ndarray) -> dict[int, float]:
    """values[i] for each row found in the ascending `sorted_rows` (0.0 when absent)."""
    if not rows or not len(sorted_rows):
        return {row: 0.0 for row in rows}
    wanted = np.asarray(rows, np.int64)
    positions = np.minimum(np.searchsorted(sorted_rows, wanted), len(sorted_rows) - 1)
    found = sorted_rows[positions] == wanted
    return {row: float(values[p]) if ok else 0.0
            for row, p, ok in zip(rows, positions.tolist(), found.tolist(), strict=True)}


def hit_to_document(hit: SearchHit) -> Document:
    metadata = dict(hit.metadata)
    metadata.update(chunk_id=hit.chunk_id, score=hit.score, dense_score=hit.dense,
                    sparse_score=hit.sparse, colbert_score=hit.colbert)
    return Document(page_content=hit.text, metadata=metadata, id=hit.chunk_id)
