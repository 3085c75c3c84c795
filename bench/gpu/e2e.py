"""Part `e2e`: one query end to end at 1M chunks, stage by stage, with and without the
ColBERT rerank."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.common import human_bytes, met, ms, p50, p99, secs, table
from bench.gpu.config import GOAL_E2E_P50_S, Config
from bench.gpu.measure import log, timed
from bench.gpu.search import gpu_clone, locked
from bench.gpu.synthetic import make_texts, token_lengths
from bench.gpu.workspace import Workspace


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

    # the store's search_sparse: the top-n positive scores; its sparse_scores_of: a lookup
    top = np.argpartition(-all_sparse, n - 1)[:n] if len(all_sparse) > n else np.arange(
        len(all_sparse))
    top = top[all_sparse[top] > 0]
    top = top[np.argsort(-all_sparse[top], kind="stable")]
    # the store reconstructs missing vectors from the CPU index; here, the same vectors
    candidates = merge_candidates(
        scores, rows, all_sparse[top], sparse_rows[top], lambda wanted: vectors[wanted],
        lambda wanted: all_sparse[np.searchsorted(sparse_rows, wanted)], q_dense)
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


def run(ws: Workspace, cfg: Config) -> tuple[str, dict[str, Any]]:
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
