"""Retrieval benchmarks, each side by side with its baseline in the same run.

    .venv/bin/python -m bench.retrieval            # default sizes, ~6 min on 2 cores
    .venv/bin/python -m bench.retrieval --quick    # small sizes, ~1.5 min
    .venv/bin/python -m bench.retrieval --only search,memory --sizes 10000

a. embeddings: BGEM3Embeddings vs FlagEmbedding's own `encode` on a model of the real bge-m3
   architecture (random weights), same inputs, outputs checked equal; query latency vs a bare
   forward pass.
b. search: HybridRetriever (dense + sparse) vs LangChain's stock FAISS retriever, synthetic
   chunks, the query embedding precomputed for both so only the search is timed.
c. reindex: an unchanged corpus (incremental) vs a full build, tiny model.
d. memory: bytes per chunk on disk and in RAM, ours vs the stock FAISS store.

Results go to the `retrieval` (or `retrieval-quick`) section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    BGE_M3_ARCH_DIR,
    TINY_DIR,
    BenchRun,
    bench_parser,
    comma_ints,
    cpu_count,
    ensure_model,
    flag_lexical,
    folder_bytes,
    human_bytes,
    met,
    ms,
    p50,
    p99,
    publish,
    quiet_model_loading,
    rss_bytes,
    secs,
    set_threads,
    table,
    time_interleaved,
)

# Rows per HybridStore.add when building the synthetic stores: one embedding batch's worth
# (the indexer's batches vary with a token budget; 32 is its batch of full-length chunks).
ADD_BATCH = 32

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = REPO_ROOT / "kotae" / "samples"
PARTS = ("embed", "search", "reindex", "memory")
DIM = 1024
QUERY_TEXT = "How many days of paid vacation do new employees get in their first year?"

# --------------------------------------------------------------------------- models


def sample_text() -> str:
    return "\n\n".join(path.read_text(encoding="utf-8", errors="ignore")
                       for path in sorted(SAMPLES_DIR.iterdir())
                       if path.suffix in {".md", ".txt", ".rst", ".html"})


def make_passages(tokenizer: Any, count: int, tokens: int) -> list[str]:
    """`count` different windows of the sample corpus, each a little longer than `tokens`, so
    truncation at `tokens` makes them all (about) `tokens` long."""
    ids = tokenizer(sample_text(), add_special_tokens=False)["input_ids"]
    window = tokens + 16
    stride = max(1, (len(ids) - window) // max(count, 1))
    passages = []
    for number in range(count):
        start = (number * stride) % max(1, len(ids) - window)
        passages.append(tokenizer.decode(ids[start:start + window]))
    return passages


def make_query(tokenizer: Any, tokens: int) -> str:
    """A question cut to about `tokens` tokens including <s> and </s>."""
    ids = tokenizer(QUERY_TEXT * 3, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[:max(1, tokens - 2)])


# --------------------------------------------------------------------------- a. embeddings


def sparse_agreement(ours: list[dict[int, float]], flag: list[dict[str, Any]]) -> str:
    """"identical", or how far apart. FlagEmbedding keys lexical weights by str(token id)
    with numpy float values. Ours run the sparse head text by text (retrieval.m3_forward),
    `encode` on the whole batch, so large batches may differ in the last bit."""
    theirs = [flag_lexical(weights) for weights in flag]
    if ours == theirs:
        return "identical"
    if any(a.keys() != b.keys() for a, b in zip(ours, theirs, strict=True)):
        return "different token sets"
    worst = max(abs(a[t] - b[t]) for a, b in zip(ours, theirs, strict=True) for t in a)
    return f"same tokens, max |Δweight| {worst:.1e}"


def _compare_encode(embeddings: Any, passages: list[str], label: str, colbert: bool,
                    args: argparse.Namespace) -> tuple[float, list[str], str]:
    """Time ours and `encode` on the same passages (interleaved) and compare their outputs."""
    flag_model = embeddings.flag_model
    calls = {
        "ours": lambda: embeddings.encode_passages(passages, colbert=colbert),
        "flag": lambda: flag_model.encode(
            passages, batch_size=args.batch_size, max_length=args.passage_tokens,
            return_dense=True, return_sparse=True, return_colbert_vecs=colbert),
    }
    times: dict[str, list[float]] = {"ours": [], "flag": []}
    outputs: dict[str, Any] = {}
    for round_number in range(args.encode_rounds):
        order = ["ours", "flag"] if round_number % 2 == 0 else ["flag", "ours"]
        for name in order:
            print(f"  {len(passages)} passages, {label}: {name} (round {round_number + 1})",
                  flush=True)
            started = time.perf_counter()
            outputs[name] = calls[name]()
            times[name].append(time.perf_counter() - started)
    ours_s, flag_s = p50(times["ours"]), p50(times["flag"])
    ours_out, flag_out = outputs["ours"], outputs["flag"]
    dense_same = bool(np.array_equal(ours_out.dense, flag_out["dense_vecs"]))
    sparse_same = sparse_agreement(ours_out.sparse, flag_out["lexical_weights"])
    check = (f"{label}: dense identical = {dense_same} (max |Δ| "
             f"{np.abs(ours_out.dense - flag_out['dense_vecs']).max():.1e}), "
             f"sparse weights {sparse_same}")
    if colbert:
        colbert_same = all(np.array_equal(a, b) for a, b in
                           zip(ours_out.colbert, flag_out["colbert_vecs"], strict=True))
        check += f", ColBERT identical = {colbert_same}"
    print("  " + check, flush=True)
    row = [label, f"{len(passages) / ours_s:.2f}", f"{len(passages) / flag_s:.2f}",
           secs(ours_s), secs(flag_s), f"{flag_s / ours_s:.2f}×"]
    return flag_s / ours_s, row, check


def bench_embeddings(args: argparse.Namespace) -> str:
    import torch

    from retrieval.embeddings import BGEM3Embeddings

    path = ensure_model(BGE_M3_ARCH_DIR, "BGE_M3")
    embeddings = BGEM3Embeddings(
        model_name_or_path=str(path), device="cpu", use_fp16=False,
        batch_size=args.batch_size, passage_max_tokens=args.passage_tokens,
        query_max_tokens=args.query_max_tokens)
    flag_model = embeddings.flag_model
    tokenizer, model = flag_model.tokenizer, flag_model.model
    batch = args.batch_size
    # Warm both paths on a small input first (allocator, oneDNN kernels), then time.
    warm = make_passages(tokenizer, 2, args.passage_tokens)
    embeddings.encode_passages(warm)
    flag_model.encode(warm, batch_size=batch, max_length=args.passage_tokens,
                      return_dense=True, return_sparse=True)
    views = [("dense + sparse", False)] + ([("dense + sparse + ColBERT", True)]
                                           if args.colbert else [])
    rows, checks, goal_lines, all_lengths = [], [], [], []
    for count in args.passages:
        passages = make_passages(tokenizer, count, args.passage_tokens)
        all_lengths += [len(ids) for ids in tokenizer(
            passages, truncation=True, max_length=args.passage_tokens)["input_ids"]]
        forwards = -(-count // batch)
        expected = (forwards + 1) / forwards  # encode runs its first batch twice
        for label, colbert in views:
            ratio, row, check = _compare_encode(embeddings, passages, label, colbert, args)
            rows.append([str(count), *row, f"{expected:.2f}×"])
            checks.append(f"{count} passages, {check}")
            goal_lines.append(
                f"- {count} passages, {label}: goal ≥ 1.8×: {met(ratio >= 1.8)} "
                f"({ratio:.2f}×; `encode` does {forwards + 1} forward passes of ≤ {batch} to "
                f"our {forwards}, so {expected:.2f}× is what skipping the probe can give)")

    # Query latency: ours vs encode vs a bare forward pass on the already tokenised query.
    query = make_query(tokenizer, args.query_tokens)
    encoded = tokenizer([query], truncation=True, max_length=args.query_max_tokens,
                        return_tensors="pt")
    query_tokens = int(encoded["input_ids"].shape[1])

    def bare(sparse: bool) -> Any:
        with torch.inference_mode():
            return model(encoded, return_dense=True, return_sparse=sparse)

    def single_thread_query() -> Any:
        torch.set_num_threads(1)
        try:
            return embeddings.embed_query(query)
        finally:
            torch.set_num_threads(args.threads)

    contenders = {
        "ours: embed_query": lambda: embeddings.embed_query(query),
        "ours: embed_query, torch threads = 1": single_thread_query,
        "FlagEmbedding encode([q])": lambda: flag_model.encode(
            [query], batch_size=batch, max_length=args.query_max_tokens,
            return_dense=True, return_sparse=True),
        "bare forward (dense)": lambda: bare(False),
        "bare forward (dense + sparse)": lambda: bare(True),
    }
    print(f"  query latency ({args.query_runs} runs each)", flush=True)
    query_times = time_interleaved(contenders, args.query_runs, warmup=1)
    bare_s = p50(query_times["bare forward (dense)"])
    ours_q = p50(query_times["ours: embed_query"])
    query_rows = [[name, ms(p50(s)), ms(p99(s)), f"{p50(s) / bare_s:.2f}×"]
                  for name, s in query_times.items()]

    return "\n\n".join([
        f"### a. Embedding throughput and query latency (real bge-m3 architecture, random "
        f"weights: 24 layers, 1024 hidden; CPU, float32, torch threads = {args.threads})",
        f"Passages of {min(all_lengths)}–{max(all_lengths)} tokens, batch size {batch} for "
        f"both, {args.encode_rounds} timed call(s) each (p50), interleaved. 'expected' is the "
        "speed-up from skipping `encode`'s batch-size probe alone (it re-runs the first batch).",
        table(["passages", "views", "ours passages/s", "FlagEmbedding encode passages/s",
               "ours", "encode", "speed-up", "expected"], rows),
        "\n".join(f"- outputs, {check}" for check in checks),
        "\n".join(goal_lines),
        f"Query of {query_tokens} tokens, {args.query_runs} runs after one warm-up, interleaved:",
        table(["path", "p50", "p99", "p50 vs bare forward (dense)"], query_rows),
        f"- goal ours ≤ 1.2× bare forward: {met(ours_q <= 1.2 * bare_s)} "
        f"({ours_q / bare_s:.2f}×); encode / ours = "
        f"{p50(query_times['FlagEmbedding encode([q])']) / ours_q:.2f}×",
    ])


# --------------------------------------------------------------------------- synthetic chunks


@dataclass
class SyntheticCorpus:
    chunk_ids: list[str]
    texts: list[str]
    metadatas: list[dict[str, Any]]
    dense: np.ndarray  # (n, DIM) float32, L2-normalised
    sparse: list[dict[int, float]]


class ZipfTokens:
    """Token ids with Zipf-like frequencies (rank r drawn with p ∝ 1/(r + 2))."""

    def __init__(self, vocab: int, rng: np.random.Generator) -> None:
        weights = 1.0 / (np.arange(vocab) + 2.0)
        self.p = weights / weights.sum()
        self.ids = rng.permutation(vocab) + 4  # 0..3 are bge-m3's special tokens
        self.rng = rng

    def draw(self, rows: int, per_row: int) -> list[dict[int, float]]:
        """`per_row` distinct tokens per row (frequent ones repeat, so draw twice as many)."""
        ranks = self.rng.choice(len(self.p), size=(rows, 2 * per_row), p=self.p)
        weights = self.rng.uniform(0.02, 0.35, size=(rows, per_row)).astype(np.float32)
        result = []
        for row, row_weights in zip(ranks, weights, strict=True):
            _, first = np.unique(row, return_index=True)
            distinct = row[np.sort(first)[:per_row]]
            result.append(dict(zip(self.ids[distinct].tolist(), row_weights.tolist(),
                                   strict=False)))
        return result


def _random_texts(rng: np.random.Generator, count: int, chars: int) -> list[str]:
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", np.uint8)
    words = ["".join(chr(c) for c in rng.choice(letters, size=int(rng.integers(2, 10))))
             for _ in range(3000)]
    texts = []
    for _ in range(count):
        picked = rng.integers(0, len(words), size=chars // 3)
        texts.append(" ".join(words[i] for i in picked)[:chars])
    return texts


def synthetic_corpus(n: int, rng: np.random.Generator, tokens: ZipfTokens, *,
                     sparse_tokens: int, text_chars: int) -> SyntheticCorpus:
    """Chunks shaped like the indexer's: ~`text_chars` texts, the metadata keys that
    `retrieval.chunking.chunk_source` writes."""
    dense = rng.standard_normal((n, DIM), dtype=np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    templates = _random_texts(rng, 2048, text_chars)
    texts, metadatas, chunk_ids = [], [], []
    for i in range(n):
        doc, number = divmod(i, 20)
        text = templates[i % len(templates)]
        title = f"Document {doc}"
        heading = [title, f"Section {number // 5}"]
        texts.append(text)
        chunk_ids.append(f"{doc:012x}:{number}")
        metadatas.append({
            "source": f"/srv/docs/team/doc-{doc:06d}.md", "title": title, "kind": "markdown",
            "file_hash": f"{doc:064x}", "mtime": 1.7e9 + doc, "heading_path": heading,
            "chunk_number": number, "content_hash": f"{i:064x}",
        })
    return SyntheticCorpus(chunk_ids, texts, metadatas, dense,
                           tokens.draw(n, sparse_tokens))


@dataclass
class SyntheticQueries:
    """Queries near the corpus: a noisy copy of a random chunk's vector, Zipf tokens."""

    names: list[str]
    dense: np.ndarray
    sparse: list[dict[int, float]]
    views: dict[str, Any]  # name -> EncodedBatch, what FixedQueryViews returns


def synthetic_queries(corpus: SyntheticCorpus, rng: np.random.Generator, tokens: ZipfTokens,
                      count: int, sparse_tokens: int) -> SyntheticQueries:
    from retrieval.embeddings import EncodedBatch

    picks = rng.integers(0, len(corpus.dense), size=count)
    dense = corpus.dense[picks] + rng.standard_normal((count, DIM), dtype=np.float32) * 0.03
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    sparse = tokens.draw(count, sparse_tokens)
    names = [f"query {i}" for i in range(count)]
    views = {name: EncodedBatch(dense[i:i + 1].copy(), [sparse[i]], None)
             for i, name in enumerate(names)}
    return SyntheticQueries(names, dense, sparse, views)


class FixedQueryViews:
    """Stands in for BGEM3Embeddings in HybridRetriever: returns precomputed query views, so
    the timed part is the search alone (HybridRetriever has no way to take them directly)."""

    def __init__(self, views: dict[str, Any]) -> None:
        self.views = views

    def encode_query(self, text: str, *, colbert: bool = False) -> Any:
        return self.views[text]

    @property
    def dimension(self) -> int:
        return DIM


def _stock_embeddings(vectors: dict[str, list[float]]) -> Any:
    from langchain_core.embeddings import Embeddings

    class FixedQueryEmbeddings(Embeddings):
        """The same precomputed query vectors, for LangChain's FAISS."""

        def embed_query(self, text: str) -> list[float]:
            return vectors[text]

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            raise NotImplementedError("documents are added with precomputed vectors")

    return FixedQueryEmbeddings()


def build_ours(root: Path, corpus: SyntheticCorpus, add_batch: int) -> float:
    """Write and publish one index version the way the Indexer does; returns seconds."""
    from retrieval.store import FileRecord, HybridStore
    from retrieval.versions import IndexLayout

    started = time.perf_counter()
    layout = IndexLayout(root)
    version, build_dir = layout.new_build()
    store = HybridStore(build_dir, DIM, device="cpu")
    for start in range(0, len(corpus.texts), add_batch):
        end = start + add_batch
        store.add(corpus.chunk_ids[start:end], corpus.texts[start:end],
                  corpus.metadatas[start:end], corpus.dense[start:end],
                  corpus.sparse[start:end])
    chunks_per_source: dict[str, int] = {}
    for meta in corpus.metadatas:  # each document recorded as a file, as the Indexer does
        chunks_per_source[meta["source"]] = chunks_per_source.get(meta["source"], 0) + 1
    for source, count in chunks_per_source.items():
        store.record_file(FileRecord(source, "0" * 64, 0.0, source, count, time.time()))
    store.set_meta(model="synthetic", dim=DIM)
    store.save()
    count = store.count
    store.close()
    layout.publish(version, build_dir, {"version": version, "model": "synthetic", "dim": DIM,
                                        "chunks": count, "created_at": time.time()})
    return time.perf_counter() - started


def build_stock(corpus: SyntheticCorpus, embeddings: Any) -> tuple[float, Any]:
    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy

    started = time.perf_counter()
    store = FAISS.from_embeddings(
        list(zip(corpus.texts, corpus.dense, strict=True)), embeddings,
        metadatas=corpus.metadatas, ids=corpus.chunk_ids,
        distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)
    return time.perf_counter() - started, store


def rss_probe(kind: str, folder: str) -> dict[str, float]:
    """Run in a fresh process: RSS growth from opening a store, and after its first query."""
    set_threads(cpu_count())
    rng = np.random.default_rng(1)
    query = rng.standard_normal(DIM).astype(np.float32)
    query /= np.linalg.norm(query)
    if kind == "ours":
        from retrieval.store import SPARSE_FILE
        from retrieval.versions import LiveIndex

        before, started = rss_bytes(), time.perf_counter()
        store = LiveIndex(Path(folder), device="cpu").store()
        open_s, opened = time.perf_counter() - started, rss_bytes()
        store.search_dense(query[None, :], 50)
        store.search_sparse({10: 0.3, 200: 0.2, 3000: 0.1}, 50)
        queried = rss_bytes()
        # What the store must hold in RAM: FAISS vectors + ids, and the CSR arrays of sparse.npz.
        arrays = int(store.count * (DIM * 4 + 8))
        with np.load(store.folder / SPARSE_FILE, allow_pickle=False) as saved:
            arrays += sum(saved[name].nbytes for name in saved.files)
    else:
        from langchain_community.vectorstores import FAISS

        embeddings = _stock_embeddings({"q": query.tolist()})
        before, started = rss_bytes(), time.perf_counter()
        vectorstore = FAISS.load_local(folder, embeddings, allow_dangerous_deserialization=True)
        open_s, opened = time.perf_counter() - started, rss_bytes()
        vectorstore.as_retriever(search_kwargs={"k": 5}).invoke("q")
        queried = rss_bytes()
        arrays = int(vectorstore.index.ntotal * DIM * 4)
    return {"open": opened - before, "after_query": queried - before, "arrays": arrays,
            "open_s": open_s}


def _probe(kind: str, folder: Path) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.retrieval", "--rss-probe", kind, str(folder)],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def time_search(root: Path, stock_store: Any, views: dict[str, Any], names: list[str],
                args: argparse.Namespace) -> tuple[list[str], list[str], bool]:
    """Interleaved retriever calls on both sides, then where our time goes."""
    from retrieval.retriever import HybridRetriever
    from retrieval.versions import LiveIndex

    live = LiveIndex(root, device="cpu")
    ours = HybridRetriever.model_construct(
        index=live, embeddings=FixedQueryViews(views), mode="hybrid",
        weights=[0.4, 0.2, 0.4], k=args.k, candidates=args.candidates)
    stock = stock_store.as_retriever(search_kwargs={"k": args.k})
    ours_queries, stock_queries = itertools.cycle(names), itertools.cycle(names)
    samples = time_interleaved({"ours": lambda: ours.invoke(next(ours_queries)),
                                "stock": lambda: stock.invoke(next(stock_queries))},
                               runs=args.search_queries, warmup=5)
    ours_p50, stock_p50 = p50(samples["ours"]), p50(samples["stock"])
    search_row = [ms(ours_p50), ms(p99(samples["ours"])), ms(stock_p50),
                  ms(p99(samples["stock"])), f"{ours_p50 / stock_p50:.2f}×"]

    # The retriever's own `search_s` timing, and the two store calls it makes, alone.
    store = live.store()
    parts: dict[str, list[float]] = {"search_s": [], "total": [], "dense": [], "sparse": []}
    for name in names[:100]:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        ours.search(name, timings=timings)
        parts["total"].append(time.perf_counter() - started)
        parts["search_s"].append(timings["search_s"])
        started = time.perf_counter()
        store.search_dense(views[name].dense, max(args.k, args.candidates))
        parts["dense"].append(time.perf_counter() - started)
        started = time.perf_counter()
        store.search_sparse(views[name].sparse[0], max(args.k, args.candidates))
        parts["sparse"].append(time.perf_counter() - started)
    search_s, total = p50(parts["search_s"]), p50(parts["total"])
    merge = search_s - p50(parts["dense"]) - p50(parts["sparse"])
    breakdown_row = [ms(total), ms(search_s), ms(p50(parts["dense"])),
                     ms(p50(parts["sparse"])), ms(max(merge, 0.0)), ms(total - search_s)]
    return search_row, breakdown_row, ours_p50 <= 1.2 * stock_p50


def bench_search_and_memory(args: argparse.Namespace, parts: set[str]) -> str:

    rng = np.random.default_rng(args.seed)
    tokens = ZipfTokens(args.vocab, rng)
    search_rows, build_rows, breakdown_rows, memory_rows, notes = [], [], [], [], []
    goal_ok = True
    for n in args.sizes:
        print(f"  {n} synthetic chunks: generating", flush=True)
        corpus = synthetic_corpus(n, rng, tokens, sparse_tokens=args.sparse_tokens,
                                  text_chars=args.text_chars)
        unique_tokens = float(np.mean([len(s) for s in corpus.sparse]))
        queries = synthetic_queries(corpus, rng, tokens, args.search_queries,
                                    args.query_sparse_tokens)
        q_dense, names, views = queries.dense, queries.names, queries.views
        stock_vectors = {name: q_dense[i].tolist() for i, name in enumerate(names)}

        with tempfile.TemporaryDirectory(prefix="kotae-bench-") as tmp:
            root = Path(tmp) / "index"
            print(f"  {n}: building ours (HybridStore.add in batches of {args.add_batch})",
                  flush=True)
            ours_build_s = build_ours(root, corpus, args.add_batch)
            print(f"  {n}: building stock FAISS.from_embeddings", flush=True)
            stock_build_s, stock_store = build_stock(corpus, _stock_embeddings(stock_vectors))
            build_rows.append([f"{n:,}", secs(ours_build_s), secs(stock_build_s),
                               f"{ours_build_s / stock_build_s:.1f}×"])
            stock_dir = Path(tmp) / "stock"
            stock_store.save_local(str(stock_dir))

            if "search" in parts:
                print(f"  {n}: {args.search_queries} queries each, interleaved", flush=True)
                search_row, breakdown_row, ok = time_search(
                    root, stock_store, views, names, args)
                search_rows.append([f"{n:,}", *search_row])
                breakdown_rows.append([f"{n:,}", *breakdown_row])
                goal_ok &= ok

            if "memory" in parts:
                version_dir = next(p for p in (root / "versions").iterdir() if p.is_dir())
                ours_disk = folder_bytes(version_dir)
                stock_disk = folder_bytes(stock_dir)
                print(f"  {n}: memory probes (fresh processes)", flush=True)
                ours_rss = _probe("ours", root)
                stock_rss = _probe("stock", stock_dir)
                memory_rows.append([
                    f"{n:,}", human_bytes(ours_disk / n), human_bytes(stock_disk / n),
                    human_bytes(ours_rss["open"] / n), human_bytes(ours_rss["after_query"] / n),
                    human_bytes(stock_rss["open"] / n),
                    human_bytes(stock_rss["after_query"] / n),
                    human_bytes(ours_rss["arrays"] / n), ms(ours_rss["open_s"]),
                    ms(stock_rss["open_s"])])
                files = ", ".join(f"{p.name} {human_bytes(p.stat().st_size / n)}"
                                  for p in sorted(version_dir.iterdir()) if p.is_file())
                notes.append(f"- {n:,} chunks, ours on disk per chunk: {files}")
            del stock_store
        notes.append(f"- {n:,} chunks: {unique_tokens:.1f} distinct sparse tokens per chunk "
                     f"(vocab {args.vocab:,}), texts {args.text_chars} chars")

    sections = []
    if "search" in parts:
        sections += [
            f"### b. Search latency, {args.search_queries} queries per size, k = {args.k}, "
            f"candidates = {args.candidates} (synthetic normalised {DIM}-d vectors, Zipf sparse "
            f"weights; query embedding precomputed for both sides)",
            "Ours: `HybridRetriever.invoke` in mode `hybrid` (FAISS flat IP + sparse lexical "
            "scores + merge + SQLite rows) through a published `LiveIndex`. Stock: "
            "`langchain_community` `FAISS.as_retriever().invoke` with MAX_INNER_PRODUCT (dense "
            "only, in-memory docstore). Calls interleaved, 5 warm-up each.",
            table(["chunks", "ours p50", "ours p99", "stock p50", "stock p99",
                   "ours / stock (p50)"], search_rows),
            f"- goal hybrid ≤ 1.2× stock: {met(goal_ok)}",
            "Where our time goes (p50 over 100 queries; `search_s` is the retriever's own "
            "timing of dense + sparse + merge):",
            table(["chunks", "search() total", "search_s", "store.search_dense",
                   "store.search_sparse", "merge (rest of search_s)",
                   "rows + hits (total − search_s)"], breakdown_rows),
        ]
    sections += [
        "Build time (ours: `HybridStore.add` in batches of "
        f"{args.add_batch} as the Indexer does, `save`, publish; stock: "
        "`FAISS.from_embeddings`, in memory, nothing written):",
        table(["chunks", "ours build", "stock build", "ours / stock"], build_rows),
    ]
    if "memory" in parts:
        sections += [
            "### d. Bytes per chunk",
            "Disk: all files of the version folder / chunks (ours) vs `save_local` folder "
            "(stock). RAM: RSS growth of a fresh process opening the store (ours: "
            "`LiveIndex.store()`, stock: `FAISS.load_local`), then after one query; 'arrays' is "
            "what our store must hold (FAISS vectors + ids + CSR matrix). Open time is the "
            "same call's wall time (ours also runs inside every incremental `kotae index`, "
            "which opens the served version to read its file list).",
            table(["chunks", "ours disk", "stock disk", "ours RAM open", "ours RAM after query",
                   "stock RAM open", "stock RAM after query", "ours arrays", "ours open time",
                   "stock open time"], memory_rows),
        ]
    sections += notes
    return "\n\n".join(sections)


# --------------------------------------------------------------------------- c. reindex


def bench_reindex(args: argparse.Namespace) -> str:
    from retrieval.embeddings import BGEM3Embeddings
    from retrieval.indexer import Indexer
    from retrieval.settings import Settings

    model_dir = ensure_model(TINY_DIR, "TINY")
    with tempfile.TemporaryDirectory(prefix="kotae-bench-") as tmp:
        docs = Path(tmp) / "docs"
        for copy in range(args.corpus_copies):
            shutil.copytree(SAMPLES_DIR, docs / f"copy{copy}")
        corpus_bytes = folder_bytes(docs)
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            embedding_model=str(model_dir), embedding_device="cpu", index_dir=Path(tmp) / "index",
            docs_dir=docs, faiss_device="cpu", retrieval_mode="hybrid", openai_api_key=None)
        embeddings = BGEM3Embeddings.from_settings(settings)
        _ = embeddings.flag_model
        indexer = Indexer(settings, embeddings)
        first = indexer.run([docs])
        files = len(first.added)
        print(f"  first build: {first.chunks_total} chunks from {files} files, "
              f"{first.seconds:.2f} s", flush=True)
        unchanged, full = [], []
        for _ in range(args.reindex_rounds):
            summary = indexer.run([docs])
            assert summary.chunks_embedded == 0 and not summary.switched
            unchanged.append(summary.seconds)
            summary = indexer.run([docs], full=True)
            assert summary.chunks_embedded == first.chunks_total
            full.append(summary.seconds)
        ratio = p50(unchanged) / p50(full)
    return "\n\n".join([
        f"### c. Reindex, tiny model (TINY shape), bundled samples ×{args.corpus_copies}: "
        f"{files} files, {human_bytes(corpus_bytes)}, {first.chunks_total} chunks; "
        f"{args.reindex_rounds} rounds, interleaved (p50)",
        table(["run", "p50", "min", "max"], [
            ["incremental, nothing changed", secs(p50(unchanged)), secs(min(unchanged)),
             secs(max(unchanged))],
            ["full rebuild (`full=True`)", secs(p50(full)), secs(min(full)), secs(max(full))],
        ]),
        f"- unchanged / full = {ratio:.1%}; goal ≤ 2%: {met(ratio <= 0.02)}",
    ])


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = bench_parser("bench.retrieval", __doc__)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (~1.5 min); writes the `retrieval-quick` section")
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--threads", type=int, default=cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    group = parser.add_argument_group("a. embeddings")
    group.add_argument("--passages", help="comma-separated passage counts, one row each")
    group.add_argument("--passage-tokens", type=int)
    group.add_argument("--batch-size", type=int, default=8)
    group.add_argument("--encode-rounds", type=int, help="timed calls per contender")
    group.add_argument("--colbert", action="store_true",
                       help="also compare dense + sparse + ColBERT (doubles the time of a.)")
    group.add_argument("--query-tokens", type=int, default=16)
    group.add_argument("--query-max-tokens", type=int, default=128)
    group.add_argument("--query-runs", type=int)
    group = parser.add_argument_group("b./d. search and memory")
    group.add_argument("--sizes", help="comma-separated chunk counts")
    group.add_argument("--search-queries", type=int)
    group.add_argument("--k", type=int, default=5)
    group.add_argument("--candidates", type=int, default=50)
    group.add_argument("--vocab", type=int, default=30_000)
    group.add_argument("--sparse-tokens", type=int, default=60)
    group.add_argument("--query-sparse-tokens", type=int, default=16)
    group.add_argument("--text-chars", type=int, default=400)
    group.add_argument("--add-batch", type=int, help="chunks per HybridStore.add (Indexer: 32)")
    group = parser.add_argument_group("c. reindex")
    group.add_argument("--corpus-copies", type=int, default=5)
    group.add_argument("--reindex-rounds", type=int)
    parser.add_argument("--rss-probe", nargs=2, metavar=("KIND", "FOLDER"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    preset: dict[str, Any] = (
        {"passages": "8", "passage_tokens": 128, "encode_rounds": 1, "query_runs": 5,
         "sizes": "2000,10000", "search_queries": 50, "reindex_rounds": 2}
        if args.quick else
        {"passages": "16,8", "passage_tokens": 256, "encode_rounds": 2, "query_runs": 15,
         "sizes": "10000,100000", "search_queries": 200, "reindex_rounds": 3})
    preset["add_batch"] = ADD_BATCH
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.sizes = comma_ints(args.sizes)
    args.passages = comma_ints(args.passages)
    args.parts = {part.strip() for part in args.only.split(",") if part.strip()}
    unknown = args.parts - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
    args.section = args.section or ("retrieval-quick" if args.quick else "retrieval")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    quiet_model_loading()
    warnings.filterwarnings("ignore", message=".*langchain-community.*sunset",
                            category=DeprecationWarning)
    args = parse_args(argv)
    if args.rss_probe:
        print(json.dumps(rss_probe(*args.rss_probe)))
        return
    set_threads(args.threads)

    bench = BenchRun("bench.retrieval", argv)
    parts_md = []
    if "embed" in args.parts:
        print("a. embeddings", flush=True)
        parts_md.append(bench_embeddings(args))
    if args.parts & {"search", "memory"}:
        print("b./d. search and memory", flush=True)
        parts_md.append(bench_search_and_memory(args, args.parts))
    if "reindex" in args.parts:
        print("c. reindex", flush=True)
        parts_md.append(bench_reindex(args))
    publish("\n\n".join([bench.heading("Retrieval"), bench.machine_now(), *parts_md]),
            None if args.no_write else args.section)


if __name__ == "__main__":
    main()
