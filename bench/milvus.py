"""Local backend vs Milvus Lite, side by side in one run, at 10k and 50k chunks.

For each size, one synthetic corpus shaped like the indexer's (1024-d unit vectors, Zipf
sparse weights, ~1,200-character texts, the chunker's metadata) is written through the store
seam into both backends by the same code (begin_build, add in batches, record files, publish):

- ingest rows/s (the whole build, published);
- hybrid search p50/p99 through `HybridRetriever` (query views precomputed, so the search alone
  is timed), interleaved; and how often both backends return the same top-k in the same order;
- `kotae migrate-to-milvus`'s time on the local index (nothing re-embedded);
- the Milvus Lite server process's resident memory beside ours.

Ingest path: Milvus Lite 2.5.1 ingests about as fast per row in requests of 250 to ~1,500
1024-d rows, and ~20x slower past ~10 MB per request; `--batches` measures it, and the backend
sends requests of at most 1,000 rows and 4 MB. Row inserts are the path Lite offers
(`bulk_insert` needs MinIO/S3, i.e. standalone or a cluster); most of the client's time is
pymilvus packing rows into protobuf in Python, and neither the ORM's column insert (deprecated,
gone in pymilvus 3.1) nor 2-3 concurrent requests were faster here (measured, not kept).

Standalone / cluster (not measurable here; only KOTAE_MILVUS_URI and KOTAE_MILVUS_INDEX_TYPE
differ, the code path is the one measured):
- HNSW: built with M=16, efConstruction=200; searched with ef = max(128, 2 x candidates).
  The choice past ~1M chunks on CPU; ~1.1x the raw vectors in memory (4 KiB per 1024-d chunk
  plus the graph, ~M x 2 x 4 bytes per vector).
- GPU_CAGRA (GPU query nodes): intermediate_graph_degree=64, graph_degree=32, build_algo
  IVF_PQ, cache_dataset_on_device=true; searched with itopk_size = max(128, 2 x candidates
  rounded up to 32), search_width=4. For tens of millions of chunks or high query rates.
- IVF_FLAT / IVF_SQ8: nlist 128 / 1024, nprobe 32: less memory (SQ8: 1 byte per dimension),
  lower recall; FLAT stays exact, fine to ~1M chunks on standalone.
The sparse field always uses SPARSE_INVERTED_INDEX with drop_ratio_search 0 (exact).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    BenchRun,
    bench_parser,
    comma_ints,
    cpu_count,
    human_bytes,
    ms,
    p50,
    p99,
    publish,
    rss_bytes,
    secs,
    table,
    time_interleaved,
    time_once,
)
from bench.retrieval import (
    DIM,
    FixedQueryViews,
    SyntheticCorpus,
    ZipfTokens,
    synthetic_corpus,
    synthetic_queries,
)

WEIGHTS = [0.4, 0.2, 0.4]
MODEL = "synthetic"


def ingest(versions: Any, corpus: SyntheticCorpus, add_batch: int) -> float:
    """Publish `corpus` as one version through the seam (as the Indexer does); seconds."""
    from retrieval.stores import FileRecord

    started = time.perf_counter()
    build = versions.begin_build(DIM)
    for start in range(0, len(corpus.texts), add_batch):
        end = start + add_batch
        build.store.add(corpus.chunk_ids[start:end], corpus.texts[start:end],
                        corpus.metadatas[start:end], corpus.dense[start:end],
                        corpus.sparse[start:end])
    per_source: dict[str, int] = {}
    for meta in corpus.metadatas:
        per_source[meta["source"]] = per_source.get(meta["source"], 0) + 1
    for source, count in per_source.items():
        build.store.record_file(FileRecord(source, "0" * 64, 0.0, source, count, time.time()))
    build.store.set_meta(model=MODEL, dim=DIM)
    build.publish({"version": build.version, "model": MODEL, "dim": DIM,
                   "chunks": build.store.count, "created_at": time.time(), "chunk_size": 400,
                   "chunk_overlap": 60, "paths": []})
    return time.perf_counter() - started


def milvus_versions(db: Path, prefix: str, index_type: str = "FLAT") -> Any:
    from retrieval.stores.milvus import MilvusConfig, MilvusVersions

    config = MilvusConfig(uri=str(db), token=None, db="default", prefix=prefix,
                          index_type=index_type)
    return MilvusVersions(config, model=MODEL, lock_dir=config.lock_dir(db.parent))


def milvus_server_rss() -> int:
    """Resident bytes of the Milvus Lite server processes this process started (children)."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines()
                          if ":" in line)
        except OSError:
            continue
        if int(fields.get("PPid", "0").strip()) == os.getpid() and "milvus" in fields.get(
                "Name", ""):
            total += int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    return total


def version_filter_cost(versions: Any, queries: np.ndarray, runs: int) -> str:
    """Dense top-50 p50 on the served version with its visibility expression vs none: what
    sharing rows between versions (born/died) costs a search."""
    from retrieval.stores.milvus.schema import CHUNKS, dense_search_params

    reader = versions.open_version(versions.current_version())
    milvus = versions.milvus
    params = dense_search_params(milvus.config.index_type, 50)
    position = iter(range(10**9))

    def search(where: str) -> Any:
        return lambda: milvus.search(CHUNKS, [queries[next(position) % len(queries)]],
                                     "dense", 50, where, params, [])

    samples = time_interleaved({"filtered": search(reader.where), "bare": search("")},
                               runs=runs, warmup=3)
    return f"{ms(p50(samples['filtered']))} vs {ms(p50(samples['bare']))}"


def bench_batches(corpus: SyntheticCorpus, sizes: list[int], root: Path) -> list[list[str]]:
    """Rows/s of plain inserts by rows per request (the backend's rows, its collection)."""
    from retrieval.stores.milvus.build import chunk_row
    from retrieval.stores.milvus.connection import Milvus
    from retrieval.stores.milvus.schema import CHUNKS, create_missing

    versions = milvus_versions(root / "batches.db", "batches")
    milvus: Milvus = versions.milvus
    create_missing(milvus, DIM)
    rows_out = []
    n = len(corpus.texts)
    for size in sizes:
        rows = [chunk_row((size << 24) | i, 1, corpus.chunk_ids[i], corpus.texts[i],
                          corpus.metadatas[i], corpus.dense[i], corpus.sparse[i])
                for i in range(n)]
        megabytes = sum(r["dense"].nbytes + len(r["text"]) for r in rows[:size]) / 1e6
        started = time.perf_counter()
        for start in range(0, n, size):
            milvus.insert(CHUNKS, rows[start:start + size])
        seconds = time.perf_counter() - started
        rows_out.append([str(size), f"~{megabytes:.1f} MB", f"{n / seconds:,.0f}"])
        print("  batch " + " | ".join(rows_out[-1]), flush=True)
    return rows_out


def bench_size(n: int, args: argparse.Namespace, rng: np.random.Generator,
               tokens: ZipfTokens, tmp: Path) -> tuple[list[list[str]], list[list[str]]]:
    from retrieval.retriever import HybridRetriever
    from retrieval.settings import Settings
    from retrieval.stores import ServedIndex
    from retrieval.stores.local import LocalVersions
    from retrieval.stores.milvus.migrate import migrate_local_to_milvus

    print(f"  {n} chunks: generating", flush=True)
    corpus = synthetic_corpus(n, rng, tokens, sparse_tokens=args.sparse_tokens,
                              text_chars=args.text_chars)
    queries = synthetic_queries(corpus, rng, tokens, args.queries, args.query_sparse_tokens)
    q_dense, names = queries.dense, queries.names
    views = FixedQueryViews(queries.views)

    folder = tmp / f"n{n}"
    backends: dict[str, Any] = {"local (FAISS flat)": LocalVersions(folder / "index",
                                                                    device="cpu")}
    for index_type in args.index_types:
        backends[f"Milvus Lite {index_type}"] = milvus_versions(
            folder / f"lite-{index_type.lower()}.db", "bench", index_type)
    ingest_rows, rss_before = [], rss_bytes()
    for name, versions in backends.items():
        print(f"  {n} chunks: ingesting into {name}", flush=True)
        # Milvus creates its collections (and their indexes) on the first build: once per
        # deployment, timed apart from the ingest
        created, _ = time_once(lambda v=versions: v.begin_build(DIM).discard())
        seconds = ingest(versions, corpus, args.add_batch)
        ingest_rows.append((name, seconds, created))

    settings = Settings(_env_file=None, index_dir=folder / "index",  # type: ignore[call-arg]
                        embedding_model=MODEL, store="local",
                        milvus_uri=str(folder / "migrated.db"), faiss_device="cpu")
    print(f"  {n} chunks: migrating the local index into Milvus Lite", flush=True)
    migrated = migrate_local_to_milvus(settings)

    retrievers = {name: HybridRetriever.model_construct(
        index=ServedIndex(versions), embeddings=views, mode="hybrid", weights=WEIGHTS,
        k=args.k, candidates=args.candidates, rerank=20, access=None)
        for name, versions in backends.items()}
    order = iter(range(10**9))
    agree: dict[str, int] = {}

    def searcher(name: str) -> Any:
        def search() -> None:
            retrievers[name].search(names[next(order) % len(names)])
        return search

    samples = time_interleaved({name: searcher(name) for name in retrievers},
                               runs=args.queries, warmup=3)
    local_name = next(iter(retrievers))
    for name, retriever in retrievers.items():
        same = 0
        for query in names[:args.agreement_queries]:
            ours = [h.chunk_id for h in retriever.search(query)]
            theirs = [h.chunk_id for h in retrievers[local_name].search(query)]
            same += ours == theirs
        agree[name] = same
    memory = {"local (FAISS flat)": rss_bytes() - rss_before}
    lite_rss = milvus_server_rss()
    rows = []
    for name, seconds, created in ingest_rows:
        rows.append([f"{n:,}", name, f"{n / seconds:,.0f}", secs(created),
                     ms(p50(samples[name])),
                     ms(p99(samples[name])),
                     f"{agree[name]}/{args.agreement_queries}"])
        print("  " + " | ".join(rows[-1]), flush=True)
    filter_cost = version_filter_cost(backends[f"Milvus Lite {args.index_types[0]}"], q_dense,
                                      args.queries)
    extra = [[f"{n:,}", f"{migrated.seconds:.1f} s ({n / migrated.seconds:,.0f} rows/s)",
              human_bytes(memory["local (FAISS flat)"]),
              human_bytes(lite_rss) + f" ({len(args.index_types) + 1} Lite files open)",
              filter_cost]]
    print("  " + " | ".join(extra[-1]), flush=True)
    return rows, extra


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("bench.milvus", __doc__)
    parser.add_argument("--quick", action="store_true", help="500 chunks, few queries")
    parser.add_argument("--sizes", help="comma-separated chunk counts (default 10000,50000)")
    parser.add_argument("--index-types", default="FLAT,IVF_FLAT",
                        help="Milvus Lite dense index types to measure")
    parser.add_argument("--batches", default="250,500,1000,1500,2000",
                        help="rows per insert request to measure (empty: skip)")
    parser.add_argument("--batch-rows", type=int, default=6000)
    parser.add_argument("--queries", type=int)
    parser.add_argument("--agreement-queries", type=int, default=50)
    parser.add_argument("--add-batch", type=int, default=1000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--sparse-tokens", type=int, default=60)
    parser.add_argument("--query-sparse-tokens", type=int, default=16)
    parser.add_argument("--text-chars", type=int, default=1200)
    parser.add_argument("--vocab", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.sizes = comma_ints(args.sizes or ("500" if args.quick else "10000,50000"))
    args.index_types = [t.strip() for t in args.index_types.split(",") if t.strip()]
    args.queries = args.queries or (10 if args.quick else 300)
    args.agreement_queries = min(args.agreement_queries, args.queries)
    batches = comma_ints(args.batches) if not args.quick else [250, 500]
    run = BenchRun("bench.milvus", argv)

    import faiss

    faiss.omp_set_num_threads(cpu_count())
    rng = np.random.default_rng(args.seed)
    tokens = ZipfTokens(args.vocab, rng)
    rows, extra, batch_rows = [], [], []
    batch_count = min(args.batch_rows, 600 if args.quick else args.batch_rows)
    with tempfile.TemporaryDirectory(prefix="kotae-bench-milvus-") as tmp:
        if batches:
            corpus = synthetic_corpus(batch_count, rng, tokens,
                                      sparse_tokens=args.sparse_tokens,
                                      text_chars=args.text_chars)
            batch_rows = bench_batches(corpus, batches, Path(tmp))
        for n in args.sizes:
            size_rows, size_extra = bench_size(n, args, rng, tokens, Path(tmp))
            rows += size_rows
            extra += size_extra
    section = None if args.no_write else (args.section or
                                          ("milvus-quick" if args.quick else "milvus"))
    shared = os.getloadavg()[0] > 1.5
    publish("\n\n".join(part for part in [
        run.heading("Milvus Lite vs the local backend: ingest, hybrid search, migration"),
        run.machine_now() + ("\n- the machine was shared with other work during this run "
                             "(load above); numbers side by side stay comparable"
                             if shared else ""),
        f"Both backends written through the store seam by the same code (publish included), "
        f"{args.add_batch} chunks per add; HybridRetriever.search, mode hybrid, k = {args.k}, "
        f"candidates = {args.candidates}, {args.queries} queries per backend interleaved "
        "after 3 warm-ups (query views precomputed). 'same top-k' counts queries whose k "
        "chunk ids come back in the same order as the local backend's.",
        table(["chunks", "backend", "ingest rows/s", "first build setup", "hybrid p50",
               "hybrid p99",
               "same top-k as local"], rows),
        table(["chunks", "migrate-to-milvus (local → a new Lite file, collections created "
               "included)", "our process RSS growth "
               "(local indexes + clients)", "Milvus Lite server RSS",
               f"dense top-50 p50 with / without the version filter ({args.index_types[0]})"],
              extra),
        (f"Insert requests by size ({batch_count} rows, 1024-d + "
         f"sparse + text each):\n\n" + table(["rows per request", "request size", "rows/s"],
                                            batch_rows)) if batch_rows else "",
        "Standalone / cluster settings (HNSW, GPU_CAGRA) are in the docstring of "
        "bench/milvus.py: they cannot run on Milvus Lite.",
    ] if part), section)


if __name__ == "__main__":
    main()
