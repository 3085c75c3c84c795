"""Part `search`: dense top-10 latency and recall, GPU flat vs CPU flat / HNSW / IVF, and our
HybridStore served on the GPU."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ms, p50, p99, secs, table
from bench.gpu.config import DIM, RECALL_TARGET, Config, K
from bench.gpu.measure import error_text, latencies, log, no_gpu_reason, pct, recall_at_k
from bench.gpu.workspace import Workspace


@dataclass
class SearchRow:
    label: str
    size: int
    build_s: float | None = None
    recall: float | None = None
    param: str = ""
    single: list[float] = field(default_factory=list)
    batched: list[float] = field(default_factory=list)
    note: str = ""

    def cells(self) -> list[str]:
        if self.note and not self.single:
            return [f"{self.size:,}", self.label, "", "", "", "", "", "", "", self.note]
        single_p50, single_p99 = pct(self.single)
        batch_p50, batch_p99 = pct(self.batched)
        return [f"{self.size:,}", self.label,
                secs(self.build_s) if self.build_s is not None else "",
                f"{self.recall:.3f}" if self.recall is not None else "", self.param,
                single_p50, single_p99, batch_p50, batch_p99, self.note]

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "size": self.size, "build_s": self.build_s,
                "recall_at_10": self.recall, "param": self.param, "note": self.note,
                "single_p50_s": p50(self.single) if self.single else None,
                "single_p99_s": p99(self.single) if self.single else None,
                "batch32_p50_s": p50(self.batched) if self.batched else None,
                "batch32_p99_s": p99(self.batched) if self.batched else None,
                "single_samples": len(self.single), "batch_samples": len(self.batched)}


def measure_index(label: str, search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
                  queries: np.ndarray, truth: np.ndarray, cfg: Config, device: str,
                  build_s: float | None, size: int, param: str = "", note: str = "",
                  id_offset: int = 0) -> SearchRow:
    """Recall@10 over all queries (batched), then single-query and batch-of-32 latency."""
    _, found = search(queries, K)
    recall = recall_at_k(found - id_offset, truth)
    nq = len(queries)
    single = latencies(lambda i: search(queries[i % nq:i % nq + 1], K), cfg.latency_queries,
                       cfg.max_latency_s, device)
    batches = max(1, nq // 32)
    batched = latencies(lambda i: search(queries[(i % batches) * 32:(i % batches) * 32 + 32], K),
                        cfg.latency_batches, cfg.max_latency_s, device, minimum=3)
    log(f"  {label} @ {size:,}: recall@10 {recall:.3f}, p50 single {ms(p50(single))}, "
        f"batch-32 {ms(p50(batched))}")
    return SearchRow(label, size, build_s, recall, param, single, batched, note)


def tune(index_search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
         set_param: Callable[[int], None], values: Sequence[int], queries: np.ndarray,
         truth: np.ndarray) -> tuple[int, float, bool]:
    """The smallest parameter value reaching RECALL_TARGET (or the last tried)."""
    recall = 0.0
    for value in values:
        set_param(value)
        _, found = index_search(queries, K)
        recall = recall_at_k(found, truth)
        if recall >= RECALL_TARGET:
            return value, recall, True
    return values[-1], recall, False


def gpu_clone(ws: Workspace, cpu_index: Any, fp16: bool) -> tuple[Any, float]:
    """The HybridStore way: index_cpu_to_gpu with GpuClonerOptions.useFloat16."""
    import faiss

    options = faiss.GpuClonerOptions()
    options.useFloat16 = fp16
    started = time.perf_counter()
    index = faiss.index_cpu_to_gpu(ws.gpu_resources(), 0, cpu_index, options)
    return index, time.perf_counter() - started


def locked(ws: Workspace, index: Any) -> Callable[[np.ndarray, int], tuple[np.ndarray,
                                                                          np.ndarray]]:
    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with ws.gpu_lock:
            return index.search(queries, k)
    return search


def run(ws: Workspace, cfg: Config) -> tuple[str, dict[str, Any]]:
    import faiss

    rows: list[SearchRow] = []
    for n in cfg.sizes:
        log(f"search: {n:,} vectors")
        queries = ws.queries(n)
        cpu_flat, flat_build = ws.cpu_flat(n)
        truth = ws.truth(n)
        gpu_device = cfg.accel if cfg.faiss_gpu else "cpu"
        for fp16 in (False, True):
            label = f"GPU flat {'float16' if fp16 else 'float32'} (HybridStore layout)"
            if not cfg.faiss_gpu:
                rows.append(SearchRow(label, n, note=no_gpu_reason(cfg)))
                continue
            try:
                gpu_index, clone_s = gpu_clone(ws, cpu_flat, fp16)
                rows.append(measure_index(label, locked(ws, gpu_index), queries, truth, cfg,
                                          gpu_device, clone_s, n, note="build = clone from CPU"))
                del gpu_index
            except RuntimeError as error:
                rows.append(SearchRow(label, n, note=f"failed: {error_text(error)}"))
        rows.append(measure_index("CPU flat (IndexFlatIP, exact)", cpu_flat.search, queries,
                                  truth, cfg, "cpu", flat_build, n))
        rows.append(search_hnsw(ws, cfg, n, queries, truth))
        rows.append(search_ivf(ws, cfg, n, queries, truth, faiss))
        if n == cfg.store_size:
            rows.extend(search_hybrid_store(ws, cfg, n, queries, truth))
        ws.forget_dense(keep=max(cfg.sizes))

    header = ["vectors", "index", "build", "recall@10", "tuned", "1 query p50", "1 query p99",
              "32 queries p50", "32 queries p99", "note"]
    markdown = "\n\n".join([
        f"### 2. Dense search, k = {K}, {DIM}-d normalised float32 vectors (latent dim "
        f"{cfg.latent_dim} + noise), {cfg.queries} queries = perturbed stored vectors",
        f"Recall@10 against exact search over all {cfg.queries} queries; latency over up to "
        f"{cfg.latency_queries} single queries and {cfg.latency_batches} batches of 32 (each "
        f"contender at most {cfg.max_latency_s:.0f} s, after 3 warm-up calls). GPU searches hold "
        f"a lock, as HybridStore's do. HNSW: M 32, efConstruction 40, efSearch raised until "
        f"recall@10 ≥ {RECALL_TARGET}; IVF: nlist ≈ 4·√N trained on 39·nlist vectors (10 "
        f"k-means iterations), nprobe raised the same way. torch/faiss threads: {cfg.threads}.",
        table(header, [row.cells() for row in rows]),
    ])
    return markdown, {"rows": [row.as_dict() for row in rows]}


def search_hnsw(ws: Workspace, cfg: Config, n: int, queries: np.ndarray,
                truth: np.ndarray) -> SearchRow:
    import faiss

    label = "CPU HNSW (IndexHNSWFlat, M 32)"
    if n > cfg.hnsw_max:
        return SearchRow(label, n, note=f"skipped: above --hnsw-max {cfg.hnsw_max:,} (build "
                         "time; raise it to measure)")
    log(f"  building HNSW over {n:,}")
    vectors = ws.vectors(n)
    started = time.perf_counter()
    index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
    for start in range(0, n, 100_000):
        index.add(vectors[start:start + 100_000])
    build_s = time.perf_counter() - started

    def set_ef(value: int) -> None:
        index.hnsw.efSearch = value

    ef, _, reached = tune(index.search, set_ef, [16, 32, 64, 128, 256, 512, 1024, 2048],
                          queries, truth)
    return measure_index(label, index.search, queries, truth, cfg, "cpu", build_s, n,
                         param=f"efSearch {ef}",
                         note="" if reached else f"recall target not reached at efSearch {ef}")


def search_ivf(ws: Workspace, cfg: Config, n: int, queries: np.ndarray, truth: np.ndarray,
               faiss: Any) -> SearchRow:
    nlist = max(1, round(4 * math.sqrt(n)))
    log(f"  training IVF{nlist} over {n:,}")
    vectors = ws.vectors(n)
    rng = np.random.default_rng(cfg.seed + 7)
    sample = vectors[np.sort(rng.choice(n, size=min(n, 39 * nlist), replace=False))]
    started = time.perf_counter()
    quantizer = faiss.IndexFlatIP(DIM)
    index = faiss.IndexIVFFlat(quantizer, DIM, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10
    index.train(sample)
    for start in range(0, n, 100_000):
        index.add(vectors[start:start + 100_000])
    build_s = time.perf_counter() - started
    probes = sorted({min(nlist, 2 ** i) for i in range(0, int(math.log2(nlist)) + 2)})

    def set_nprobe(value: int) -> None:
        index.nprobe = value

    nprobe, _, reached = tune(index.search, set_nprobe, probes, queries, truth)
    row = measure_index(f"CPU IVF (IndexIVFFlat, nlist {nlist})", index.search, queries, truth,
                        cfg, "cpu", build_s, n, param=f"nprobe {nprobe}",
                        note="" if reached else f"recall target not reached at nprobe {nprobe}")
    index.reset()
    return row


def search_hybrid_store(ws: Workspace, cfg: Config, n: int, queries: np.ndarray,
                        truth: np.ndarray) -> list[SearchRow]:
    """Our HybridStore, built the way the Indexer builds a version (add in batches, save) and
    served the way LiveIndex serves it (reopened read-only on the configured device)."""
    from retrieval.store import HybridStore

    vectors = ws.vectors(n)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kotae-bench-gpu-") as tmp:
        folder = Path(tmp) / "version"
        log(f"  HybridStore: adding {n:,} chunks")
        started = time.perf_counter()
        store = HybridStore(folder, DIM, device="cpu")
        for start in range(0, n, 10_000):
            end = min(n, start + 10_000)
            store.add([f"c{i}" for i in range(start, end)],
                      [f"chunk {i}" for i in range(start, end)],
                      [{"source": f"doc-{i // 20}"} for i in range(start, end)],
                      vectors[start:end],
                      [{4 + i % 5000: 0.1, 5004 + i % 7: 0.05} for i in range(start, end)])
        store.save()
        store.close()
        build_s = time.perf_counter() - started
        variants = ([("cuda", False), ("cuda", True)] if cfg.faiss_gpu else [("cpu", False)])
        for device, fp16 in variants:
            label = (f"HybridStore.search_dense, device={device}"
                     + (", gpu_fp16" if fp16 else ""))
            try:
                served = HybridStore(folder, DIM, device=device, gpu_fp16=fp16, read_only=True)
                if device == "cuda" and not served.on_gpu:
                    raise RuntimeError("HybridStore did not clone its index to the GPU")
                # SQLite row ids are 1..n in insertion order: id - 1 is the vector's position
                rows.append(measure_index(label, served.search_dense, queries, truth, cfg,
                                          cfg.accel if device == "cuda" else "cpu", build_s, n,
                                          note="build = add + save (SQLite, CSR, FAISS file)",
                                          id_offset=1))
                served.close()
            except RuntimeError as error:
                rows.append(SearchRow(label, n, note=f"failed: {error_text(error)}"))
        if not cfg.faiss_gpu:
            rows.append(SearchRow("HybridStore.search_dense, device=cuda", n,
                                  note=no_gpu_reason(cfg)))
    return rows
