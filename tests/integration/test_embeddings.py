"""BGEM3Embeddings against the real FlagEmbedding code path on a tiny bge-m3-shaped model."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from retrieval.embeddings import BGEM3Embeddings
from retrieval.errors import ModelUnavailable
from retrieval.settings import Settings

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


def test_a_texts_sparse_weights_in_a_batch_are_its_weights_alone_bit_for_bit(
        embeddings: BGEM3Embeddings) -> None:
    # 48 texts cut to 30 tokens: one unpadded batch whose shape made FlagEmbedding's
    # whole-batch sparse head differ from the text alone in the last bit (12 of 48 texts,
    # up to 2.4e-7, before the head ran per text in retrieval.m3_forward)
    texts = [f"{i} " + " ".join(TEXTS[(i + j) % len(TEXTS)] for j in range(3)) for i in range(48)]
    batch = embeddings.encode(texts, max_tokens=30, batch_size=len(texts))
    assert min(embeddings.passage_token_counts(texts)) >= 30  # all cut to 30: no padding
    for text, dense, weights in zip(texts, batch.dense, batch.sparse, strict=True):
        alone = embeddings.flag_model.encode([text], max_length=30, return_dense=True,
                                             return_sparse=True)
        np.testing.assert_array_equal(dense, alone["dense_vecs"][0])
        assert weights == {int(token): float(w) for token, w in
                           alone["lexical_weights"][0].items()}


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
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads HF_HUB_OFFLINE once, at import (already done in this session)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = BGEM3Embeddings(model_name_or_path="no-such-org/no-such-model", device="cpu")
    with pytest.raises(ModelUnavailable, match="KOTAE_EMBEDDING_MODEL") as failure:
        model.embed_query("hello")
    assert "HF_HUB_OFFLINE is set" in str(failure.value)


def test_missing_folder_fails_with_the_setting_named(tmp_path: Path) -> None:
    model = BGEM3Embeddings(model_name_or_path=str(tmp_path / "nothing"), device="cpu")
    with pytest.raises(ModelUnavailable, match="KOTAE_EMBEDDING_MODEL"):
        model.embed_query("hello")


@pytest.mark.parametrize("value", [
    "/no/such/folder", "./typo-folder", "../typo-folder", "~/no-such-kotae-model",
    "models/bge-m3/extra",
])
def test_a_folder_that_is_not_there_is_named_as_a_folder(value: str) -> None:
    """Not "download failed (HFValidationError)": the value was meant as a path."""
    model = BGEM3Embeddings(model_name_or_path=value, device="cpu")
    with pytest.raises(ModelUnavailable) as failure:
        model.embed_query("hello")
    message = str(failure.value)
    assert message.startswith(f"KOTAE_EMBEDDING_MODEL={value}: no such folder")
    assert "BAAI/bge-m3" in message and "download failed" not in message
    assert "\n" not in message and "Traceback" not in message


def test_a_path_whose_first_part_exists_is_a_folder_not_a_hub_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    model = BGEM3Embeddings(model_name_or_path="models/bge-m3", device="cpu")
    with pytest.raises(ModelUnavailable,
                       match=re.escape("KOTAE_EMBEDDING_MODEL=models/bge-m3: no such folder")):
        model.embed_query("hello")


def test_a_value_neither_folder_nor_hub_id_says_so() -> None:
    model = BGEM3Embeddings(model_name_or_path="bge m3 (typo)", device="cpu")
    with pytest.raises(ModelUnavailable) as failure:
        model.embed_query("hello")
    message = str(failure.value)
    assert message.startswith("KOTAE_EMBEDDING_MODEL=bge m3 (typo): no such folder, and not a "
                              "valid Hugging Face model id")
    assert "HFValidationError" not in message and "\n" not in message


def test_a_file_is_not_a_model_folder(tmp_path: Path) -> None:
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"")
    model = BGEM3Embeddings(model_name_or_path=str(file), device="cpu")
    with pytest.raises(ModelUnavailable, match="that is a file, not a folder"):
        model.embed_query("hello")


@pytest.mark.parametrize(("removed", "named"), [
    ("config.json", "config.json"),
    ("model.safetensors", "the model weights (model.safetensors or pytorch_model.bin)"),
    ("tokenizer.json", "the tokenizer (tokenizer.json or sentencepiece.bpe.model)"),
])
def test_a_folder_missing_a_file_names_it(tiny_model_dir: Path, tmp_path: Path, removed: str,
                                          named: str) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(tiny_model_dir, partial)
    (partial / removed).unlink()
    model = BGEM3Embeddings(model_name_or_path=str(partial), device="cpu")
    with pytest.raises(ModelUnavailable) as failure:
        model.embed_query("hello")
    message = str(failure.value)
    assert message.startswith(f"KOTAE_EMBEDDING_MODEL={partial}: the folder {partial} is not a "
                              f"complete bge-m3 checkpoint: it lacks {named}.")
    assert "\n" not in message and "Traceback" not in message


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


def test_given_fields_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOTAE_EMBEDDING_BATCH_SIZE", "7")
    monkeypatch.setenv("KOTAE_QUERY_MAX_TOKENS", "99")
    model = BGEM3Embeddings(batch_size=None, device="cpu")
    assert (model.batch_size, model.device, model.query_max_tokens) == (None, "cpu", 99)


def test_from_settings_maps_every_embedding_setting() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        embedding_model="/m", embedding_device="cuda:1", embedding_fp16=True,
        embedding_batch_size=3, embedding_cpu_threads=2, passage_max_tokens=300,
        query_max_tokens=40)
    model = BGEM3Embeddings.from_settings(settings)
    assert (model.model_name_or_path, model.device, model.use_fp16, model.batch_size,
            model.cpu_threads, model.passage_max_tokens, model.query_max_tokens) == (
        "/m", "cuda:1", True, 3, 2, 300, 40)


def test_importing_the_module_loads_no_torch_and_no_flagembedding() -> None:
    """`kotae status` and `--help` import this module; torch + FlagEmbedding cost seconds."""
    heavy = ("torch", "FlagEmbedding", "transformers", "faiss")
    code = ("import sys, retrieval.embeddings; "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.strip() == "[]"


def test_a_missing_model_fails_before_torch_is_imported() -> None:
    code = ("import sys\n"
            "from retrieval.embeddings import BGEM3Embeddings\n"
            "from retrieval.errors import ModelUnavailable\n"
            "try:\n"
            "    BGEM3Embeddings(model_name_or_path='./no-such-folder', device='auto').flag_model\n"
            "except ModelUnavailable:\n"
            "    print('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.strip() == "False"


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
