"""Part `memory`: GPU memory of the index (float32, float16), FAISS temporary memory, the
model."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.common import human_bytes, table
from bench.gpu.config import DIM, REAL_VOCAB, Config, K
from bench.gpu.measure import no_gpu_reason, sync
from bench.gpu.synthetic import make_texts
from bench.gpu.workspace import Workspace, gpu_free, warmed_gpu_resources


def run(ws: Workspace, cfg: Config) -> tuple[str, dict[str, Any]]:
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
    free_start = gpu_free()
    resources = warmed_gpu_resources()
    resources_bytes = free_start - gpu_free()
    for fp16 in (False, True):
        label = "float16" if fp16 else "float32"
        sync(cfg.accel)
        before = gpu_free()
        options = faiss.GpuClonerOptions()
        options.useFloat16 = fp16
        index = faiss.index_cpu_to_gpu(resources, 0, cpu_flat, options)
        after_clone = gpu_free()
        index.search(queries, K)
        after_search = gpu_free()
        del index
        after_free = gpu_free()
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
    data["resources_not_returned"] = free_start - gpu_free()

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
