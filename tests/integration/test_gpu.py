"""GPU paths: FAISS on the GPU with a CPU copy for persistence/deletes, thread-safe searches,
fp16 bge-m3 on cuda. Skipped with the reason on machines without an NVIDIA GPU + faiss-gpu."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from retrieval.embeddings import BGEM3Embeddings
from retrieval.store import HybridStore

pytestmark = pytest.mark.gpu
DIM = 64


def vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(n, DIM)).astype(np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def filled(folder: Path, device: str, data: np.ndarray, gpu_fp16: bool = False) -> HybridStore:
    store = HybridStore(folder, DIM, device=device, gpu_fp16=gpu_fp16)
    ids = [f"c{i}" for i in range(len(data))]
    store.add(ids, ids, [{"source": f"s{i % 7}"} for i in range(len(data))], data,
              [{i % 50 + 3: 1.0} for i in range(len(data))])
    store.save()
    return store


@pytest.mark.parametrize(("gpu_fp16", "tolerance"), [(False, 1e-4), (True, 2e-3)])
def test_gpu_index_matches_cpu_index(tmp_path: Path, gpu_fp16: bool, tolerance: float) -> None:
    data = vectors(5000)
    queries = vectors(20, seed=1)
    cpu = filled(tmp_path / "cpu", "cpu", data)
    gpu = filled(tmp_path / "gpu", "cuda", data, gpu_fp16=gpu_fp16)
    assert gpu.on_gpu and not cpu.on_gpu
    cpu_scores, cpu_ids = cpu.search_dense(queries, 10)
    gpu_scores, gpu_ids = gpu.search_dense(queries, 10)
    np.testing.assert_allclose(gpu_scores, cpu_scores, atol=tolerance)
    # same top-k order, except where two scores tie within the tolerance
    for row in range(len(queries)):
        for rank in range(10):
            if gpu_ids[row, rank] != cpu_ids[row, rank]:
                assert abs(gpu_scores[row, rank] - cpu_scores[row, rank]) <= tolerance


def test_deletes_and_persistence_go_through_the_cpu_copy(tmp_path: Path) -> None:
    data = vectors(500)
    store = filled(tmp_path, "cuda", data)
    removed = store.delete_source("s3")
    assert removed > 0 and store.count == 500 - removed
    store.save()  # writes the CPU copy and re-clones it onto the GPU
    _scores, ids = store.search_dense(data[3:4], 1)  # c3 belonged to source s3
    assert store.get_rows([int(ids[0][0])])[int(ids[0][0])].chunk_id != "c3"
    store.close()
    reopened = HybridStore(tmp_path, DIM, device="cuda", read_only=True)
    assert reopened.on_gpu and reopened.count == 500 - removed
    scores, ids = reopened.search_dense(data[4:5], 1)
    assert reopened.get_rows([int(ids[0][0])])[int(ids[0][0])].chunk_id == "c4"
    assert scores[0][0] == pytest.approx(1.0, abs=1e-4)


def test_concurrent_gpu_searches_are_safe(tmp_path: Path) -> None:
    data = vectors(3000)
    store = filled(tmp_path, "cuda", data)
    expected = {i: store.search_dense(data[i:i + 1], 5)[1][0].tolist() for i in range(64)}
    failures: list[str] = []

    def worker(offset: int) -> None:
        for round_ in range(40):
            i = (offset * 7 + round_) % 64
            got = store.search_dense(data[i:i + 1], 5)[1][0].tolist()
            if got != expected[i]:
                failures.append(f"query {i}: {got} != {expected[i]}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_fp16_cuda_embeddings_match_cpu_float32(tiny_model_dir: Path,
                                                embeddings: BGEM3Embeddings) -> None:
    gpu = BGEM3Embeddings(model_name_or_path=str(tiny_model_dir), device="cuda",
                          batch_size=8, query_max_tokens=embeddings.query_max_tokens)
    texts = ["経費精算の締め切りは毎月25日です。", "On-call handoff is every Monday.",
             "FAISS keeps dense vectors on the GPU. " * 10]
    assert gpu.resolved_device.startswith("cuda")
    assert next(gpu.flag_model.model.parameters()).dtype.is_floating_point
    on_gpu = gpu.encode_passages(texts, colbert=True)
    on_cpu = embeddings.encode_passages(texts, colbert=True)
    cosine = np.sum(on_gpu.dense * on_cpu.dense, axis=1)
    assert cosine.min() >= 0.999
    assert on_gpu.dense.dtype == np.float32
    for gpu_weights, cpu_weights in zip(on_gpu.sparse, on_cpu.sparse, strict=True):
        assert set(gpu_weights) == set(cpu_weights)
    assert on_gpu.colbert is not None and on_cpu.colbert is not None
    for gpu_vecs, cpu_vecs in zip(on_gpu.colbert, on_cpu.colbert, strict=True):
        assert gpu_vecs.shape == cpu_vecs.shape


def test_gpu_copy_follows_adds_without_a_save(tmp_path: Path) -> None:
    store = filled(tmp_path, "cuda", vectors(100))
    extra = vectors(1, seed=42)
    store.add(["new"], ["new"], [{"source": "n"}], extra, [{1: 1.0}])
    scores, ids = store.search_dense(extra, 1)
    assert store.get_rows([int(ids[0][0])])[int(ids[0][0])].chunk_id == "new"
    assert scores[0][0] == pytest.approx(1.0, abs=1e-4)
