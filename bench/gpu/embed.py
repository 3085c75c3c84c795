"""Part `embed`: passages/s of BGEM3Embeddings vs FlagEmbedding's own encode vs float32 on
the CPU, and candidate variants of the same forward pass."""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.common import flag_lexical, met, table
from bench.gpu.config import GOAL_PASSAGES_PER_S, GOAL_SPEEDUP, Config
from bench.gpu.measure import error_text, fmt_rate, log, time_rounds, timed
from bench.gpu.synthetic import make_texts, token_lengths
from bench.gpu.workspace import Workspace


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
        other_f = flag_lexical(other)
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


def run(ws: Workspace, cfg: Config) -> tuple[str, dict[str, Any]]:
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
        candidate_md, candidate_data = candidate_rows(ws, cfg, words, top)
        lines.append(candidate_md)
        data["candidates"] = candidate_data
    else:
        lines.append(f"- candidate variants not measured (`--candidates {cfg.candidates}`, "
                     f"speed-up {speedup:.2f}×)")
    return "\n\n".join(lines), data


def candidate_rows(ws: Workspace, cfg: Config, words: list[str],
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
