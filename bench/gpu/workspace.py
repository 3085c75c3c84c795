"""What several parts share, built on first use and kept for the run: the models, the
vectors, the exact-search indexes and ground truth, the FAISS GPU resources."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from bench.common import ensure_model
from bench.gpu.config import DIM, Config, K
from bench.gpu.measure import log, sync
from bench.gpu.synthetic import single_token_words, synthetic_vectors


class Workspace:
    """What several parts share, built on first use: the models, the vectors, the indexes."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._embeddings: Any = None
        self._cpu_embeddings: Any = None
        self.model_memory: dict[str, int] = {}
        self._vectors: dict[int, np.ndarray] = {}
        self._queries: dict[tuple[int, int], np.ndarray] = {}
        self._flat: dict[tuple[int, int], tuple[Any, float]] = {}
        self._truth: dict[tuple[int, int], np.ndarray] = {}
        self._gpu_resources: Any = None
        self.gpu_lock = threading.Lock()  # GPU searches are serialised, as HybridStore does
        self._words: list[str] | None = None

    # models

    def embeddings(self) -> Any:
        """BGEM3Embeddings on the accelerator: fp16 on the GPU (the product default there)."""
        if self._embeddings is None:
            from retrieval.embeddings import BGEM3Embeddings

            path = ensure_model(self.cfg.model_dir, self.cfg.model_shape)
            on_gpu = self.cfg.accel.startswith("cuda")
            before = gpu_free() if on_gpu else 0
            self._embeddings = BGEM3Embeddings(
                model_name_or_path=str(path), device=self.cfg.accel, use_fp16=on_gpu,
                batch_size=self.cfg.batch_sizes[0], passage_max_tokens=max(self.cfg.lengths),
                query_max_tokens=64)
            log(f"loading {self.cfg.model_shape} model on {self.cfg.accel}")
            _ = self._embeddings.flag_model
            if on_gpu:
                import torch

                sync(self.cfg.accel)
                self.model_memory = {"free_delta": before - gpu_free(),
                                     "allocated": int(torch.cuda.memory_allocated())}
        return self._embeddings

    def cpu_embeddings(self) -> Any:
        """The same checkpoint in float32 on the CPU cores, for contender (c)."""
        if self.cfg.dry_run:
            return self.embeddings()
        if self._cpu_embeddings is None:
            from retrieval.embeddings import BGEM3Embeddings

            self._cpu_embeddings = BGEM3Embeddings(
                model_name_or_path=str(self.cfg.model_dir), device="cpu", use_fp16=False,
                batch_size=8, passage_max_tokens=max(self.cfg.lengths), query_max_tokens=64)
            log("loading the float32 model on the CPU")
            _ = self._cpu_embeddings.flag_model
        return self._cpu_embeddings

    def words(self) -> list[str]:
        if self._words is None:
            self._words = single_token_words(self.embeddings().flag_model.tokenizer)
        return self._words

    # dense vectors

    def vectors(self, n: int, dim: int = DIM) -> np.ndarray:
        """The first n of one synthetic collection per dimension (sizes share a prefix)."""
        have = self._vectors.get(dim)
        if have is None or len(have) < n:
            largest = max([n, *(s for s in self.cfg.sizes if dim == DIM)])
            log(f"generating {largest:,} x {dim} vectors (latent dim {self.cfg.latent_dim})")
            self._vectors[dim] = synthetic_vectors(largest, dim, self.cfg.latent_dim,
                                                   np.random.default_rng(self.cfg.seed + dim))
        return self._vectors[dim][:n]

    def queries(self, n: int, dim: int = DIM) -> np.ndarray:
        """Perturbed copies of stored vectors: the source is the exact top-1."""
        key = (n, dim)
        if key not in self._queries:
            rng = np.random.default_rng(self.cfg.seed + n)
            picks = rng.integers(0, n, size=self.cfg.queries)
            found = self.vectors(n, dim)[picks] + 0.01 * rng.standard_normal(
                (self.cfg.queries, dim), dtype=np.float32)
            found /= np.linalg.norm(found, axis=1, keepdims=True)
            self._queries[key] = np.ascontiguousarray(found, dtype=np.float32)
        return self._queries[key]

    def cpu_flat(self, n: int, dim: int = DIM) -> tuple[Any, float]:
        """CPU IndexFlatIP over the first n vectors, and its build seconds."""
        import faiss

        key = (n, dim)
        if key not in self._flat:
            vectors = self.vectors(n, dim)
            started = time.perf_counter()
            index = faiss.IndexFlatIP(dim)
            for start in range(0, n, 100_000):
                index.add(vectors[start:start + 100_000])
            self._flat[key] = (index, time.perf_counter() - started)
        return self._flat[key]

    def truth(self, n: int, dim: int = DIM) -> np.ndarray:
        """Exact top-K ids of the query set (batched CPU flat search)."""
        key = (n, dim)
        if key not in self._truth:
            index, _ = self.cpu_flat(n, dim)
            _, ids = index.search(self.queries(n, dim), K)
            self._truth[key] = ids
        return self._truth[key]

    def gpu_resources(self) -> Any:
        """One StandardGpuResources, already initialised (handles, temporary memory), so the
        first clone's time and memory are the index's own."""
        if self._gpu_resources is None:
            self._gpu_resources = warmed_gpu_resources()
        return self._gpu_resources

    def forget_dense(self, keep: int) -> None:
        """Drop flat indexes of other sizes (4 GB per million float32 vectors)."""
        for key in [k for k in self._flat if k[0] != keep]:
            del self._flat[key]


def warmed_gpu_resources() -> Any:
    import faiss

    resources = faiss.StandardGpuResources()
    tiny = faiss.IndexFlatIP(DIM)
    tiny.add(np.eye(8, DIM, dtype=np.float32))
    warm = faiss.index_cpu_to_gpu(resources, 0, tiny)
    warm.search(np.eye(2, DIM, dtype=np.float32), 2)
    del warm
    return resources


def gpu_free() -> int:
    import torch

    free, _total = torch.cuda.mem_get_info(0)
    return int(free)
