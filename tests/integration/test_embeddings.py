"""BGEM3Embeddings against the real FlagEmbedding code path on a tiny bge-m3-shaped model."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from retrieval.embeddings import BGEM3Embeddings
from retrieval.errors import ModelUnavailable

TEXTS = [
    "kotae answers questions from documents.",
    "経費精算の締め切りは毎月25日です。領収書を添付してください。",
    "FAISS keeps the dense vectors; sparse weights give lexical matching. " * 6,
    "短い",
    "On-call handoff happens every Monday at 10:00 JST.",
]


def test_views_equal_flagembedding_encode(embeddings: BGEM3Embeddings) -> None:
    reference = embeddings.flag_model.encode(
        TEXTS, batch_size=embeddings.batch_size, max_length=embeddings.passage_max_tokens,
        return_dense=True, return_sparse=True, return_colbert_vecs=True)
    views = embeddings.encode_passages(TEXTS, colbert=True)

    np.testing.assert_array_equal(views.dense, reference["dense_vecs"])
    for ours, theirs in zip(views.sparse, reference["lexical_weights"], strict=True):
        assert ours == {int(token): float(weight) for token, weight in theirs.items()}
    assert views.colbert is not None
    for ours_vecs, their_vecs in zip(views.colbert, reference["colbert_vecs"], strict=True):
        np.testing.assert_array_equal(ours_vecs, their_vecs)


def test_dense_vectors_are_normalised_float32_and_distinct(
        embeddings: BGEM3Embeddings) -> None:
    vectors = np.asarray(embeddings.embed_documents(TEXTS), dtype=np.float32)
    assert vectors.shape == (len(TEXTS), embeddings.dimension)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    off_diagonal = similarity[~np.eye(len(TEXTS), dtype=bool)]
    assert off_diagonal.max() < 0.99  # a broken tiny model gives every input the same vector


def test_query_uses_query_max_tokens(embeddings: BGEM3Embeddings) -> None:
    long_query = " ".join(["kotae"] * 500)
    reference = embeddings.flag_model.encode(
        [long_query], max_length=embeddings.query_max_tokens, return_dense=True)
    np.testing.assert_allclose(embeddings.embed_query(long_query),
                               reference["dense_vecs"][0], atol=1e-6)


def test_one_forward_pass_gives_all_three_views(embeddings: BGEM3Embeddings) -> None:
    calls = []
    body = embeddings.flag_model.model.model  # the XLM-RoBERTa transformer
    handle = body.register_forward_hook(lambda *_args: calls.append(1))
    try:
        views = embeddings.encode(TEXTS[:3], colbert=True)
    finally:
        handle.remove()
    assert len(calls) == 1  # 3 texts, batch size 8: one pass, no batch-size probe
    assert views.colbert is not None and len(views.sparse) == 3


def test_encode_query_runs_the_model_once(embeddings: BGEM3Embeddings) -> None:
    calls = []
    handle = embeddings.flag_model.model.model.register_forward_hook(
        lambda *_args: calls.append(1))
    try:
        embeddings.embed_query("経費精算")
    finally:
        handle.remove()
    assert calls == [1]


def test_model_loads_once_across_threads(tiny_model_dir: Path) -> None:
    model = BGEM3Embeddings(model_name_or_path=str(tiny_model_dir), device="cpu")
    assert not model.loaded  # lazy: nothing loaded by the constructor
    seen: list[int] = []
    threads = [threading.Thread(target=lambda: seen.append(id(model.flag_model)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == 1 and len(seen) == 4


def test_missing_weights_fail_with_the_setting_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = BGEM3Embeddings(model_name_or_path="no-such-org/no-such-model", device="cpu")
    with pytest.raises(ModelUnavailable, match="KOTAE_EMBEDDING_MODEL"):
        model.embed_query("hello")


def test_missing_folder_fails_with_the_setting_named(tmp_path: Path) -> None:
    model = BGEM3Embeddings(model_name_or_path=str(tmp_path / "nothing"), device="cpu")
    with pytest.raises(ModelUnavailable, match="KOTAE_EMBEDDING_MODEL"):
        model.embed_query("hello")


@pytest.mark.parametrize("head", ["colbert_linear.pt", "sparse_linear.pt"])
def test_checkpoint_without_a_head_is_refused(tiny_model_dir: Path, tmp_path: Path,
                                              head: str) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(tiny_model_dir, partial)
    (partial / head).unlink()
    model = BGEM3Embeddings(model_name_or_path=str(partial), device="cpu")
    with pytest.raises(ModelUnavailable, match=head):
        model.embed_documents(["x"])


def test_cuda_requested_without_gpu_is_a_clear_error(tiny_model_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    model = BGEM3Embeddings(model_name_or_path=str(tiny_model_dir), device="cuda")
    with pytest.raises(ModelUnavailable, match="KOTAE_EMBEDDING_DEVICE"):
        model.embed_query("x")


def test_defaults_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOTAE_EMBEDDING_MODEL", "/models/bge-m3")
    monkeypatch.setenv("KOTAE_EMBEDDING_BATCH_SIZE", "7")
    model = BGEM3Embeddings()
    assert (model.model_name_or_path, model.batch_size) == ("/models/bge-m3", 7)


class TestBGEM3EmbeddingsStandardUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[BGEM3Embeddings]:
        return BGEM3Embeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model_name_or_path": "BAAI/bge-m3", "device": "cpu"}

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        return ({"KOTAE_EMBEDDING_MODEL": "/models/bge-m3", "KOTAE_EMBEDDING_DEVICE": "cpu"},
                {}, {"model_name_or_path": "/models/bge-m3", "device": "cpu"})


class TestBGEM3EmbeddingsStandardIntegration(EmbeddingsIntegrationTests):
    @pytest.fixture(autouse=True)
    def _model_path(self, tiny_model_dir: Path) -> None:
        self._path = str(tiny_model_dir)

    @property
    def embeddings_class(self) -> type[BGEM3Embeddings]:
        return BGEM3Embeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model_name_or_path": self._path, "device": "cpu"}


def test_colbert_scores_on_device_equal_the_per_pair_definition(
        embeddings: BGEM3Embeddings) -> None:
    from retrieval.retriever import colbert_score

    query = embeddings.encode_query("経費精算の締め切り", colbert=True).colbert
    assert query is not None
    passages = embeddings.encode_passages(TEXTS, colbert=True).colbert
    assert passages is not None
    expected = [colbert_score(query[0], vecs) for vecs in passages]
    # batched with padding (TEXTS differ in length): padding must not change any score
    np.testing.assert_allclose(embeddings.colbert_scores(query[0], TEXTS), expected, atol=1e-5)


def test_concurrent_queries_and_passages_share_the_tokenizer_safely(
        embeddings: BGEM3Embeddings) -> None:
    """A reindex (passage length) beside live queries (query length) in other threads."""
    expected_query = embeddings.encode_query("経費精算の締め切り").dense[0]
    expected_passages = embeddings.encode_passages(TEXTS).dense
    failures: list[str] = []

    def worker(number: int) -> None:
        for _ in range(15):
            try:
                if number % 2:
                    got = embeddings.encode_query("経費精算の締め切り").dense[0]
                    np.testing.assert_allclose(got, expected_query, atol=1e-5)
                else:
                    got = embeddings.encode_passages(TEXTS).dense
                    np.testing.assert_allclose(got, expected_passages, atol=1e-5)
            except Exception as error:  # collected and reported below
                failures.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
