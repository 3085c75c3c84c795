"""What one run measures: the sizes of the preset (default, --quick, --cpu-dry-run) with the
flags applied, and the constants every part shares."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, BGE_M3_ARCH_DIR, TINY_DIR, comma_ints

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

    sizes = comma_ints(args.sizes)
    parts = {part.strip() for part in args.only.split(",") if part.strip()}
    unknown = parts - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
    return Config(
        dry_run=args.cpu_dry_run, accel="cpu" if args.cpu_dry_run else "cuda:0",
        faiss_gpu=(not args.cpu_dry_run) and faiss_has_gpu(),
        model_dir=TINY_DIR if args.cpu_dry_run else BGE_M3_ARCH_DIR,
        model_shape="TINY" if args.cpu_dry_run else "BGE_M3",
        lengths=comma_ints(args.lengths), batch_sizes=comma_ints(args.batch_sizes),
        large_batch_sizes=comma_ints(args.large_batch_sizes), passages=args.passages,
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
