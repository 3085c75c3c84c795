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

One module per part (`embed`, `search`, `e2e`, `memory`), each with a `run(ws, cfg)` that
returns its Markdown and raw numbers, over one `Workspace` (workspace.py) that builds the models,
vectors and indexes the parts share on first use; `config` holds the presets, `measure` the
timers, `report` the JSON merge and rendering, `cli` the options and the loop over the parts.

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
