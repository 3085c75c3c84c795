"""Same vectors, same ranking: the bundled samples indexed into the local backend and into
Milvus Lite by the same Indexer; every query ranks the same chunks in the same order on both,
and every score (combined, dense, sparse) agrees within 1e-4 — candidates come from Milvus, the
final score is bge-m3's weighted sum computed by the retriever, as for the local backend.
Then the local index moved into Milvus by the migration (nothing re-embedded) ranks alike too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval.embeddings import BGEM3Embeddings
from retrieval.indexer import Indexer
from retrieval.retriever import HybridRetriever
from retrieval.settings import Settings
from retrieval.stores import ChunkReader, ServedIndex, open_store_backend
from retrieval.types import SearchHit

QUERIES = ["経費精算の締め切りはいつ？", "When is the on-call handoff?", "FAISS sparse lexical",
           "リモートワークの申請", "how do I reindex kotae", "zzz unrelated words"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def milvus_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"store": "milvus",
                                       "milvus_uri": str(tmp_path / "milvus" / "kotae.db")})


def retriever(settings: Settings, embeddings: BGEM3Embeddings) -> HybridRetriever:
    return HybridRetriever.from_settings(
        settings, ServedIndex(open_store_backend(settings)), embeddings)


def assert_same_hits(local: list[SearchHit], milvus: list[SearchHit]) -> None:
    assert [h.chunk_id for h in milvus] == [h.chunk_id for h in local]
    for mine, theirs in zip(milvus, local, strict=True):
        assert mine.text == theirs.text and mine.metadata == theirs.metadata
        assert abs(mine.score - theirs.score) < 1e-4
        assert abs(mine.dense - theirs.dense) < 1e-4
        assert (mine.sparse is None) == (theirs.sparse is None)
        if mine.sparse is not None and theirs.sparse is not None:
            assert abs(mine.sparse - theirs.sparse) < 1e-4


def assert_rank_alike(settings: Settings, milvus_settings: Settings,
                      embeddings: BGEM3Embeddings) -> None:
    local, milvus = retriever(settings, embeddings), retriever(milvus_settings, embeddings)
    for mode in ("hybrid", "dense", "sparse"):
        for query in QUERIES:
            expected = local.search(query, mode=mode, k=8)
            assert expected or mode == "sparse"
            assert_same_hits(expected, milvus.search(query, mode=mode, k=8))


def chunk_ids(store: ChunkReader, rows: np.ndarray) -> list[str]:
    found = store.get_rows(rows.tolist())
    return [found[int(r)].chunk_id for r in rows if int(r) >= 0]


def test_the_same_vectors_rank_alike_on_both_backends(
        settings: Settings, milvus_settings: Settings, embeddings: BGEM3Embeddings) -> None:
    local_summary = Indexer(settings, embeddings).run()
    milvus_summary = Indexer(milvus_settings, embeddings).run()
    assert milvus_summary.chunks_total == local_summary.chunks_total > 0
    assert milvus_summary.added == local_summary.added
    assert_rank_alike(settings, milvus_settings, embeddings)

    # among given rows only (access control): the same chunks, by the same scores
    local = ServedIndex(open_store_backend(settings)).store()
    milvus = ServedIndex(open_store_backend(milvus_settings)).store()
    sources = sorted(local.files())[::2]
    local_rows, milvus_rows = local.rows_of(sources), milvus.rows_of(sources)
    assert sorted(chunk_ids(local, local_rows)) == sorted(chunk_ids(milvus, milvus_rows))
    query = embeddings.encode_query(QUERIES[0])
    for store, rows in ((local, local_rows), (milvus, milvus_rows)):
        _scores, found = store.search_dense(query.dense[0][None, :], 5, rows=rows)
        assert set(found[0].tolist()) <= set(rows.tolist())
    local_scores, local_found = local.search_dense(query.dense[0][None, :], 5, rows=local_rows)
    milvus_scores, milvus_found = milvus.search_dense(query.dense[0][None, :], 5,
                                                      rows=milvus_rows)
    assert chunk_ids(local, local_found[0]) == chunk_ids(milvus, milvus_found[0])
    np.testing.assert_allclose(milvus_scores, local_scores, atol=1e-4)
    lexical_local = local.search_sparse(query.sparse[0], 20, rows=local_rows)
    lexical_milvus = milvus.search_sparse(query.sparse[0], 20, rows=milvus_rows)
    assert chunk_ids(local, lexical_local[1]) == chunk_ids(milvus, lexical_milvus[1])
    np.testing.assert_allclose(lexical_milvus[0], lexical_local[0], atol=1e-4)
    np.testing.assert_allclose(milvus.sparse_scores_of(query.sparse[0], milvus_rows),
                               local.sparse_scores_of(query.sparse[0], local_rows), atol=1e-4)


def test_a_local_index_migrated_to_milvus_ranks_alike_without_re_embedding(
        settings: Settings, milvus_settings: Settings, embeddings: BGEM3Embeddings,
        sample_docs: Path) -> None:
    settings = settings.model_copy(update={"docs_dir": sample_docs})
    milvus_settings = milvus_settings.model_copy(update={"docs_dir": sample_docs})
    Indexer(settings, embeddings).run()
    probe = ("import sys\n"
             "from kotae.cli import app\n"
             "try:\n"
             "    app(['migrate-to-milvus'])\n"
             "except SystemExit as done:\n"
             "    assert not done.code, done.code\n"
             "print('model loaded:', 'FlagEmbedding' in sys.modules or 'torch' in sys.modules)\n")
    env = {**os.environ, "KOTAE_STORE": "local", "KOTAE_INDEX_DIR": str(settings.index_dir),
           "KOTAE_MILVUS_URI": str(milvus_settings.milvus_uri),
           "KOTAE_EMBEDDING_MODEL": settings.embedding_model}
    result = subprocess.run([sys.executable, "-c", probe], cwd=settings.index_dir.parent,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "copied v" in result.stdout and "model loaded: False" in result.stdout
    assert_rank_alike(settings, milvus_settings, embeddings)

    # the manifest came along, so the next reindex on Milvus is incremental: nothing changed
    versions = open_store_backend(milvus_settings)
    migrated = versions.current_version()
    assert migrated is not None
    manifest = versions.manifest(migrated)
    assert manifest["migrated_from"]["version"] == open_store_backend(settings).current_version()
    summary = Indexer(milvus_settings, embeddings).run()
    assert not summary.switched and summary.version == migrated and summary.chunks_encoded == 0

    # the embedding cache keeps what the migrated version uses: after an edit is indexed (the
    # cache then keeps the versions Milvus keeps), a rebuild from scratch re-embeds nothing
    guide = sample_docs / "office-guide.txt"
    guide.write_text(guide.read_text("utf-8") + "\n\nThe printer moved.\n", encoding="utf-8")
    edited = Indexer(milvus_settings, embeddings).run()
    assert edited.switched and 0 < edited.chunks_encoded < edited.chunks_total
    rebuilt = Indexer(milvus_settings, embeddings).run(full=True)
    assert rebuilt.switched and rebuilt.chunks_encoded == 0
    assert rebuilt.chunks_reused == rebuilt.chunks_total


def test_langchains_vector_store_interface_over_a_milvus_build(
        tmp_path: Path, embeddings: BGEM3Embeddings) -> None:
    """HybridVectorStore speaks to any ChunkStore: over a Milvus build it adds, replaces by id,
    finds, gets and deletes, and what it added is found by the hybrid retriever once published."""
    from retrieval.vectorstore import HybridVectorStore
    from tests.integration.milvus_fixtures import lite_versions

    versions = lite_versions(tmp_path / "lc.db", "lc", model="tiny")
    build = versions.begin_build(embeddings.dimension)
    store = HybridVectorStore(build.store, embeddings)
    ids = store.add_texts(["経費精算の締め切りは毎月25日です。",
                           "The on-call handoff is on Monday.", "Printers are on floor 3."],
                          [{"source": "a.md"}, {"source": "b.md"}, {"source": "c.md"}],
                          ids=["a", "b", "c"])
    assert ids == ["a", "b", "c"] and build.store.count == 3
    store.add_texts(["Printers moved to floor 4."], [{"source": "c.md"}], ids=["c"])  # replace
    assert build.store.count == 3
    assert [d.page_content for d in store.get_by_ids(["c", "zz"])] == ["Printers moved to floor 4."]
    found = store.similarity_search_with_score("Printers moved to floor 4.", k=1)
    assert found[0][0].id == "c" and found[0][1] > 0.99
    store.delete(["b"])
    assert sorted(d.id or "" for d in store.get_by_ids(["a", "b", "c"])) == ["a", "c"]
    build.publish({"dim": embeddings.dimension})
    reader = versions.open_version(build.version)
    query = embeddings.encode_query("経費精算の締め切り")
    _scores, rows = reader.search_sparse(query.sparse[0], 5)
    assert len(rows) and reader.get_rows(rows.tolist())[int(rows[0])].chunk_id == "a"
