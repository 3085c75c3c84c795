"""GPU benchmarks for the product's main deployment (bge-m3 + FAISS on one NVIDIA GPU), each
contender side by side with its baseline in the same run on the same machine.

    python -m bench.gpu                      # all parts, default sizes (H100: ~15 min)
    python -m bench.gpu --only embed         # one part per call (the lent machine: 10 min a call)
    python -m bench.gpu --quick              # small sizes
    python -m bench.gpu --cpu-dry-run        # any machine: TINY model, tiny sizes, all on CPU

Parts (`--only`, comma-separated):

embed   passages/s at 256 and 512 tokens on the real bge-m3 architecture (random weights):
        (a) BGEM3Embeddings.encode_passages on the GPU in fp16 vs (b) FlagEmbedding's own
        BGEM3FlagModel.encode on the same model object vs (c) float32 on this machine's CPU
        cores; batch sizes 32/64/128, best of each; outputs of (a) and (b) compared. When (a)
        is not 1.5x (b), "candidate" rows time variants of the same forward pass (bf16, attention
        kernels, larger batches, no per-batch sync, token-budget
        batches) so the next change to BGEM3Embeddings is chosen from numbers.
search  dense top-10 latency p50/p99 (one query, batches of 32) at each size: GPU flat float32
        and float16 (the HybridStore layout) vs CPU flat, CPU HNSW and CPU IVF (each tuned to
        recall@10 >= 0.95 against exact search); build time and recall. Then our HybridStore
        served read-only on the GPU at 100k, to show the product path matches raw FAISS.
e2e     one query end to end at 1M chunks: query embedding on the GPU + dense top-50 on the
        GPU index + sparse scores over a 1M-chunk CSR + the retriever's merge, with (mode all)
        and without (mode hybrid) the ColBERT rerank that re-encodes every candidate (dense ∪
        sparse top-50); per-stage p50, total p50/p99; candidate rows for the rerank.
memory  GPU memory of the 1M index (float32, float16), FAISS temporary memory, and the model.

Results: the `gpu` (`gpu-quick`) section of bench/RESULTS.md and raw numbers in `--out`
(bench/gpu_results.json). Parts run in separate calls are merged through that JSON when the
device is the same, so `--only embed` then `--only search` yields one section. A dry run
writes neither unless `--out`/`--section` are given. See bench/GPU.md for the lent machine.

Synthetic data, and why:
- passages are made of words that are exactly one token each, so a passage has exactly the
  token count asked for (the mean is printed);
- dense vectors are normalised 1024-d vectors with a low-dimensional latent structure
  (`--latent-dim`, default 32, plus per-vector noise): i.i.d. 1024-d Gaussians have no
  neighbourhoods, so no approximate index reaches recall 0.95 on them and the ANN rows would
  be meaningless. Queries are perturbed copies of stored vectors;
- sparse weights: ~60 distinct tokens per chunk, Zipf-like over a 250k vocabulary (bge-m3's
  vocabulary size), laid out as HybridStore lays them out (tokens x chunks CSR).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    BENCH_DIR,
    BGE_M3_ARCH_DIR,
    RESULTS_FILE,
    TINY_DIR,
    cpu_count,
    ensure_model,
    human_bytes,
    load_average,
    machine_markdown,
    met,
    ms,
    p50,
    p99,
    package_version,
    secs,
    set_threads,
    table,
    write_section,
)

PARTS = ("embed", "search", "e2e", "memory")
DIM = 1024
K = 10
RECALL_TARGET = 0.95
GOAL_PASSAGES_PER_S = 1000.0  # at 512 tokens, one H100
GOAL_SPEEDUP = 1.5  # (a) over (b)
GOAL_E2E_P50_S = 0.010
REAL_VOCAB = 250_002  # BAAI/bge-m3's tokenizer
SKIP_NO_GPU = "skipped: no GPU"
DEFAULT_OUT = BENCH_DIR / "gpu_results.json"


# --------------------------------------------------------------------------- configuration


@dataclass
class Config:
    """Every size of one run, from the preset (default, --quick, --cpu-dry-run) and flags."""

    dry_run: bool
    accel: str  # "cuda:0" on the GPU machine, "cpu" in a dry run
    faiss_gpu: bool
    model_dir: Path
    model_shape: str
    lengths: list[int]
    batch_sizes: list[int]
    large_batch_sizes: list[int]
    passages: int  # per GPU measurement (>= 512 on a GPU)
    cpu_passages: int
    rounds: int
    candidates: str  # auto | always | never
    sizes: list[int]
    queries: int  # query vectors per size (recall over all of them)
    latency_queries: int  # single-query latency samples (time-bounded)
    latency_batches: int  # batches of 32 (time-bounded)
    max_latency_s: float  # per contender and query shape
    latent_dim: int
    hnsw_max: int
    store_size: int
    e2e_size: int
    e2e_queries: int
    vocab: int
    sparse_tokens: int
    query_sparse_tokens: int
    candidates_n: int
    colbert_tokens: int
    query_tokens: int
    seed: int
    threads: int
    parts: set[str] = field(default_factory=set)


def build_config(args: argparse.Namespace) -> Config:
    import torch

    from retrieval.store import faiss_has_gpu

    has_cuda = torch.cuda.is_available()
    if not args.cpu_dry_run and not has_cuda:
        raise SystemExit("bench.gpu: torch sees no CUDA GPU here. Use --cpu-dry-run to check the "
                         "script end to end on CPU, or run it on the GPU machine (bench/GPU.md).")
    if args.cpu_dry_run:
        preset: dict[str, Any] = dict(
            lengths="256,512", batch_sizes="8,16", large_batch_sizes="32", passages=32,
            cpu_passages=8, rounds=1, sizes="2000,5000", queries=40, latency_queries=20,
            latency_batches=3, max_latency_s=2.0, hnsw_max=5000, store_size=2000,
            e2e_size=5000, e2e_queries=5, vocab=20_000, candidates_n=20, colbert_tokens=64,
            candidates="always")
    elif args.quick:
        preset = dict(
            lengths="256,512", batch_sizes="32,64,128", large_batch_sizes="256", passages=512,
            cpu_passages=8, rounds=2, sizes="100000", queries=200, latency_queries=100,
            latency_batches=10, max_latency_s=10.0, hnsw_max=100_000, store_size=100_000,
            e2e_size=100_000, e2e_queries=30, vocab=250_000, candidates_n=50,
            colbert_tokens=256, candidates="auto")
    else:
        preset = dict(
            lengths="256,512", batch_sizes="32,64,128", large_batch_sizes="256,512",
            passages=1024, cpu_passages=16, rounds=3, sizes="100000,1000000", queries=200,
            latency_queries=200, latency_batches=20, max_latency_s=20.0, hnsw_max=1_000_000,
            store_size=100_000, e2e_size=1_000_000, e2e_queries=100, vocab=250_000,
            candidates_n=50, colbert_tokens=256, candidates="auto")
    for name, value in preset.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)

    def ints(text: str) -> list[int]:
        return [int(part) for part in str(text).split(",") if part.strip()]

    sizes = ints(args.sizes)
    parts = {part.strip() for part in args.only.split(",") if part.strip()}
    unknown = parts - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
    return Config(
        dry_run=args.cpu_dry_run, accel="cpu" if args.cpu_dry_run else "cuda:0",
        faiss_gpu=(not args.cpu_dry_run) and faiss_has_gpu(),
        model_dir=TINY_DIR if args.cpu_dry_run else BGE_M3_ARCH_DIR,
        model_shape="TINY" if args.cpu_dry_run else "BGE_M3",
        lengths=ints(args.lengths), batch_sizes=ints(args.batch_sizes),
        large_batch_sizes=ints(args.large_batch_sizes), passages=args.passages,
        cpu_passages=args.cpu_passages, rounds=args.rounds, candidates=args.candidates,
        sizes=sizes, queries=args.queries, latency_queries=args.latency_queries,
        latency_batches=args.latency_batches, max_latency_s=args.max_latency_s,
        latent_dim=args.latent_dim, hnsw_max=args.hnsw_max,
        store_size=args.store_size if args.store_size in sizes else min(sizes),
        e2e_size=args.e2e_size, e2e_queries=args.e2e_queries, vocab=args.vocab,
        sparse_tokens=args.sparse_tokens, query_sparse_tokens=args.query_sparse_tokens,
        candidates_n=args.candidates_n, colbert_tokens=args.colbert_tokens,
        query_tokens=args.query_tokens, seed=args.seed, threads=args.threads, parts=parts,
    )


# --------------------------------------------------------------------------- small helpers


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def sync(device: str) -> None:
    """Wait for queued GPU work, so a timer stops when the work is done, not when it is queued."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    sync(device)
    started = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - started, result


def latencies(fn: Callable[[int], Any], count: int, max_seconds: float, device: str,
              warmup: int = 3, minimum: int = 5) -> list[float]:
    """Seconds per call of `fn(i)` for i = 0..count-1, stopping early after `max_seconds`
    (but not before `minimum` calls): bounds the slow CPU contenders at 1M vectors."""
    for i in range(warmup):
        fn(i)
    samples: list[float] = []
    budget_start = time.perf_counter()
    for i in range(count):
        seconds, _ = timed(lambda i=i: fn(i), device)
        samples.append(seconds)
        if len(samples) >= minimum and time.perf_counter() - budget_start > max_seconds:
            break
    return samples


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def pct(samples: Sequence[float]) -> tuple[str, str]:
    return ms(p50(samples)), ms(p99(samples))


def no_gpu_reason(cfg: Config) -> str:
    return SKIP_NO_GPU if cfg.dry_run else "skipped: this faiss build has no GPU support"


def error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".replace("\n", " ").replace("|", "/")
    return text[:160] + ("…" if len(text) > 160 else "")


# --------------------------------------------------------------------------- the machine


def gpu_facts(cfg: Config) -> dict[str, Any]:
    """Device name, driver, CUDA and library versions (what makes numbers comparable)."""
    import torch

    facts: dict[str, Any] = {
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "faiss": _faiss_version(), "faiss_gpu_support": cfg.faiss_gpu,
        "faiss_package": next((f"{name} {package_version(name)}" for name in
                               ("faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cuvs", "faiss-cpu")
                               if package_version(name) != "not installed"), "unknown"),
        "FlagEmbedding": package_version("FlagEmbedding"),
        "transformers": package_version("transformers"),
    }
    if cfg.dry_run or not torch.cuda.is_available():
        facts["device"] = "cpu (dry run: no GPU used)"
        return facts
    props = torch.cuda.get_device_properties(0)
    facts.update(
        device=torch.cuda.get_device_name(0), memory=props.total_memory,
        capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
        cudnn=torch.backends.cudnn.version(), driver=_nvidia_smi("driver_version"),
        driver_cuda=_driver_cuda_version(),
        sdpa_flash=torch.backends.cuda.flash_sdp_enabled(),
        sdpa_mem_efficient=torch.backends.cuda.mem_efficient_sdp_enabled(),
    )
    return facts


def _faiss_version() -> str:
    import faiss

    return str(getattr(faiss, "__version__", "unknown"))


def _nvidia_smi(query: str) -> str:
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        return f"unknown ({type(error).__name__})"
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else "unknown"


def _driver_cuda_version() -> str:
    """The CUDA version the driver supports (nvidia-smi's header), e.g. 13.0."""
    try:
        done = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20,
                              check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for line in done.stdout.splitlines():
        if "CUDA Version" in line:
            return line.split("CUDA Version:")[1].strip(" |")
    return "unknown"


def facts_markdown(facts: dict[str, Any]) -> str:
    lines = [f"- device: **{facts['device']}**"]
    if "memory" in facts:
        lines.append(f"- GPU memory {human_bytes(facts['memory'])}, compute capability "
                     f"{facts['capability']}, {facts['multiprocessors']} SMs; driver "
                     f"{facts['driver']} (CUDA {facts['driver_cuda']}); torch CUDA "
                     f"{facts['torch_cuda']}, cuDNN {facts['cudnn']}; SDPA flash enabled "
                     f"{facts['sdpa_flash']}, mem-efficient enabled {facts['sdpa_mem_efficient']}")
    lines.append(f"- torch {facts['torch']}, faiss {facts['faiss']} ({facts['faiss_package']}, "
                 f"GPU support: {facts['faiss_gpu_support']}), FlagEmbedding "
                 f"{facts['FlagEmbedding']}, transformers {facts['transformers']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- shared state


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
            before = _gpu_free() if on_gpu else 0
            self._embeddings = BGEM3Embeddings(
                model_name_or_path=str(path), device=self.cfg.accel, use_fp16=on_gpu,
                batch_size=self.cfg.batch_sizes[0], passage_max_tokens=max(self.cfg.lengths),
                query_max_tokens=64)
            log(f"loading {self.cfg.model_shape} model on {self.cfg.accel}")
            _ = self._embeddings.flag_model
            if on_gpu:
                import torch

                sync(self.cfg.accel)
                self.model_memory = {"free_delta": before - _gpu_free(),
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


def _gpu_free() -> int:
    import torch

    free, _total = torch.cuda.mem_get_info(0)
    return int(free)


def synthetic_vectors(n: int, dim: int, latent_dim: int, rng: np.random.Generator,
                      chunk: int = 100_000) -> np.ndarray:
    """Normalised float32 vectors: a random projection of `latent_dim` Gaussians plus noise,
    generated in chunks so memory stays at the output's size. latent_dim 0 = i.i.d."""
    out = np.empty((n, dim), np.float32)
    projection = (rng.standard_normal((latent_dim, dim), dtype=np.float32)
                  / np.float32(math.sqrt(latent_dim))) if latent_dim else None
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        noise = rng.standard_normal((rows, dim), dtype=np.float32)
        if projection is not None:
            block = rng.standard_normal((rows, latent_dim), dtype=np.float32) @ projection
            block += np.float32(0.5) * noise
        else:
            block = noise
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + rows] = block
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int = K) -> float:
    hits = [len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth,
                                                                           strict=True)]
    return float(np.mean(hits)) / k


# --------------------------------------------------------------------------- synthetic text


def single_token_words(tokenizer: Any, limit: int = 20_000) -> list[str]:
    """Vocabulary pieces that are a whole word and come back as exactly one token: a text of
    n of them, space-separated, is exactly n tokens (+2 for <s> and </s>)."""
    specials = set(tokenizer.all_special_tokens)
    pieces = [piece[1:] for piece in tokenizer.get_vocab()
              if piece.startswith("▁") and len(piece) > 1 and piece not in specials
              and piece[1:].isprintable() and " " not in piece[1:]]
    pieces = sorted(set(pieces))[:limit]
    ids = tokenizer(pieces, add_special_tokens=False)["input_ids"]
    words = [word for word, word_ids in zip(pieces, ids, strict=True) if len(word_ids) == 1]
    if len(words) < 50:
        raise RuntimeError(f"only {len(words)} single-token words in this tokenizer")
    return words


def make_texts(words: list[str], count: int, tokens: int | Sequence[int],
               rng: np.random.Generator) -> list[str]:
    """`count` different texts of `tokens` tokens each (an int, or one length per text)."""
    lengths = [tokens] * count if isinstance(tokens, int) else list(tokens)
    return [" ".join(rng.choice(words, size=max(1, length - 2)).tolist()) for length in lengths]


def token_lengths(tokenizer: Any, texts: Sequence[str], max_length: int) -> np.ndarray:
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return np.asarray([len(ids) for ids in encoded])


# --------------------------------------------------------------------------- 1. embeddings


def dense_cosine_min(ours: np.ndarray, theirs: np.ndarray) -> float:
    a = np.asarray(ours, np.float32)
    b = np.asarray(theirs, np.float32)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


def sparse_agreement(ours: list[dict[int, float]], theirs: list[dict[Any, Any]]) -> tuple[
        float, float]:
    """(mean Jaccard of the token sets, max |weight difference| on shared tokens)."""
    jaccards, worst = [], 0.0
    for mine, other in zip(ours, theirs, strict=True):
        other_f = {int(k): float(v) for k, v in other.items()}
        keys_a, keys_b = set(mine), set(other_f)
        union = keys_a | keys_b
        jaccards.append(len(keys_a & keys_b) / len(union) if union else 1.0)
        for key in keys_a & keys_b:
            worst = max(worst, abs(mine[key] - other_f[key]))
    return float(np.mean(jaccards)), worst


@dataclass
class Variant:
    """One way of running the bge-m3 forward pass over a list of passages."""

    label: str
    batch_size: int
    model: Any = None  # None: the loaded model; else e.g. a bf16 copy
    sort: bool = True
    token_budget: int | None = None  # tokens per batch instead of a fixed count
    pad_multiple: int | None = None
    sparse: str = "product"  # product (BGEM3Embeddings' own rule) | none
    defer_sync: bool = False  # keep outputs on the device until every batch is queued
    attention: str | None = None  # eager | flash | efficient | None (model default: sdpa)


def plan_batches(lengths: np.ndarray, batch_size: int, token_budget: int | None) -> list[
        tuple[int, int]]:
    """[start, end) ranges over `lengths` (in encoding order)."""
    if token_budget is None:
        return [(s, min(s + batch_size, len(lengths))) for s in range(0, len(lengths), batch_size)]
    ranges, start, longest = [], 0, 0
    for i, length in enumerate(lengths.tolist()):
        longest_if = max(longest, length)
        if i > start and longest_if * (i - start + 1) > token_budget:
            ranges.append((start, i))
            start, longest_if = i, length
        longest = longest_if
    if start < len(lengths):
        ranges.append((start, len(lengths)))
    return ranges


@contextlib.contextmanager
def attention_mode(model: Any, attention: str | None) -> Iterator[None]:
    """Switch the XLM-R body's attention for one variant, and back."""
    if attention is None:
        yield
        return
    body = model.model
    if attention == "eager":
        previous = body.config._attn_implementation
        body.set_attn_implementation("eager")
        try:
            yield
        finally:
            body.set_attn_implementation(previous)
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION}[attention]
    with sdpa_kernel([backend]):
        yield


def encode_variant(embeddings: Any, texts: Sequence[str], max_length: int,
                   variant: Variant) -> tuple[np.ndarray, list[dict[int, float]]]:
    """The forward pass BGEM3Embeddings.encode runs (tokenise unpadded, sort by length, pad
    per batch with FlagEmbedding's pad_with_compat, `model(batch, return_dense=True,
    return_sparse=True)`), with the variant's changes. Returns (dense, sparse) in input order."""
    import torch
    from FlagEmbedding.utils.tokenizer_compat import pad_with_compat

    flag_model = embeddings.flag_model
    tokenizer = flag_model.tokenizer
    model = variant.model if variant.model is not None else flag_model.model
    device = embeddings.resolved_device
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    inputs = [{key: encoded[key][i] for key in encoded} for i in range(len(texts))]
    lengths = np.asarray([len(item["input_ids"]) for item in inputs])
    order = (np.argsort(-lengths, kind="stable") if variant.sort
             else np.arange(len(texts)))
    dense = np.empty((len(texts), embeddings.dimension), np.float32)
    sparse: list[dict[int, float]] = [{} for _ in texts]
    pending: list[tuple[np.ndarray, np.ndarray, Any, Any]] = []

    def finish(batch_idx: np.ndarray, ids: np.ndarray, dense_t: Any, sparse_t: Any) -> None:
        dense[batch_idx] = dense_t.float().cpu().numpy()
        if variant.sparse == "none":
            return
        weights = sparse_t.float().cpu().numpy()
        for i, weights_of in zip(batch_idx.tolist(), embeddings._sparse_dicts(weights, ids),
                                 strict=True):
            sparse[i] = weights_of

    with torch.inference_mode(), attention_mode(model, variant.attention):
        for start, end in plan_batches(lengths[order], variant.batch_size, variant.token_budget):
            batch_idx = order[start:end]
            kwargs = {"pad_to_multiple_of": variant.pad_multiple} if variant.pad_multiple else {}
            batch = pad_with_compat(tokenizer, [inputs[i] for i in batch_idx], padding=True,
                                    return_tensors="pt", **kwargs)
            ids = batch["input_ids"].numpy()
            out = model(batch.to(device), return_dense=True, return_sparse=True)
            item = (batch_idx, ids, out["dense_vecs"], out["sparse_vecs"].squeeze(-1))
            if variant.defer_sync:
                pending.append(item)
            else:
                finish(*item)
        for item in pending:
            finish(*item)
    return dense, sparse


def time_rounds(contenders: dict[str, Callable[[], Any]], rounds: int, device: str) -> tuple[
        dict[str, list[float]], dict[str, Any]]:
    """Seconds per call, calls interleaved (A B A B …, order alternating), and the last output
    of each. A warm-up is the caller's job."""
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, Any] = {}
    for number in range(rounds):
        for name in names if number % 2 == 0 else names[::-1]:
            seconds, outputs[name] = timed(contenders[name], device)
            samples[name].append(seconds)
    return samples, outputs


def bench_embed(ws: Workspace, cfg: Config) -> tuple[str, dict[str, Any]]:
    embeddings = ws.embeddings()
    flag_model = embeddings.flag_model
    tokenizer = flag_model.tokenizer
    device = cfg.accel
    where = "GPU" if device.startswith("cuda") else "CPU (dry run)"
    words = ws.words()
    rng = np.random.default_rng(cfg.seed)
    data: dict[str, Any] = {"lengths": {}, "attn_implementation":
                            flag_model.model.model.config._attn_implementation,
                            "dtype": str(next(flag_model.model.parameters()).dtype)}
    main_rows, batch_rows, checks = [], [], []
    for length in cfg.lengths:
        texts = make_texts(words, cfg.passages, length, rng)
        counts = token_lengths(tokenizer, texts, length)
        embeddings.passage_max_tokens = length
        per_batch: dict[int, dict[str, float]] = {}
        outputs_at: dict[int, dict[str, Any]] = {}
        for batch in cfg.batch_sizes:
            embeddings.batch_size = batch

            def ours(texts: list[str] = texts) -> Any:
                return embeddings.encode_passages(texts)

            def raw(texts: list[str] = texts, batch: int = batch, length: int = length) -> Any:
                return flag_model.encode(texts, batch_size=batch, max_length=length,
                                         return_dense=True, return_sparse=True)

            log(f"embed {length} tokens, batch {batch}: warm-up")
            warm = texts[:batch]
            timed(lambda ours=ours, warm=warm: ours(warm), device)
            timed(lambda raw=raw, warm=warm: raw(warm), device)
            log(f"embed {length} tokens, batch {batch}: {cfg.rounds} round(s) of "
                f"{len(texts)} passages each side")
            samples, outputs = time_rounds({"ours": ours, "raw": raw}, cfg.rounds, device)
            per_batch[batch] = {name: float(np.median(s)) for name, s in samples.items()}
            outputs_at[batch] = outputs
            batch_rows.append([length, batch, fmt_rate(len(texts) / per_batch[batch]["ours"]),
                               fmt_rate(len(texts) / per_batch[batch]["raw"]),
                               f"{per_batch[batch]['raw'] / per_batch[batch]['ours']:.2f}×"])
        best_ours = min(per_batch, key=lambda b: per_batch[b]["ours"])
        best_raw = min(per_batch, key=lambda b: per_batch[b]["raw"])
        ours_rate = len(texts) / per_batch[best_ours]["ours"]
        raw_rate = len(texts) / per_batch[best_raw]["raw"]
        cosine = dense_cosine_min(outputs_at[best_ours]["ours"].dense,
                                  outputs_at[best_ours]["raw"]["dense_vecs"])
        jaccard, weight_diff = sparse_agreement(outputs_at[best_ours]["ours"].sparse,
                                                outputs_at[best_ours]["raw"]["lexical_weights"])
        checks.append(f"{length} tokens, batch {best_ours}: dense cosine (a) vs (b) min "
                      f"{cosine:.5f} (≥ 0.999: {met(cosine >= 0.999)}); sparse token sets "
                      f"Jaccard {jaccard:.4f}, max |Δweight| {weight_diff:.1e}")

        cpu_embeddings = ws.cpu_embeddings()
        cpu_embeddings.passage_max_tokens = length
        cpu_texts = texts[:cfg.cpu_passages]
        log(f"embed {length} tokens: {len(cpu_texts)} passages float32 on the CPU")
        cpu_embeddings.encode_passages(cpu_texts[:2])
        cpu_s, _ = timed(lambda encode=cpu_embeddings.encode_passages, cpu_texts=cpu_texts:
                         encode(cpu_texts), "cpu")
        cpu_rate = len(cpu_texts) / cpu_s
        main_rows.append([length, f"{counts.mean():.1f}", f"{fmt_rate(ours_rate)} (B={best_ours})",
                          f"{fmt_rate(raw_rate)} (B={best_raw})", fmt_rate(cpu_rate),
                          f"{ours_rate / raw_rate:.2f}×", f"{ours_rate / cpu_rate:.1f}×"])
        data["lengths"][str(length)] = {
            "mean_tokens": float(counts.mean()), "passages": len(texts),
            "per_batch_seconds": {str(b): v for b, v in per_batch.items()},
            "ours_per_s": ours_rate, "raw_per_s": raw_rate, "cpu_per_s": cpu_rate,
            "cpu_passages": len(cpu_texts), "best_batch_ours": best_ours,
            "best_batch_raw": best_raw, "dense_cosine_min": cosine, "sparse_jaccard": jaccard,
            "sparse_max_weight_diff": weight_diff}

    top = data["lengths"][str(max(cfg.lengths))]
    speedup = top["ours_per_s"] / top["raw_per_s"]
    forwards = math.ceil(cfg.passages / top["best_batch_raw"])
    shape = ("real bge-m3 architecture (24 layers, 1024 hidden, random weights)"
             if cfg.model_shape == "BGE_M3" else "TINY model (2 layers, 64 hidden)")
    precision = "fp16" if device.startswith("cuda") else "float32"
    lines = [
        f"### 1. Embedding throughput, {shape}, dense + sparse from one forward pass — {where}",
        f"(a) `BGEM3Embeddings.encode_passages` ({precision} on {device}) vs (b) "
        f"`BGEM3FlagModel.encode"
        f"(batch_size=B, max_length=L, return_dense, return_sparse)` on the same model object vs "
        f"(c) float32 on {cfg.threads} CPU cores ({cfg.cpu_passages} passages, per second). "
        f"{cfg.passages} passages per measurement, {cfg.rounds} interleaved round(s), median; "
        f"best batch of {cfg.batch_sizes} for each side. Attention: "
        f"`{data['attn_implementation']}`, weights {data['dtype']}.",
        table(["tokens", "mean tokens", "(a) ours passages/s", "(b) FlagEmbedding passages/s",
               "(c) CPU fp32 passages/s", "(a)/(b)", "(a)/(c)"], main_rows),
        "\n".join(f"- outputs: {check}" for check in checks),
    ]
    if cfg.dry_run:
        lines.append(f"- goals (≥ {GOAL_PASSAGES_PER_S:,.0f} passages/s at 512 tokens on one "
                     f"H100; ≥ {GOAL_SPEEDUP}× FlagEmbedding): not judged in a dry run")
    else:
        lines.append(
            f"- goal ≥ {GOAL_PASSAGES_PER_S:,.0f} passages/s at {max(cfg.lengths)} tokens: "
            f"{met(top['ours_per_s'] >= GOAL_PASSAGES_PER_S)} ({top['ours_per_s']:,.0f}); goal "
            f"≥ {GOAL_SPEEDUP}× FlagEmbedding: {met(speedup >= GOAL_SPEEDUP)} ({speedup:.2f}×)")
    lines.append(
        f"- what to expect: (b) runs its first batch twice (its batch-size probe), so with the "
        f"same forward pass the speed-up of (a) is at most (b+1)/b = "
        f"{(forwards + 1) / forwards:.2f}× for b = {forwards} batches; anything beyond needs a "
        "faster forward pass or less work around it (the candidate rows).")
    lines.append("All batch sizes:")
    lines.append(table(["tokens", "batch", "(a) passages/s", "(b) passages/s", "(a)/(b)"],
                       batch_rows))
    run_candidates = cfg.candidates == "always" or (
        cfg.candidates == "auto" and speedup < GOAL_SPEEDUP)
    if run_candidates:
        candidate_md, candidate_data = bench_embed_candidates(ws, cfg, words, top)
        lines.append(candidate_md)
        data["candidates"] = candidate_data
    else:
        lines.append(f"- candidate variants not measured (`--candidates {cfg.candidates}`, "
                     f"speed-up {speedup:.2f}×)")
    return "\n\n".join(lines), data


def bench_embed_candidates(ws: Workspace, cfg: Config, words: list[str],
                           top: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Variants of the same forward pass, to choose the next change to BGEM3Embeddings."""
    import torch

    embeddings = ws.embeddings()
    flag_model = embeddings.flag_model
    device = cfg.accel
    length = max(cfg.lengths)
    batch = int(top["best_batch_ours"])
    rng = np.random.default_rng(cfg.seed + 1)
    texts = make_texts(words, cfg.passages, length, rng)
    embeddings.passage_max_tokens = length
    embeddings.batch_size = batch
    on_gpu = device.startswith("cuda")
    half = torch.bfloat16
    bf16_model = copy.deepcopy(flag_model.model).to(half)
    fast = {"defer_sync": True}
    variants = [
        Variant(f"re-implemented loop, B={batch} (must equal (a))", batch),
        Variant(f"+ no per-batch sync (outputs stay on the device until all batches are "
                f"queued), B={batch}", batch, **fast),
        Variant(f"forward only, no sparse dicts (upper bound), B={batch}", batch,
                sparse="none", defer_sync=True),
        Variant(f"bf16 weights + no sync, B={batch}", batch, model=bf16_model,
                **fast),
        Variant(f"eager attention + no sync, B={batch}", batch, attention="eager",
                **fast),
        Variant(f"SDPA flash kernel only + no sync, B={batch}", batch,
                attention="flash", **fast),
        Variant(f"SDPA mem-efficient kernel only + no sync, B={batch}", batch,
                attention="efficient", **fast),
        *[Variant(f"larger batch B={big} + no sync", big, **fast)
          for big in cfg.large_batch_sizes],
    ]
    log(f"embed candidates at {length} tokens: reference run")
    reference = embeddings.encode_passages(texts)  # warm-up, and the outputs to compare with
    seconds_a, _ = timed(lambda: embeddings.encode_passages(texts), device)
    rows = [[f"(a) BGEM3Embeddings.encode_passages, B={batch}", fmt_rate(len(texts) / seconds_a),
             "1.00×", "1.00000", "yes"]]
    data: dict[str, Any] = {"a_seconds": seconds_a, "variants": {}}
    for variant in variants:
        log(f"embed candidate: {variant.label}")
        try:
            encode_variant(embeddings, texts[:variant.batch_size], length, variant)  # warm-up
            samples, outputs = time_rounds(
                {"v": lambda variant=variant: encode_variant(embeddings, texts, length, variant)},
                max(1, cfg.rounds), device)
        except (RuntimeError, ValueError, torch.cuda.OutOfMemoryError) as error:
            rows.append([variant.label, "failed", "", "", error_text(error)])
            data["variants"][variant.label] = {"error": error_text(error)}
            if on_gpu:
                torch.cuda.empty_cache()
            continue
        seconds = float(np.median(samples["v"]))
        dense, sparse = outputs["v"]
        cosine = dense_cosine_min(reference.dense, dense)
        if variant.sparse == "none":
            same_sparse = "n/a"
        elif sparse == reference.sparse:
            same_sparse = "yes"
        else:
            jaccard, weight_diff = sparse_agreement(sparse, reference.sparse)
            same_sparse = f"no: token Jaccard {jaccard:.4f}, max Δweight {weight_diff:.1e}"
        rows.append([variant.label, fmt_rate(len(texts) / seconds), f"{seconds_a / seconds:.2f}×",
                     f"{cosine:.5f}", same_sparse])
        data["variants"][variant.label] = {"seconds": seconds, "per_s": len(texts) / seconds,
                                           "dense_cosine_min": cosine,
                                           "sparse_same": same_sparse}
    del bf16_model
    if on_gpu:
        torch.cuda.empty_cache()

    # Length bucketing matters only when lengths differ: a mixed corpus, 16..L tokens.
    mixed_lengths = rng.integers(16, length + 1, size=cfg.passages)
    mixed = make_texts(words, cfg.passages, mixed_lengths.tolist(), rng)
    budget = batch * length
    bucket_variants = [
        Variant(f"unsorted, fixed B={batch} (no length bucketing)", batch, sort=False, **fast),
        Variant(f"sorted, fixed B={batch} (what BGEM3Embeddings does) + no sync",
                batch, **fast),
        Variant(f"sorted, token budget {budget:,} tokens per batch", batch, token_budget=budget,
                **fast),
        Variant(f"sorted, token budget {budget:,} + pad to a multiple of 8", batch,
                token_budget=budget, pad_multiple=8, **fast),
    ]
    embeddings.encode_passages(mixed[:batch])
    seconds_mixed, mixed_reference = timed(lambda: embeddings.encode_passages(mixed), device)
    bucket_rows = [[f"(a) BGEM3Embeddings.encode_passages, B={batch}",
                    fmt_rate(len(mixed) / seconds_mixed), "1.00×", "1.00000"]]
    data["mixed"] = {"a_seconds": seconds_mixed, "mean_tokens": float(mixed_lengths.mean()),
                     "variants": {}}
    for variant in bucket_variants:
        log(f"embed bucketing: {variant.label}")
        try:
            encode_variant(embeddings, mixed[:batch], length, variant)
            seconds, (dense, _) = timed(
                lambda variant=variant: encode_variant(embeddings, mixed, length, variant), device)
        except (RuntimeError, ValueError, torch.cuda.OutOfMemoryError) as error:
            bucket_rows.append([variant.label, "failed", "", error_text(error)])
            data["mixed"]["variants"][variant.label] = {"error": error_text(error)}
            continue
        cosine = dense_cosine_min(mixed_reference.dense, dense)
        bucket_rows.append([variant.label, fmt_rate(len(mixed) / seconds),
                            f"{seconds_mixed / seconds:.2f}×", f"{cosine:.5f}"])
        data["mixed"]["variants"][variant.label] = {"seconds": seconds,
                                                    "per_s": len(mixed) / seconds,
                                                    "dense_cosine_min": cosine}
    markdown = "\n\n".join([
        f"#### Candidate rows: variants of the same forward pass, {length} tokens, "
        f"{len(texts)} passages (median of {max(1, cfg.rounds)}), speed-up vs (a) timed once "
        "just before",
        "Each row runs `flag_model.model(batch, return_dense=True, return_sparse=True)` the way "
        "`BGEM3Embeddings.encode` does (tokenise, sort by length, `pad_with_compat` per batch) "
        "with one change. 'dense cos' is the minimum cosine against (a)'s vectors; 'sparse' "
        "says whether the token-weight dicts equal (a)'s.",
        table(["candidate", "passages/s", "vs (a)", "dense cos", "sparse"], rows),
        f"Mixed lengths (uniform 16–{length} tokens, mean {mixed_lengths.mean():.0f}), one run "
        "each after a warm-up:",
        table(["candidate", "passages/s", "vs (a)", "dense cos"], bucket_rows),
    ])
    return markdown, data


# --------------------------------------------------------------------------- 2. dense search


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


def bench_search(ws: Workspace, cfg: Config) -> tuple[str, dict[str, Any]]:
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


# --------------------------------------------------------------------------- 3. end to end


def zipf_sparse_matrix(n: int, vocab: int, per_chunk: int, rng: np.random.Generator,
                       chunk: int = 100_000) -> tuple[Any, np.ndarray, np.ndarray, float]:
    """A (vocab x n) CSR of token weights laid out as HybridStore._build_sparse lays it out:
    ~`per_chunk` distinct tokens per chunk, Zipf-like (p ∝ 1/(rank + 2)), weights 0.02-0.35.
    Returns (matrix, token cdf, rank -> token id, mean distinct tokens per chunk)."""
    from scipy import sparse as sp

    cdf = np.cumsum(1.0 / (np.arange(vocab) + 2.0))
    cdf /= cdf[-1]
    token_of_rank = (rng.permutation(vocab) + 4).astype(np.int32)  # 0..3: specials
    tokens_parts, chunk_parts, weight_parts = [], [], []
    draws = int(per_chunk * 1.2)  # frequent tokens repeat; ~per_chunk stay distinct
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        ranks = np.sort(np.searchsorted(cdf, rng.random((rows, draws))), axis=1)
        keep = np.ones_like(ranks, bool)
        keep[:, 1:] = ranks[:, 1:] != ranks[:, :-1]
        chunk_ids = np.broadcast_to(np.arange(start, start + rows, dtype=np.int32)[:, None],
                                    ranks.shape)[keep]
        tokens_parts.append(token_of_rank[ranks[keep]])
        chunk_parts.append(chunk_ids)
        weight_parts.append(rng.uniform(0.02, 0.35, size=int(keep.sum())).astype(np.float32))
    tokens = np.concatenate(tokens_parts)
    matrix = sp.coo_matrix((np.concatenate(weight_parts), (tokens, np.concatenate(chunk_parts))),
                           shape=(vocab + 4, n)).tocsr()
    return matrix, cdf, token_of_rank, len(tokens) / n


def query_sparse(cdf: np.ndarray, token_of_rank: np.ndarray, count: int,
                 rng: np.random.Generator) -> dict[int, float]:
    ranks = np.unique(np.searchsorted(cdf, rng.random(count * 2)))[:count]
    return dict(zip(token_of_rank[ranks].tolist(),
                    rng.uniform(0.05, 0.3, size=len(ranks)).tolist(), strict=True))


def sparse_scores(matrix: Any, query: dict[int, float]) -> np.ndarray:
    """HybridStore.sparse_scores' arithmetic: `matrix[tokens].T @ weights`."""
    tokens = [t for t in query if 0 <= t < matrix.shape[0]]
    if not tokens:
        return np.zeros(matrix.shape[1], np.float32)
    weights = np.asarray([query[t] for t in tokens], np.float32)
    return np.asarray(matrix[tokens].T @ weights, np.float32).ravel()


def product_merge(scores: np.ndarray, rows: np.ndarray, all_sparse: np.ndarray,
                  sparse_rows: np.ndarray, n: int, vectors: np.ndarray, q_dense: np.ndarray,
                  weights: list[float], mode: Any) -> list[int]:
    """HybridRetriever.search between the dense search and its `search_s` timing — the
    retriever's own `merge_candidates`, so a change there is measured here — then its ranking
    of the candidates. Returns the candidate rows, best first."""
    from retrieval.retriever import merge_candidates

    # the store reconstructs missing vectors from the CPU index; here, the same vectors
    candidates = merge_candidates(scores, rows, all_sparse, sparse_rows, n,
                                  lambda wanted: vectors[wanted], q_dense)
    order, _scores = candidates.ranked(mode, weights)
    return candidates.rows[order].tolist()


def colbert_on_device(embeddings: Any, query_colbert: np.ndarray, texts: Sequence[str],
                      max_tokens: int) -> np.ndarray:
    """Candidate: one forward pass over all candidates with ColBERT vectors, scored on the
    device (masked max-sim), so 50 x 255 x 1024 token vectors never cross to the host."""
    import torch
    from FlagEmbedding.utils.tokenizer_compat import pad_with_compat

    flag_model = embeddings.flag_model
    device = embeddings.resolved_device
    encoded = flag_model.tokenizer(list(texts), truncation=True, max_length=max_tokens)
    inputs = [{key: encoded[key][i] for key in encoded} for i in range(len(texts))]
    with torch.inference_mode():
        batch = pad_with_compat(flag_model.tokenizer, inputs, padding=True,
                                return_tensors="pt").to(device)
        out = flag_model.model(batch, return_dense=False, return_sparse=False,
                               return_colbert_vecs=True)
        vecs = out["colbert_vecs"]  # (B, T-1, d); CLS left out by the head
        mask = batch["attention_mask"][:, 1:].bool()
        query = torch.as_tensor(query_colbert, device=device, dtype=vecs.dtype)
        sim = torch.einsum("qd,btd->bqt", query, vecs).float()
        sim = sim.masked_fill(~mask[:, None, :], float("-inf"))
        scores = sim.max(dim=-1).values.sum(dim=-1) / query.shape[0]
        return scores.cpu().numpy()


def bench_e2e(ws: Workspace, cfg: Config) -> tuple[str, dict[str, Any]]:
    from retrieval.retriever import colbert_score
    from retrieval.settings import Settings

    embeddings = ws.embeddings()
    dim = embeddings.dimension
    n = cfg.e2e_size
    device = cfg.accel
    rng = np.random.default_rng(cfg.seed + 3)
    weights = list(Settings.model_fields["hybrid_weights"].default_factory())  # type: ignore[misc]
    # the product's batch size on this device (KOTAE_EMBEDDING_BATCH_SIZE unset)
    product_batch = type(embeddings).model_construct(batch_size=None, device=device).batch
    rerank_top = 20

    vectors = ws.vectors(n, dim)
    cpu_flat, _ = ws.cpu_flat(n, dim)
    gpu_index = None
    if cfg.faiss_gpu:
        gpu_index, _ = gpu_clone(ws, cpu_flat, fp16=False)
        dense_search = locked(ws, gpu_index)
        dense_where = "GPU flat float32"
    else:
        dense_search = cpu_flat.search
        dense_where = "CPU flat (no GPU)"
    log(f"e2e: sparse matrix, {n:,} chunks x ~{cfg.sparse_tokens} tokens, vocab {cfg.vocab:,}")
    started = time.perf_counter()
    matrix, cdf, token_of_rank, per_chunk = zipf_sparse_matrix(n, cfg.vocab, cfg.sparse_tokens,
                                                               rng)
    sparse_build_s = time.perf_counter() - started
    sparse_rows = np.arange(n, dtype=np.int64)  # row ids ascending, as HybridStore's
    words = ws.words()
    pool = make_texts(words, 256, cfg.colbert_tokens, rng)
    queries = make_texts(words, cfg.e2e_queries, cfg.query_tokens, rng)
    query_sparse_views = [query_sparse(cdf, token_of_rank, cfg.query_sparse_tokens, rng)
                          for _ in queries]
    embeddings.passage_max_tokens = cfg.colbert_tokens
    query_len = token_lengths(embeddings.flag_model.tokenizer, queries, 64).mean()

    all_product = "all (product: ColBERT re-encodes every candidate)"
    hybrid_product = "hybrid (product)"
    all_device = "all, candidate: ColBERT in one batch, scored on the device"
    all_top = f"all, candidate: ColBERT on the hybrid top-{rerank_top} only, on the device"
    stages: dict[str, dict[str, list[float]]] = {
        name: {} for name in (all_product, hybrid_product, all_device, all_top)}
    colbert_diff = 0.0
    touched: list[int] = []
    reencoded: list[int] = []

    def add(variant: str, stage: str, seconds: float) -> None:
        stages[variant].setdefault(stage, []).append(seconds)

    def one_query(i: int, record: bool) -> None:
        nonlocal colbert_diff
        text, q_sparse = queries[i % len(queries)], query_sparse_views[i % len(queries)]
        # mode all (the product default on a GPU): query views with ColBERT, retriever steps
        t_embed, views = timed(lambda: embeddings.encode_query(text, colbert=True), device)
        q_dense = views.dense[0]
        t_dense, (scores, rows) = timed(lambda: dense_search(q_dense[None, :], cfg.candidates_n),
                                        device)
        t_sparse, all_sparse = timed(lambda: sparse_scores(matrix, q_sparse), "cpu")
        t_merge, ranked = timed(lambda: product_merge(
            scores[0], rows[0], all_sparse, sparse_rows, cfg.candidates_n, vectors, q_dense,
            weights, "all"), "cpu")
        texts = [pool[r % len(pool)] for r in ranked]
        embeddings.batch_size = product_batch

        def colbert_product() -> list[float]:
            passages = embeddings.encode_passages(texts, colbert=True).colbert or []
            return [colbert_score(views.colbert[0], vecs) for vecs in passages]

        t_colbert, product_colbert = timed(colbert_product, device)
        t_colbert_dev, device_colbert = timed(lambda: colbert_on_device(
            embeddings, views.colbert[0], texts, cfg.colbert_tokens), device)
        t_colbert_top, _ = timed(lambda: colbert_on_device(
            embeddings, views.colbert[0], texts[:rerank_top], cfg.colbert_tokens), device)
        # mode hybrid: no ColBERT views, no re-encoding
        t_embed_h, views_h = timed(lambda: embeddings.encode_query(text), device)
        q_dense_h = views_h.dense[0]
        t_dense_h, (scores_h, rows_h) = timed(
            lambda: dense_search(q_dense_h[None, :], cfg.candidates_n), device)
        t_sparse_h, all_sparse_h = timed(lambda: sparse_scores(matrix, q_sparse), "cpu")
        t_merge_h, _ = timed(lambda: product_merge(
            scores_h[0], rows_h[0], all_sparse_h, sparse_rows, cfg.candidates_n, vectors,
            q_dense_h, weights, "hybrid"), "cpu")
        tokens_in_query = [t for t in q_sparse if 0 <= t < matrix.shape[0]]
        touched.append(int(matrix[tokens_in_query].nnz))
        reencoded.append(len(texts))
        if not record:
            return
        shared = (("embed query (+ColBERT views)", t_embed), ("dense top-N", t_dense),
                  ("sparse scores", t_sparse), ("merge", t_merge))
        for variant, colbert_s in ((all_product, t_colbert), (all_device, t_colbert_dev),
                                   (all_top, t_colbert_top)):
            for stage, seconds in (*shared, ("ColBERT re-encode + score", colbert_s)):
                add(variant, stage, seconds)
        for stage, seconds in (("embed query", t_embed_h), ("dense top-N", t_dense_h),
                               ("sparse scores", t_sparse_h), ("merge", t_merge_h)):
            add(hybrid_product, stage, seconds)
        if len(product_colbert):
            colbert_diff = max(colbert_diff, float(np.max(np.abs(
                np.asarray(product_colbert) - device_colbert))))

    log(f"e2e: {cfg.e2e_queries} queries over {n:,} chunks ({dense_where})")
    for i in range(2):
        one_query(i, record=False)
    touched.clear()
    reencoded.clear()
    budget_start = time.perf_counter()
    for i in range(cfg.e2e_queries):
        one_query(i, record=True)
        if i >= 4 and time.perf_counter() - budget_start > 6 * cfg.max_latency_s:
            log(f"e2e: stopping after {i + 1} queries (time budget)")
            break
    if gpu_index is not None:
        del gpu_index

    stage_names = ["embed query (+ColBERT views)", "embed query", "dense top-N",
                   "sparse scores", "merge", "ColBERT re-encode + score"]
    rows_md, verdicts, data = [], [], {"variants": {}}
    for variant, by_stage in stages.items():
        total = np.sum([np.asarray(v) for v in by_stage.values()], axis=0)
        dominant = max(by_stage, key=lambda s: p50(by_stage[s]))
        share = p50(by_stage[dominant]) / max(p50(total), 1e-12)
        rows_md.append([variant, *(ms(p50(by_stage[s])) if s in by_stage else "—"
                                   for s in stage_names),
                        ms(p50(total)), ms(p99(total)), met(p50(total) < GOAL_E2E_P50_S),
                        f"{dominant} ({share:.0%})"])
        data["variants"][variant] = {
            "stages_p50_s": {s: p50(v) for s, v in by_stage.items()},
            "stages_p99_s": {s: p99(v) for s, v in by_stage.items()},
            "total_p50_s": p50(total), "total_p99_s": p99(total), "dominant": dominant,
            "samples": len(total)}
        if p50(total) < GOAL_E2E_P50_S:
            verdicts.append(f"- {variant}: goal < {ms(GOAL_E2E_P50_S)} p50 met "
                            f"({ms(p50(total))})")
        else:
            verdicts.append(f"- {variant}: goal < {ms(GOAL_E2E_P50_S)} p50 **missed** "
                            f"({ms(p50(total))}); the largest stage is '{dominant}' "
                            f"({share:.0%} of the p50 total)")
    samples = len(stages[hybrid_product]["merge"])
    data.update(chunks=n, sparse_tokens_per_chunk=per_chunk, sparse_build_s=sparse_build_s,
                sparse_bytes=int(matrix.data.nbytes + matrix.indices.nbytes
                                 + matrix.indptr.nbytes),
                matrix_nnz_touched_p50=p50(touched),
                colbert_passages_mean=float(np.mean(reencoded)),
                colbert_device_max_abs_diff=colbert_diff, query_tokens=float(query_len))
    markdown = "\n\n".join([
        f"### 3. One query end to end, {n:,} chunks — {dense_where}, model on {device}",
        f"Query ~{query_len:.0f} tokens (`encode_query`); dense top-{cfg.candidates_n}; sparse "
        f"scores over a {matrix.shape[0]:,} x {n:,} CSR ({per_chunk:.0f} tokens per chunk, "
        f"Zipf; query {cfg.query_sparse_tokens} tokens; p50 {p50(touched):,.0f} stored weights "
        "read per query) with `HybridStore.sparse_scores`' arithmetic; merge = "
        "`HybridRetriever.search`'s candidate merge and ranking (its own `_top_positive` and "
        f"`_lookup`, weights {weights}); ColBERT = `encode_passages(candidates, colbert=True)` "
        f"of every candidate (dense ∪ sparse top-{cfg.candidates_n}: "
        f"{np.mean(reencoded):.0f} passages per query on average) at {cfg.colbert_tokens} "
        f"tokens, batch {product_batch} (the product default), then `colbert_score`. Not "
        "included: the SQLite row fetch. Stage times p50 over "
        f"{samples} queries; totals are per-query sums of the stages.",
        table(["variant", *stage_names, "total p50", "total p99", f"< {ms(GOAL_E2E_P50_S)}",
               "largest stage (share of p50)"], rows_md),
        "\n".join(verdicts),
        f"- ColBERT scored on the device differs from `colbert_score` by at most "
        f"{colbert_diff:.1e}.",
        f"- sparse matrix: built in {secs(sparse_build_s)}, {human_bytes(data['sparse_bytes'])} "
        f"in RAM ({human_bytes(data['sparse_bytes'] / n * 1e6)} per million chunks).",
    ])
    return markdown, data


# --------------------------------------------------------------------------- 4. GPU memory


def bench_memory(ws: Workspace, cfg: Config) -> tuple[str, dict[str, Any]]:
    n = max(cfg.sizes)
    if cfg.dry_run or not cfg.faiss_gpu:
        reason = no_gpu_reason(cfg)
        return f"### 4. GPU memory\n\n{reason}", {"skipped": reason}
    import faiss
    import torch

    embeddings = ws.embeddings()
    cpu_flat, _ = ws.cpu_flat(n)
    queries = ws.queries(n)[:32]
    rows, data = [], {"chunks": n}
    free_start = _gpu_free()
    resources = warmed_gpu_resources()
    resources_bytes = free_start - _gpu_free()
    for fp16 in (False, True):
        label = "float16" if fp16 else "float32"
        sync(cfg.accel)
        before = _gpu_free()
        options = faiss.GpuClonerOptions()
        options.useFloat16 = fp16
        index = faiss.index_cpu_to_gpu(resources, 0, cpu_flat, options)
        after_clone = _gpu_free()
        index.search(queries, K)
        after_search = _gpu_free()
        del index
        after_free = _gpu_free()
        clone_bytes = before - after_clone
        temp_bytes = after_clone - after_search
        per_million = clone_bytes / (n / 1e6)
        theory = (2 if fp16 else 4) * DIM * 1e6
        rows.append([f"flat {label}, {n:,} vectors", human_bytes(clone_bytes),
                     human_bytes(per_million), human_bytes(theory), human_bytes(temp_bytes),
                     human_bytes(before - after_free)])
        data[label] = {"clone_bytes": clone_bytes, "per_million": per_million,
                       "first_search_temp_bytes": temp_bytes,
                       "not_returned_after_delete": before - after_free}
    del resources
    data["resources_bytes"] = resources_bytes
    data["resources_not_returned"] = free_start - _gpu_free()

    # the model: weights, then the peak of one batch of 128 x 512 tokens
    torch.cuda.reset_peak_memory_stats()
    allocated = torch.cuda.memory_allocated()
    length = max(cfg.lengths)
    texts = make_texts(ws.words(), 128, length, np.random.default_rng(cfg.seed + 9))
    embeddings.passage_max_tokens = length
    embeddings.batch_size = 128
    embeddings.encode_passages(texts)
    peak = torch.cuda.max_memory_allocated() - allocated
    data["model"] = {**ws.model_memory, "activation_peak_128x512": int(peak)}
    vocab = int(embeddings.flag_model.model.model.config.vocab_size)
    missing_rows = max(0, REAL_VOCAB - vocab) * DIM * 2
    data["model"]["real_vocab_extra_bytes"] = missing_rows
    model_rows = [["bge-m3 fp16 weights (torch.cuda.memory_allocated after load)",
                   human_bytes(ws.model_memory.get("allocated", 0))],
                  ["device memory taken by loading it (torch.cuda.mem_get_info delta)",
                   human_bytes(ws.model_memory.get("free_delta", 0))],
                  [f"+ embedding rows the real checkpoint has ({REAL_VOCAB:,} tokens; this "
                   f"random build has {vocab:,}), fp16", human_bytes(missing_rows)],
                  [f"activation peak, one batch of 128 x {length} tokens (dense + sparse)",
                   human_bytes(peak)]]
    markdown = "\n\n".join([
        f"### 4. GPU memory (torch.cuda.mem_get_info deltas around FAISS calls; {n:,} vectors "
        f"of {DIM}-d)",
        table(["index", "clone took", "per million chunks", "vectors alone per million",
               "first search (FAISS temp memory)", "not returned after delete"], rows),
        table(["model", "bytes"], model_rows),
        f"- a StandardGpuResources (cuBLAS handle, streams, temporary memory) took "
        f"{human_bytes(resources_bytes)} before any index; after deleting it and every index, "
        f"{human_bytes(data['resources_not_returned'])} was not returned. The GPU holds dense "
        "vectors only; the sparse CSR and SQLite stay in host RAM.",
    ])
    return markdown, data


# --------------------------------------------------------------------------- results


def load_previous(path: Path, device: str, fresh: bool) -> dict[str, Any]:
    """Parts measured earlier on the same device, so separate calls make one section."""
    if fresh or not path.exists():
        return {}
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    if previous.get("facts", {}).get("device") != device:
        log(f"{path}: measured on {previous.get('facts', {}).get('device')}, not {device}; "
            "starting a new file")
        return {}
    return dict(previous.get("parts", {}))


def render(payload: dict[str, Any]) -> str:
    parts = payload["parts"]
    commands = sorted({part["command"] for part in parts.values()})
    lines = [f"## GPU ({', '.join(f'`{c}`' for c in commands)})",
             payload["machine"], facts_markdown(payload["facts"])]
    for name in PARTS:
        if name in parts:
            part = parts[name]
            lines.append(f"{part['markdown']}\n\n_({name}: {part['finished']}, "
                         f"{part['seconds'] / 60:.1f} min)_")
    return "\n\n".join(lines)


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (100k vectors)")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="no GPU: TINY model, tiny sizes, everything on CPU (< 2 min)")
    parser.add_argument("--only", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
    parser.add_argument("--sizes", help="comma-separated vector counts (default 100000,1000000)")
    parser.add_argument("--out", type=Path,
                        help="JSON of raw numbers (default bench/gpu_results.json; none in a "
                             "dry run)")
    parser.add_argument("--fresh", action="store_true",
                        help="do not merge with the parts already in --out")
    parser.add_argument("--section", help="RESULTS.md section (default gpu / gpu-quick)")
    parser.add_argument("--results-file", type=Path, default=RESULTS_FILE)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="only re-render the section from a JSON written by an earlier run")
    parser.add_argument("--threads", type=int, default=cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    group = parser.add_argument_group("1. embeddings")
    group.add_argument("--lengths", help="passage tokens (default 256,512)")
    group.add_argument("--batch-sizes", help="default 32,64,128")
    group.add_argument("--large-batch-sizes", help="candidate rows (default 256,512)")
    group.add_argument("--passages", type=int, help="per GPU measurement (default 1024)")
    group.add_argument("--cpu-passages", type=int, help="for the CPU float32 row (default 16)")
    group.add_argument("--rounds", type=int, help="timed rounds per contender (default 3)")
    group.add_argument("--candidates", choices=("auto", "always", "never"),
                       help="candidate rows: auto = only when (a) < 1.5x (b)")
    group = parser.add_argument_group("2. search")
    group.add_argument("--queries", type=int, help="query vectors per size (recall)")
    group.add_argument("--latency-queries", type=int)
    group.add_argument("--latency-batches", type=int)
    group.add_argument("--max-latency-s", type=float,
                       help="time cap per contender and query shape (default 20)")
    group.add_argument("--latent-dim", type=int, default=32,
                       help="structure of the synthetic vectors; 0 = i.i.d. Gaussian")
    group.add_argument("--hnsw-max", type=int, help="largest size that gets an HNSW build")
    group.add_argument("--store-size", type=int, help="HybridStore size (default 100000)")
    group = parser.add_argument_group("3. end to end")
    group.add_argument("--e2e-size", type=int, help="chunks (default 1000000)")
    group.add_argument("--e2e-queries", type=int)
    group.add_argument("--vocab", type=int, help="sparse vocabulary (default 250000)")
    group.add_argument("--sparse-tokens", type=int, default=60)
    group.add_argument("--query-sparse-tokens", type=int, default=16)
    group.add_argument("--candidates-n", type=int, help="dense and sparse top-N (default 50)")
    group.add_argument("--colbert-tokens", type=int, help="candidate passage tokens (256)")
    group.add_argument("--query-tokens", type=int, default=16)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")  # FlagEmbedding's progress bars
    args = parse_args(argv)
    command = "python -m bench.gpu " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.render:
        payload = json.loads(args.render.read_text(encoding="utf-8"))
        markdown = render(payload)
        print(markdown)
        if not args.no_write:
            write_section(args.section or payload.get("section", "gpu"), markdown,
                          args.results_file)
        return
    cfg = build_config(args)
    set_threads(cfg.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    facts = gpu_facts(cfg)
    log(f"device: {facts['device']}; faiss GPU support: {cfg.faiss_gpu}; parts: "
        f"{','.join(p for p in PARTS if p in cfg.parts)}")
    if not cfg.dry_run and not cfg.faiss_gpu:
        log("WARNING: this faiss build has no GPU support: the GPU index rows will be skipped "
            "(see bench/GPU.md to install faiss-gpu)")
    out = args.out or (None if cfg.dry_run else DEFAULT_OUT)
    section = args.section or ("gpu-dry-run" if cfg.dry_run else
                               "gpu-quick" if args.quick else "gpu")
    write = not args.no_write and (not cfg.dry_run or args.section is not None)
    parts = load_previous(out, facts["device"], args.fresh) if out else {}
    ws = Workspace(cfg)
    runners = {"embed": bench_embed, "search": bench_search, "e2e": bench_e2e,
               "memory": bench_memory}
    for name in PARTS:
        if name not in cfg.parts:
            continue
        log(f"== {name}")
        started = time.perf_counter()
        markdown, data = runners[name](ws, cfg)
        parts[name] = {"markdown": markdown, "data": data, "command": command.strip(),
                       "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                       "seconds": time.perf_counter() - started}
        print("\n" + markdown + "\n", flush=True)
        payload = {"facts": facts, "section": section, "parts": parts,
                   "machine": machine_markdown() + f"\n- load average at the end: "
                                                   f"{load_average()}"}
        if out:  # after every part, so a call cut off by its time limit keeps what it measured
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(payload, indent=2, default=float), encoding="utf-8")
    payload = {"facts": facts, "section": section, "parts": parts,
               "machine": machine_markdown() + f"\n- load average at the end: {load_average()}"}
    markdown = render(payload)
    if write:
        write_section(section, markdown, args.results_file)
        log(f"wrote section '{section}' of {args.results_file}")
    if out:
        log(f"raw numbers in {out}")
    if cfg.dry_run:
        log("dry run finished: every CPU code path ran; GPU rows say 'skipped: no GPU'")


if __name__ == "__main__":
    main()
