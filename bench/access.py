"""Access-control retrieval cost: filtered vs unfiltered search, side by side in one run.

    .venv/bin/python -m bench.access             # 10k and 100k chunks (~10 min on 2 cores)
    .venv/bin/python -m bench.access --quick     # 2k chunks, a smoke run

Synthetic chunks (bench.retrieval's corpus: 1024-d unit vectors, Zipf sparse weights, 20
chunks a document) spread over 100 folders; an access file with default "nobody" and one set
of 1, 10 or 90 folders, named by a channel, makes 1%, 10% or 90% of the chunks visible.
Each query runs through `HybridRetriever.search` (mode hybrid, the query views precomputed so
only the search is timed) once unfiltered and once as that channel, interleaved.

Recall is measured against exhaustive scoring of the visible chunks only: `dense` against the
exact top-k by cosine (FAISS flat search with an id selector is exact, so 1.0 is the goal);
`hybrid` against the top-k of the combined score over every visible chunk, beside the same
measure for unfiltered search over all chunks (candidate generation, not the filter, is
what can miss there).

Results go to the `access` (or `access-quick`) section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    BenchRun,
    bench_parser,
    comma_ints,
    cpu_count,
    met,
    ms,
    p50,
    p99,
    publish,
    table,
    time_interleaved,
)
from bench.retrieval import (
    FixedQueryViews,
    ZipfTokens,
    build_ours,
    synthetic_corpus,
    synthetic_queries,
)

FOLDERS = 100
CHANNEL = "C0VISIBLE"
WEIGHTS = [0.4, 0.2, 0.4]


def in_folders(corpus: Any) -> None:
    """Documents spread over FOLDERS folders, so a set of f folders holds f% of the chunks."""
    for meta in corpus.metadatas:
        doc = int(meta["source"].rsplit("-", 1)[1].split(".")[0])
        meta["source"] = f"/srv/docs/g{doc % FOLDERS:02d}/doc-{doc:06d}.md"


def access_file(folder: Path, percent: int) -> Path:
    paths = ", ".join(f'"/srv/docs/g{g:02d}"' for g in range(percent))
    path = folder / f"access-{percent}.toml"
    path.write_text(f'default = "nobody"\n\n[[sets]]\nname = "visible"\npaths = [{paths}]\n'
                    f'channels = ["{CHANNEL}"]\n', encoding="utf-8")
    return path


def exhaustive(store: Any, rows: np.ndarray, q_dense: np.ndarray, q_sparse: dict[int, float],
               k: int) -> tuple[list[int], list[int]]:
    """(exact dense top-k, exact hybrid top-k) row ids among `rows`, by scoring every one."""
    dense = store.vectors(rows.tolist()) @ q_dense
    sparse = store.sparse_scores_of(q_sparse, rows)
    hybrid = (WEIGHTS[0] * dense + WEIGHTS[1] * sparse) / (WEIGHTS[0] + WEIGHTS[1])
    return (rows[np.argsort(-dense, kind="stable")[:k]].tolist(),
            rows[np.argsort(-hybrid, kind="stable")[:k]].tolist())


def recall(found: list[int], truth: list[int]) -> float:
    return len(set(found) & set(truth)) / max(len(truth), 1)


def bench_size(n: int, args: argparse.Namespace, rng: np.random.Generator,
               tokens: ZipfTokens) -> tuple[list[list[str]], bool]:
    from retrieval.access import AccessControl, Audience
    from retrieval.retriever import HybridRetriever
    from retrieval.stores.local import LocalVersions
    from retrieval.stores.served import ServedIndex

    print(f"  {n} chunks: generating", flush=True)
    corpus = synthetic_corpus(n, rng, tokens, sparse_tokens=args.sparse_tokens,
                              text_chars=args.text_chars)
    in_folders(corpus)
    queries = synthetic_queries(corpus, rng, tokens, args.queries, args.query_sparse_tokens)
    q_dense, q_sparse, names = queries.dense, queries.sparse, queries.names
    views = FixedQueryViews(queries.views)
    rows_out: list[list[str]] = []
    goals = True
    with tempfile.TemporaryDirectory(prefix="kotae-bench-access-") as tmp:
        root = Path(tmp) / "index"
        print(f"  {n} chunks: building the index", flush=True)
        build_ours(root, corpus, add_batch=256)
        index = ServedIndex(LocalVersions(root, device="cpu"))
        store = index.store()
        all_rows = np.sort(np.asarray(store.rows_of(list(store.files())), np.int64))

        def retriever(access: AccessControl | None, mode: str = "hybrid") -> HybridRetriever:
            return HybridRetriever.model_construct(
                index=index, embeddings=views, mode=mode, weights=WEIGHTS, k=args.k,
                candidates=args.candidates, rerank=20, access=access)

        unfiltered = retriever(None)
        for percent in args.percents:
            access = AccessControl(access_file(Path(tmp), percent))
            audience = Audience.in_channel(CHANNEL)
            filtered = retriever(access)
            visible = access.visible_rows(store, audience)
            assert visible is not None
            samples = time_pair(unfiltered, filtered, audience, names)
            dense_recalls, hybrid_recalls, reference_recalls = [], [], []
            dense_filtered = retriever(access, "dense")
            for i, name in enumerate(names[:args.recall_queries]):
                true_dense, true_hybrid = exhaustive(store, visible, q_dense[i], q_sparse[i],
                                                     args.k)
                got_dense = _rows(store, dense_filtered.search(name, audience=audience))
                got_hybrid = _rows(store, filtered.search(name, audience=audience))
                dense_recalls.append(recall(got_dense, true_dense))
                hybrid_recalls.append(recall(got_hybrid, true_hybrid))
                _true, all_hybrid = exhaustive(store, all_rows, q_dense[i], q_sparse[i], args.k)
                reference_recalls.append(recall(_rows(store, unfiltered.search(name)),
                                                all_hybrid))
            ratio = p50(samples["filtered"]) / p50(samples["unfiltered"])
            dense_recall = float(np.mean(dense_recalls))
            goals &= ratio <= 1.3 and dense_recall == 1.0
            rows_out.append([
                f"{n:,}", f"{percent}% ({len(visible):,})",
                ms(p50(samples["unfiltered"])), ms(p99(samples["unfiltered"])),
                ms(p50(samples["filtered"])), ms(p99(samples["filtered"])), f"{ratio:.2f}×",
                f"{dense_recall:.3f}", f"{np.mean(hybrid_recalls):.3f}",
                f"{np.mean(reference_recalls):.3f}"])
            print("  " + " | ".join(rows_out[-1]), flush=True)
    return rows_out, goals


def time_pair(unfiltered: Any, filtered: Any, audience: Any,
              names: list[str]) -> dict[str, list[float]]:
    """Seconds per search, unfiltered and as `audience`, interleaved over the same queries."""
    queries_a, queries_b = itertools.cycle(names), itertools.cycle(names)
    return time_interleaved({
        "unfiltered": lambda: unfiltered.search(next(queries_a)),
        "filtered": lambda: filtered.search(next(queries_b), audience=audience)},
        runs=len(names), warmup=3)


def _rows(store: Any, hits: list[Any]) -> list[int]:
    found = store.get_by_chunk_ids([h.chunk_id for h in hits])
    return [c.row_id for c in found]


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("bench.access", __doc__)
    parser.add_argument("--quick", action="store_true", help="2k chunks, few queries")
    parser.add_argument("--sizes", help="comma-separated chunk counts (default 10000,100000)")
    parser.add_argument("--percents", default="1,10,90", help="visible shares to measure")
    parser.add_argument("--queries", type=int, help="timed queries per row")
    parser.add_argument("--recall-queries", type=int, default=20)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--sparse-tokens", type=int, default=60)
    parser.add_argument("--query-sparse-tokens", type=int, default=16)
    parser.add_argument("--text-chars", type=int, default=400)
    parser.add_argument("--vocab", type=int, default=30_000)
    parser.add_argument("--threads", type=int, default=cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.sizes = comma_ints(args.sizes or ("2000" if args.quick else "10000,100000"))
    args.percents = comma_ints(args.percents)
    args.queries = args.queries or (20 if args.quick else 200)
    args.recall_queries = min(args.recall_queries, args.queries)
    run = BenchRun("bench.access", argv)

    import faiss

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    tokens = ZipfTokens(args.vocab, rng)
    rows, goals = [], True
    for n in args.sizes:
        size_rows, size_goals = bench_size(n, args, rng, tokens)
        rows += size_rows
        goals &= size_goals
    section = None if args.no_write else (args.section or
                                          ("access-quick" if args.quick else "access"))
    publish("\n\n".join([
        run.heading("Access control: filtered vs unfiltered retrieval"),
        run.machine_now(),
        f"HybridRetriever.search, mode hybrid, k = {args.k}, candidates = {args.candidates}, "
        f"{args.queries} queries per row, interleaved after 3 warm-ups; FAISS threads = "
        f"{args.threads}. Recall over {args.recall_queries} queries against exhaustive scoring "
        "of the visible chunks; the last column is unfiltered hybrid search against "
        "exhaustive scoring of all chunks, for reference.",
        table(["chunks", "visible", "unfiltered p50", "unfiltered p99", "filtered p50",
               "filtered p99", "filtered / unfiltered p50", "dense recall@k",
               "hybrid recall@k", "unfiltered hybrid recall@k"], rows),
        f"- goal filtered ≤ 1.3× unfiltered p50 and dense recall 1.0 in every row: "
        f"{met(goals)}",
    ]), section)


if __name__ == "__main__":
    main()
