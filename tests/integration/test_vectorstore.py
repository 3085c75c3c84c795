"""HybridVectorStore honours LangChain's whole VectorStore contract (langchain-tests' standard
suite) and, with bge-m3 embeddings, stores the sparse view the hybrid retriever searches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from retrieval.embeddings import BGEM3Embeddings
from retrieval.stores.local.store import HybridStore
from retrieval.vectorstore import HybridVectorStore


class TestHybridVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> Iterator[VectorStore]:  # type: ignore[override]
        store = HybridStore(tmp_path / "store", 6, device="cpu")  # the suite's embeddings: 6-d
        yield HybridVectorStore(store, self.get_embeddings())
        store.close()


def test_bge_m3_documents_get_sparse_weights_and_cosine_scores(
        embeddings: BGEM3Embeddings, tmp_path: Path) -> None:
    texts = ["経費精算は翌月5日までに申請してください。", "The on-call handoff is on Monday."]
    vectorstore = HybridVectorStore.from_texts(
        texts, embeddings, [{"source": "a.md"}, {"source": "b.md"}], ids=["a", "b"],
        folder=tmp_path / "store")

    rows = vectorstore.store.sparse_of(list(vectorstore.store.get_rows([1, 2])))
    assert len(rows) == 2 and all(weights for weights in rows.values())
    top_scores, _rows = vectorstore.store.search_sparse(
        embeddings.encode_query(texts[0]).sparse[0], 2)
    assert top_scores.max() > 0

    found = vectorstore.similarity_search_with_score(texts[1], k=2)
    query = np.asarray(embeddings.embed_query(texts[1]))
    expected = {t: float(np.asarray(embeddings.embed_documents([t])[0]) @ query) for t in texts}
    assert [doc.id for doc, _score in found] == ["b", "a"]
    for doc, score in found:
        assert score == pytest.approx(expected[doc.page_content], abs=1e-5)
    relevance = vectorstore.similarity_search_with_relevance_scores(texts[1], k=1)
    assert relevance[0][1] == pytest.approx(min(1.0, expected[texts[1]]), abs=1e-5)


def test_retriever_interface_and_refusal_to_delete_everything(
        embeddings: BGEM3Embeddings, tmp_path: Path) -> None:
    vectorstore = HybridVectorStore(HybridStore(tmp_path / "s", embeddings.dimension,
                                                device="cpu"), embeddings)
    vectorstore.add_documents([Document(page_content="VPN の設定手順", metadata={"n": 1})],
                              ids=["vpn"])
    assert [d.id for d in vectorstore.as_retriever(search_kwargs={"k": 1}).invoke("VPN")] == ["vpn"]
    with pytest.raises(ValueError, match="ids"):
        vectorstore.delete()
    assert vectorstore.get_by_ids(["vpn"])[0].metadata == {"n": 1}


def test_from_texts_embeds_each_text_once(tmp_path: Path) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    class CountingEmbedding(DeterministicFakeEmbedding):
        calls: int = 0

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            self.calls += len(texts)
            return super().embed_documents(texts)

        def embed_query(self, text: str) -> list[float]:
            self.calls += 1
            return super().embed_query(text)

    counting = CountingEmbedding(size=8)
    vectorstore = HybridVectorStore.from_texts(["a", "b", "c"], counting, folder=tmp_path / "s")
    assert counting.calls == 3 and vectorstore.store.count == 3
