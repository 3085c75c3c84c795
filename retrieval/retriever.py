"""HybridRetriever: dense + sparse (+ ColBERT) retrieval over the served index, as a LangChain
BaseRetriever.

Candidates are the dense top-N from the store (FAISS, in the local backend) and the lexical
top-N (`search_sparse`). Each candidate then gets all the scores of the mode, exact whichever
search found it — its dense score from its stored vector, its sparse score from its stored
weights (`sparse_scores_of`), and in mode `all` a ColBERT score from one forward pass over
the candidates — and is ranked by the weighted mean FlagEmbedding's `compute_score` uses:

    dense: d    sparse: s    hybrid: (w0 d + w1 s) / (w0 + w1)    all: (w0 d + w1 s + w2 c) / Σw

In mode `all` the best `rerank` hybrid candidates are re-encoded at query time and scored with
ColBERT on the model's device; only they are ranked. On a 2-core CPU the real model encodes
about one 256-token passage per second, so `all` is the default only where a GPU is present.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from retrieval.access import AccessControl, Audience
from retrieval.devices import default_mode
from retrieval.embedding_text import embedding_text_for
from retrieval.embeddings import BGEM3Embeddings
from retrieval.errors import IndexMissing
from retrieval.settings import Settings
from retrieval.stores import ServedIndex, StoredChunk
from retrieval.types import RetrievalMode, SearchHit


def colbert_score(query_vecs: np.ndarray, passage_vecs: np.ndarray) -> float:
    """Mean over query tokens of the best-matching passage token (FlagEmbedding's definition)."""
    if len(query_vecs) == 0 or len(passage_vecs) == 0:
        return 0.0
    return float((query_vecs @ passage_vecs.T).max(axis=1).sum() / len(query_vecs))


def combine(mode: RetrievalMode, weights: list[float], dense: np.ndarray, sparse: np.ndarray,
            colbert: np.ndarray | None) -> np.ndarray:
    """Combined scores, element-wise over candidates (FlagEmbedding's weighted mean)."""
    w_dense, w_sparse, w_colbert = weights
    if mode == "dense":
        return dense
    if mode == "sparse":
        return sparse
    if mode == "hybrid" or colbert is None:
        return (w_dense * dense + w_sparse * sparse) / (w_dense + w_sparse)
    return (w_dense * dense + w_sparse * sparse + w_colbert * colbert) / sum(weights)


@dataclass
class Candidates:
    """Rows found by the dense and/or lexical search, each with both scores."""

    rows: np.ndarray  # int64, ascending, unique
    dense: np.ndarray  # float64 cosine similarity of each row
    sparse: np.ndarray  # float64 lexical score of each row (0.0 in mode dense: not computed)

    def ranked(self, mode: RetrievalMode, weights: list[float],
               colbert: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(positions, combined scores), best first; ties go to the higher row id."""
        scores = combine(mode, weights, self.dense, self.sparse, colbert)
        order = np.lexsort((self.rows, scores))[::-1]
        return order, scores[order]

    def take(self, positions: np.ndarray) -> Candidates:
        return Candidates(self.rows[positions], self.dense[positions], self.sparse[positions])


def merge_candidates(dense_scores: np.ndarray | None, dense_rows: np.ndarray | None,
                     lexical_scores: np.ndarray | None, lexical_rows: np.ndarray | None,
                     vectors: Callable[[np.ndarray], np.ndarray],
                     sparse_scores_of: Callable[[np.ndarray], np.ndarray],
                     q_dense: np.ndarray) -> Candidates:
    """The union of the dense top-n (`search_dense`) and the lexical top-n (`search_sparse`),
    with each candidate's exact dense and sparse score: a lexical candidate's dense score comes
    from its stored vector (`vectors(rows)`), a dense candidate's sparse score from
    `sparse_scores_of(rows)`. Without lexical results (mode dense) sparse scores are 0.0 and
    never computed."""
    dense_rows = np.zeros(0, np.int64) if dense_rows is None else dense_rows
    dense_scores = np.zeros(0, np.float32) if dense_scores is None else dense_scores
    found = dense_rows >= 0
    dense_rows, dense_scores = dense_rows[found], dense_scores[found]
    lexical = lexical_scores is not None and lexical_rows is not None
    lexical_rows = (np.asarray(lexical_rows, np.int64) if lexical
                    else np.zeros(0, np.int64))
    rows = np.union1d(dense_rows, lexical_rows).astype(np.int64)
    dense = np.zeros(len(rows))
    have_dense = np.zeros(len(rows), bool)
    positions = np.searchsorted(rows, dense_rows)
    dense[positions], have_dense[positions] = dense_scores, True
    if not have_dense.all():
        dense[~have_dense] = vectors(rows[~have_dense]) @ q_dense
    sparse = np.zeros(len(rows))
    if lexical:
        assert lexical_scores is not None
        have_sparse = np.zeros(len(rows), bool)
        positions = np.searchsorted(rows, lexical_rows)
        sparse[positions], have_sparse[positions] = lexical_scores, True
        if not have_sparse.all():
            sparse[~have_sparse] = sparse_scores_of(rows[~have_sparse])
    return Candidates(rows, dense, sparse)


class HybridRetriever(BaseRetriever):
    """Returns Documents whose metadata carries `chunk_id` and the `score`s of each view."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: ServedIndex
    embeddings: BGEM3Embeddings
    mode: RetrievalMode = "hybrid"
    weights: list[float] = Field(default_factory=lambda: [0.4, 0.2, 0.4])
    k: int = 5
    candidates: int = 50
    rerank: int = 20  # mode all: hybrid finalists that get a ColBERT score
    # None (or one without a file): every chunk is visible to everyone
    access: AccessControl | None = None

    @classmethod
    def from_settings(cls, settings: Settings, index: ServedIndex,
                      embeddings: BGEM3Embeddings,
                      access: AccessControl | None = None) -> HybridRetriever:
        return cls(index=index, embeddings=embeddings, mode=default_mode(settings),
                   weights=settings.hybrid_weights, k=settings.top_k,
                   candidates=settings.candidates, rerank=settings.rerank_candidates,
                   access=access)

    def search(self, query: str, *, mode: RetrievalMode | None = None, k: int | None = None,
               timings: dict[str, float] | None = None,
               audience: Audience | None = None) -> list[SearchHit]:
        """Ranked hits for `query`, at most `k` (at least 1); none for a blank query. Raises
        IndexMissing when there is no index or it is empty.

        With access control on, only the chunks `audience` may see are candidates: the dense
        and the lexical search run over those rows alone, so k hits come back whenever k
        visible chunks exist, and no other chunk is ever scored. AccessInvalid (a broken
        access file) and ValueError (no audience) are raised before anything is searched."""
        mode = mode or self.mode
        k = self.k if k is None else k
        if k < 1:
            raise ValueError(f"k is the number of hits to return: at least 1, not {k}")
        if not query.strip():
            return []
        timings = timings if timings is not None else {}
        store = self.index.store()
        if store.count == 0:
            raise IndexMissing(
                "The index holds no documents. Put documents in KOTAE_DOCS_DIR (or pass their "
                "folders) and run `kotae index` (or `/kotae reindex` in Slack, for admins).")
        visible = (self.access.visible_rows(store, audience) if self.access is not None
                   else None)
        if visible is not None and not len(visible):
            return []
        started = time.perf_counter()
        query_views = self.embeddings.encode_query(query, colbert=mode == "all")
        timings["embed_query_s"] = time.perf_counter() - started

        started = time.perf_counter()
        q_dense, q_sparse = query_views.dense[0], query_views.sparse[0]
        n = max(k, self.candidates)
        dense_scores = dense_rows = lexical_scores = lexical_rows = None
        # One after the other, in the caller's thread: running the lexical search on a thread
        # of its own beside FAISS's OpenMP threads made a 1M-chunk hybrid search ~8x slower on
        # 2 busy cores (62 ms vs 8 ms p50), and answers already run in parallel.
        if mode != "sparse":
            scores, rows = store.search_dense(q_dense[None, :], n, rows=visible)
            dense_scores, dense_rows = scores[0], rows[0]
        if mode != "dense":  # in mode dense, lexical scores would not change the ranking
            lexical_scores, lexical_rows = store.search_sparse(q_sparse, n, rows=visible)
        candidates = merge_candidates(
            dense_scores, dense_rows, lexical_scores, lexical_rows, store.vectors,
            lambda wanted: store.sparse_scores_of(q_sparse, wanted), q_dense)
        timings["search_s"] = time.perf_counter() - started

        colbert: np.ndarray | None = None
        order, scores = candidates.ranked(mode, self.weights)
        if mode == "all" and len(order):
            # ColBERT re-encodes candidates: only the best hybrid ones are worth it
            candidates = candidates.take(order[:max(k, self.rerank)])
            stored = store.get_rows(candidates.rows.tolist())
            started = time.perf_counter()
            colbert = self._colbert_scores(candidates.rows.tolist(), stored,
                                           query_views.colbert)
            timings["colbert_s"] = time.perf_counter() - started
            order, scores = candidates.ranked(mode, self.weights, colbert)
        order, scores = order[:k], scores[:k]
        if colbert is None:
            stored = store.get_rows(candidates.rows[order].tolist())  # only the k shown

        hits = []
        for position, score in zip(order.tolist(), scores.tolist(), strict=True):
            row = int(candidates.rows[position])
            if row not in stored:
                continue
            hits.append(SearchHit(
                chunk_id=stored[row].chunk_id, text=stored[row].text,
                metadata=stored[row].metadata, score=score,
                dense=float(candidates.dense[position]),
                sparse=None if mode == "dense" else float(candidates.sparse[position]),
                colbert=None if colbert is None else float(colbert[position])))
        return hits

    def _colbert_scores(self, rows: list[int], stored: dict[int, StoredChunk],
                        query_colbert: list[np.ndarray] | None) -> np.ndarray:
        """ColBERT score of each row (0.0 for a row gone from the docstore)."""
        assert query_colbert is not None
        kept = [i for i, r in enumerate(rows) if r in stored]
        texts = [embedding_text_for(str(stored[rows[i]].metadata.get("title", "")),
                                    list(stored[rows[i]].metadata.get("heading_path") or []),
                                    stored[rows[i]].text) for i in kept]
        scores = np.zeros(len(rows))
        scores[kept] = self.embeddings.colbert_scores(query_colbert[0], texts)
        return scores

    def _get_relevant_documents(self, query: str, *,
                                run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [hit_to_document(hit) for hit in self.search(query)]


def hit_to_document(hit: SearchHit) -> Document:
    metadata = dict(hit.metadata)
    metadata.update(chunk_id=hit.chunk_id, score=hit.score, dense_score=hit.dense,
                    sparse_score=hit.sparse, colbert_score=hit.colbert)
    return Document(page_content=hit.text, metadata=metadata, id=hit.chunk_id)
