"""`python -m bench.gpu`: the options, then each part asked for, in turn, over one workspace;
the raw numbers saved after every part, the section written at the end."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import gpu
from bench.common import (
    RESULTS_FILE,
    BenchRun,
    bench_parser,
    cpu_count,
    publish,
    quiet_model_loading,
    set_threads,
)
from bench.gpu import e2e, embed, memory, search
from bench.gpu.config import DEFAULT_OUT, PARTS, build_config
from bench.gpu.facts import gpu_facts
from bench.gpu.measure import log
from bench.gpu.report import load_previous, render
from bench.gpu.workspace import Workspace

RUNNERS = {"embed": embed.run, "search": search.run, "e2e": e2e.run, "memory": memory.run}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = bench_parser("bench.gpu", gpu.__doc__)
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
    parser.add_argument("--results-file", type=Path, default=RESULTS_FILE)
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
    quiet_model_loading()
    args = parse_args(argv)
    if args.render:
        payload = json.loads(args.render.read_text(encoding="utf-8"))
        publish(render(payload),
                None if args.no_write else args.section or payload.get("section", "gpu"),
                args.results_file)
        return
    cfg = build_config(args)
    set_threads(cfg.threads)
    bench = BenchRun("bench.gpu", argv)

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

    def payload() -> dict[str, Any]:
        return {"facts": facts, "section": section, "parts": parts,
                "machine": bench.machine_now()}

    for name in PARTS:
        if name not in cfg.parts:
            continue
        log(f"== {name}")
        started = time.perf_counter()
        markdown, data = RUNNERS[name](ws, cfg)
        parts[name] = {"markdown": markdown, "data": data, "command": bench.command,
                       "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                       "seconds": time.perf_counter() - started}
        print("\n" + markdown + "\n", flush=True)
        if out:  # after every part, so a call cut off by its time limit keeps what it measured
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(payload(), indent=2, default=float), encoding="utf-8")
    if write:  # each part was printed as it finished: write without printing them again
        publish(render(payload()), section, args.results_file, echo=False)
    if out:
        log(f"raw numbers in {out}")
    if cfg.dry_run:
        log("dry run finished: every CPU code path ran; GPU rows say 'skipped: no GPU'")
