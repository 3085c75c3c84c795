"""LangChain's `VectorStore` interface over any `ChunkStore` (the local `HybridStore` by default).

kotae's own path (indexer → `HybridRetriever`) uses the `ChunkStore` directly, because it needs
the sparse and ColBERT views the generic interface has no room for. This adapter is for everything
else that speaks LangChain: `add_documents`, `similarity_search`, `get_by_ids`, `delete`,
`as_retriever()` — with any `Embeddings`. With `BGEM3Embeddings` it also stores the sparse
lexical weights (from the same forward pass), so documents added here are found by the hybrid
retriever too; with another embedding model the chunks are dense-only.

Scores are cosine similarities (inner product over L2-normalised vectors), higher is better —
unlike langchain_community's FAISS, whose MAX_INNER_PRODUCT relevance scores are inverted.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from retrieval.embeddings import BGEM3Embeddings
from retrieval.stores import ChunkStore, StoredChunk


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def _views(embedding: Embeddings, texts: list[str]) -> tuple[np.ndarray, list[dict[int, float]]]:
    """Normalised dense vectors, and sparse weights where the model has them (bge-m3)."""
    if isinstance(embedding, BGEM3Embeddings):
        views = embedding.encode_passages(texts)
        return views.dense, views.sparse
    if not texts:
        return np.zeros((0, 0), np.float32), []
    dense = _normalised(np.asarray(embedding.embed_documents(texts), np.float32))
    return dense, [{} for _ in texts]


def _document(chunk: StoredChunk) -> Document:
    return Document(page_content=chunk.text, metadata=chunk.metadata, id=chunk.chunk_id)


class HybridVectorStore(VectorStore):
    """A `VectorStore` whose documents live in a `ChunkStore` (locally FAISS + SQLite, no
    pickle)."""

    def __init__(self, store: ChunkStore, embedding: Embeddings) -> None:
        self.store = store
        self.embedding = embedding

    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    # --- writing -------------------------------------------------------------------------------

    def add_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *,
                  ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        """Insert or replace (by id) texts; ids are generated when not given."""
        texts = list(texts)
        return self._add(texts, *_views(self.embedding, texts), metadatas, ids)

    def _add(self, texts: list[str], dense: np.ndarray, sparse: list[dict[int, float]],
             metadatas: list[dict] | None, ids: list[str] | None) -> list[str]:
        if not texts:
            return []
        metadatas = [dict(m) for m in metadatas] if metadatas else [{} for _ in texts]
        ids = [str(i) if i else str(uuid.uuid4()) for i in ids] if ids else [
            str(uuid.uuid4()) for _ in texts]
        if not len(texts) == len(metadatas) == len(ids):
            raise ValueError("texts, metadatas and ids differ in length")
        self.store.add(ids, texts, metadatas, dense, sparse)
        return ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete by id; unknown ids are ignored. Refuses `ids=None` rather than wipe an index."""
        if ids is None:
            raise ValueError("pass the ids to delete; HybridVectorStore never deletes everything")
        self.store.delete_chunks(ids)
        return True

    # --- reading -------------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return [_document(chunk) for chunk in self.store.get_by_chunk_ids(list(ids))]

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Top-k documents by cosine similarity to `embedding`."""
        if self.store.count == 0:
            return []
        query = _normalised(np.asarray([embedding], np.float32))
        scores, rows = self.store.search_dense(query, k)
        ranked = [(int(r), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if r >= 0]
        chunks = self.store.get_rows([r for r, _s in ranked])
        return [(_document(chunks[r]), s) for r, s in ranked if r in chunks]

    def similarity_search_with_score(self, query: str, k: int = 4,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        return self.similarity_search_with_score_by_vector(
            self.embedding.embed_query(query), k, **kwargs)

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4,
                                    **kwargs: Any) -> list[Document]:
        return [doc for doc, _score in
                self.similarity_search_with_score_by_vector(embedding, k, **kwargs)]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _score in self.similarity_search_with_score(query, k, **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        # scores already are cosine similarities; LangChain wants [0, 1], higher is better
        return lambda score: min(1.0, max(0.0, score))

    # --- construction --------------------------------------------------------------------------

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings,
                   metadatas: list[dict] | None = None, *, ids: list[str] | None = None,
                   folder: str | Path | None = None, faiss_device: str = "cpu",
                   **kwargs: Any) -> HybridVectorStore:
        """A new local store in `folder` (required: the docstore is a SQLite file there). For
        another backend, build its `ChunkStore` and pass it to the constructor."""
        from retrieval.stores.local.store import HybridStore

        if folder is None:
            raise ValueError("HybridVectorStore.from_texts needs folder=... for its files")
        dense, sparse = _views(embedding, texts)  # one pass: the dimension comes with it
        dim = dense.shape[1] if len(texts) else len(embedding.embed_query("dimension probe"))
        vectorstore = cls(HybridStore(Path(folder), dim, device=faiss_device), embedding)
        vectorstore._add(texts, dense, sparse, metadatas, ids)
        return vectorstore
