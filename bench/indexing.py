"""Indexing: the streaming, cached indexer against today's per-file indexer and raw FlagEmbedding.

Side by side in one run, on a mixed corpus (the bundled samples replicated with every copy's
paragraphs varied, many one-paragraph files, and some long handbooks):

- **throughput**: passages/s of the new indexer (fresh cache) vs the indexer at `--before REF`
  (a git worktree of that commit, run with this venv) vs `BGEM3FlagModel.encode` over the whole
  chunk list (its global length sort; embedding only, so it is the ceiling the indexers chase),
  and whether the new indexer's vectors are bit-identical to each chunk encoded alone;
- **edit**: one paragraph edited in a 100-chunk document: chunks re-embedded and wall time;
- **kill**: `kill -9` at ~80% of a build, then a re-run: chunks re-embedded, and the total
  time vs an uninterrupted build;
- **memory**: peak RSS above the loaded model, indexing 1× and 10× the corpus, split into
  anonymous memory (RssAnon) and file-backed pages (RssFile), beside the index arrays (FAISS
  keeps dim × 4 + 8 bytes per chunk, the sparse matrix 12 bytes per entry), once with kotae's
  defaults (no oneDNN primitive cache) and once with oneDNN's own (`--onednn-caches`, 1024
  primitives, the baseline): torch's CPU matmuls keep
  one oneDNN primitive per input shape, up to 1024, and length-bucketed batches bring a new
  shape with nearly every new (batch size, token count), so that cache grows with the corpus;
- **refresh**: a refresh that finds nothing changed, at `--refresh-chunks` chunks (tiny model:
  no vector is computed, the model only tokenises).

Every indexer run is a fresh process (`python -c`, the same code for both commits), so model
loading and RSS are never shared between contenders. `--device cuda` measures on a GPU.
`--quick` is the tiny random-weight model on a small corpus (a smoke run, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    BGE_M3_ARCH_DIR,
    TINY_DIR,
    BenchRun,
    bench_parser,
    cpu_count,
    ensure_model,
    human_bytes,
    met,
    ms,
    publish,
    secs,
    table,
)

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "kotae" / "samples"
DEFAULT_BEFORE = "404ddee"  # the last commit with the per-file indexer

# Run in a fresh process with either commit's `retrieval` on the path: only APIs both have.
CHILD = r"""
import json, os, sys, time
from pathlib import Path
cfg = json.loads(sys.argv[1])
os.environ.setdefault("TQDM_DISABLE", "1")
if cfg.get("onednn_cache") is not None:  # read once, at oneDNN's first primitive
    os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = str(cfg["onednn_cache"])
import threading
import torch
torch.set_num_threads(cfg["threads"])
from transformers.utils import logging as hf_logging
hf_logging.set_verbosity_error()
from retrieval.embeddings import BGEM3Embeddings
from retrieval.settings import Settings

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0

settings = Settings(_env_file=None, embedding_model=cfg["model"], embedding_device=cfg["device"],
                    index_dir=cfg["index_dir"], chunk_size=cfg["chunk_size"],
                    chunk_overlap=cfg["chunk_overlap"], faiss_device="cpu")
embeddings = BGEM3Embeddings.from_settings(settings)
embeddings.encode_passages(["warm up the model"])
try:
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS from here on
except OSError:
    pass
base = status("VmRSS")
base_anon, base_file = status("RssAnon"), status("RssFile")
peaks = {"RssAnon": base_anon, "RssFile": base_file}  # no kernel high-water mark for these
sampling = threading.Event()

def sample():
    while not sampling.wait(0.005):
        for key in peaks:
            peaks[key] = max(peaks[key], status(key))

sampler = threading.Thread(target=sample, daemon=True)
if cfg.get("arrays"):  # memory runs only: the polling would cost the timed runs CPU
    sampler.start()
started = time.perf_counter()
out = {}
if cfg["task"] == "encode":
    from retrieval.chunking import chunk_source
    from retrieval.loaders import load_path
    texts = [c.embedding_text for source in load_path([Path(cfg["docs"])]).documents
             for c in chunk_source(source, token_length=embeddings.token_length,
                                   chunk_size=cfg["chunk_size"],
                                   chunk_overlap=cfg["chunk_overlap"])]
    started = time.perf_counter()
    embeddings.flag_model.encode(texts, batch_size=embeddings.batch,
                                 max_length=embeddings.passage_max_tokens, return_dense=True,
                                 return_sparse=True, return_colbert_vecs=False)
    out.update(chunks=len(texts), encoded=len(texts))
else:
    from retrieval.indexer import Indexer

    def progress(p):
        if cfg.get("report") and p.phase == "embedding":
            print(json.dumps({"done": p.chunks_done, "total": p.chunks_total,
                              "reused": getattr(p, "chunks_reused", 0)}), flush=True)

    options = {name: cfg[key] for name, key in (("window_chunks", "window"),
                                                 ("workers", "workers")) if cfg.get(key)}
    summary = Indexer(settings, embeddings, **options).run(  # options: the new code only
        [Path(cfg["docs"])], full=cfg.get("full", False), progress=progress)
    out.update(chunks=summary.chunks_total, written=summary.chunks_embedded,
               encoded=getattr(summary, "chunks_encoded", summary.chunks_embedded),
               reused=getattr(summary, "chunks_reused", 0), switched=summary.switched)
sampling.set()
if sampler.is_alive():
    sampler.join()
out.update(seconds=time.perf_counter() - started, peak=status("VmHWM"), base=base,
           dim=embeddings.dimension, anon=max(peaks["RssAnon"] - base_anon, 0),
           file=max(peaks["RssFile"] - base_file, 0))
if cfg.get("check"):
    from retrieval.embedding_text import embedding_text_for
    from retrieval.stores.local import LiveIndex
    store = LiveIndex(Path(cfg["index_dir"]), device="cpu").store()
    rows = [row for source in sorted(store.files())[: cfg["check"]]
            for row in store.chunks_of(source)][: cfg["check"]]
    same = sparse_same = 0
    worst = 0.0
    stored = store.sparse_of([r.row_id for r in rows])
    for row, vector in zip(rows, store.vectors([r.row_id for r in rows])):
        text = embedding_text_for(row.metadata["title"], row.metadata["heading_path"], row.text)
        alone = embeddings.encode_passages([text])
        same += bool((alone.dense[0] == vector).all())
        weights = stored[row.row_id]
        sparse_same += weights == alone.sparse[0]
        if weights.keys() == alone.sparse[0].keys():
            worst = max([worst] + [abs(w - alone.sparse[0][t]) / max(abs(w), 1e-12)
                                   for t, w in weights.items()])
        else:
            worst = float("inf")
    out.update(identical=same, sparse_identical=sparse_same, sparse_worst=worst,
               checked=len(rows))
if cfg.get("arrays"):  # what the index itself holds in memory: dense + sparse matrix
    from retrieval.stores.local import LiveIndex
    store = LiveIndex(Path(cfg["index_dir"]), device="cpu").store()
    rows = [r.row_id for source in store.files() for r in store.chunks_of(source)]
    entries = sum(len(w) for w in store.sparse_of(rows).values())
    # FAISS: a float32 vector and an int64 id per chunk; the sparse matrix save() builds:
    # (token id, position, weight) per entry, 4 bytes each, and an int64 row id per chunk
    dense_bytes = len(rows) * (embeddings.dimension * 4 + 8)
    sparse_bytes = entries * 12 + len(rows) * 8
    out.update(arrays=dense_bytes + sparse_bytes, dense_bytes=dense_bytes,
               sparse_bytes=sparse_bytes)
print("RESULT " + json.dumps(out), flush=True)
"""

WORDS = ["expense", "report", "deadline", "approval", "travel", "receipt", "policy", "manager",
         "budget", "invoice", "server", "deploy", "rollback", "incident", "pager", "backup",
         "restore", "network", "latency", "onboarding", "laptop", "account", "access", "review",
         "経費", "申請", "締め切り", "承認", "出張", "領収書", "障害", "対応"]


# --- the corpus --------------------------------------------------------------------------------


def handbook(rng: random.Random, sections: int) -> str:
    parts = ["# Handbook"]
    for number in range(sections):
        parts.append(f"## Section {number}")
        parts.extend(" ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 90))) + "."
                     for _ in range(rng.randint(2, 3)))
    return "\n\n".join(parts) + "\n"


def _varied(text: str, copy: int) -> str:
    """Every prose paragraph of a sample says which copy it is in: no two copies share a chunk
    (a shared one would be embedded once and flatter the cache)."""
    paragraphs = text.split("\n\n")
    return "\n\n".join(p + f" (copy {copy})" if p[:1].isalpha() else p for p in paragraphs)


def make_corpus(folder: Path, copies: int, seed: int = 0) -> Path:
    """Per copy: the Markdown and text samples varied, five one-paragraph notes; one long
    handbook per four copies. The reST and HTML samples come once."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for sample in sorted(SAMPLES.iterdir()):
        if sample.suffix in {".rst", ".html"}:
            shutil.copy(sample, folder / sample.name)
    for copy in range(copies):
        target = folder / f"copy-{copy}"
        target.mkdir()
        for sample in sorted(SAMPLES.iterdir()):
            if sample.suffix in {".md", ".txt"}:
                (target / sample.name).write_text(_varied(sample.read_text("utf-8"), copy),
                                                  "utf-8")
        for note in range(5):
            body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60)))
            (target / f"note-{note}.md").write_text(f"# Note {copy}-{note}\n\n{body}.\n",
                                                    "utf-8")
        if copy % 4 == 0:
            (target / "handbook.md").write_text(handbook(rng, 12), "utf-8")
    return folder


# --- running indexers in fresh processes --------------------------------------------------------


class Runner:
    def __init__(self, args: argparse.Namespace, model: Path, work: Path,
                 old_code: Path | None) -> None:
        self.args, self.model, self.work, self.old_code = args, model, work, old_code

    def config(self, task: str, docs: Path, index_dir: Path, **extra: Any) -> dict[str, Any]:
        return {"task": task, "docs": str(docs), "index_dir": str(index_dir),
                "model": str(self.model), "device": self.args.device,
                "threads": self.args.threads, "chunk_size": self.args.chunk_size,
                "chunk_overlap": self.args.chunk_overlap, **extra}

    def command(self, config: dict[str, Any], old: bool) -> tuple[list[str], dict[str, str]]:
        code = self.old_code if old else REPO
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KOTAE_", "OPENAI_"))}
        env.update(PYTHONPATH=str(code), HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
        return [sys.executable, "-c", CHILD, json.dumps(config)], env

    def run(self, config: dict[str, Any], *, old: bool = False) -> dict[str, Any]:
        """The child's result, plus `wall`: the whole process, model loading included."""
        command, env = self.command(config, old)
        started = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=self.work, capture_output=True, text=True,
                              check=False, timeout=self.args.timeout)
        for line in done.stdout.splitlines():
            if line.startswith("RESULT "):
                return {**json.loads(line.removeprefix("RESULT ")),
                        "wall": time.perf_counter() - started}
        raise RuntimeError(f"indexer run failed ({done.returncode}):\n{done.stderr[-3000:]}")

    def run_and_kill(self, config: dict[str, Any], at: float) -> tuple[float, int, bool]:
        """A build killed with SIGKILL once `at` of its chunks have vectors: (seconds it
        ran, chunks it had encoded, whether it was killed rather than finished)."""
        command, env = self.command({**config, "report": True}, old=False)
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=self.work, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)
        encoded, killed = 0, False
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("RESULT"):
                break  # finished first: a corpus too small to catch in flight
            report = json.loads(line)
            encoded = report["done"] - report["reused"]
            if report["total"] and report["done"] >= at * report["total"]:
                process.send_signal(signal.SIGKILL)
                killed = True
                break
        process.wait(timeout=60)
        return time.perf_counter() - started, encoded, killed


def rate(result: dict[str, Any]) -> float:
    return result["chunks"] / max(result["seconds"], 1e-9)


# --- the measurements ---------------------------------------------------------------------------


def throughput(runner: Runner, docs: Path) -> tuple[str, dict[str, Any]]:
    work = runner.work
    new = runner.run(runner.config("index", docs, work / "t-new", check=runner.args.check))
    single = runner.run(runner.config("index", docs, work / "t-single", workers=1))
    raw = runner.run(runner.config("encode", docs, work / "t-raw"))
    threads = runner.args.threads
    rows = [[f"new indexer (fresh cache; {threads} batches at once, one thread each)",
             new["chunks"], secs(new["seconds"]), f"{rate(new):.2f}"],
            [f"new indexer, one batch at a time on {threads} threads (as before this run)",
             single["chunks"], secs(single["seconds"]), f"{rate(single):.2f}"],
            ["BGEM3FlagModel.encode, whole list (embedding only)", raw["chunks"],
             secs(raw["seconds"]), f"{rate(raw):.2f}"]]
    notes = [f"- {threads} batches at once vs one at a time: {rate(new) / rate(single):.2f}×"]
    if runner.old_code is not None:
        old = runner.run(runner.config("index", docs, work / "t-old"), old=True)
        rows.insert(2, [f"indexer at {runner.args.before} (per file, batches of 32)",
                        old["chunks"], secs(old["seconds"]), f"{rate(old):.2f}"])
        notes.append(f"- new vs {runner.args.before}: {rate(new) / rate(old):.2f}× (goal ≥ 1.5×: "
                     f"{met(rate(new) >= 1.5 * rate(old))})")
    notes.append(f"- new vs raw encode: {rate(new) / rate(raw):.2f}× (goal ≥ 1.0×: "
                 f"{met(rate(new) >= rate(raw))})")
    notes.append(f"- outputs: dense vectors of {new['identical']} of {new['checked']} chunks "
                 "checked are bit-identical to the chunk encoded alone"
                 f" ({met(new['identical'] == new['checked'])}); sparse weights of "
                 f"{new['sparse_identical']} (largest relative difference "
                 f"{new['sparse_worst']:.1e})")
    return "\n\n".join([
        "### Throughput (passages/s, one build from nothing)",
        table(["contender", "chunks", "seconds", "passages/s"], rows), "\n".join(notes)]), new


def edit(runner: Runner) -> str:
    rows = []
    for old in ([False, True] if runner.old_code is not None else [False]):
        docs = runner.work / ("e-old" if old else "e-new")
        docs.mkdir()
        document = docs / "handbook.md"
        text = handbook(random.Random(7), 40)
        document.write_text(text, "utf-8")
        index_dir = docs.with_name(docs.name + "-index")
        first = runner.run(runner.config("index", docs, index_dir), old=old)
        paragraphs = text.split("\n\n")
        target = paragraphs.index("## Section 20") + 1
        paragraphs[target] = paragraphs[target].replace(".", " with one more clause.", 1)
        document.write_text("\n\n".join(paragraphs), "utf-8")
        second = runner.run(runner.config("index", docs, index_dir), old=old)
        name = f"indexer at {runner.args.before}" if old else "new indexer"
        rows.append([name, first["chunks"], second["encoded"], secs(second["seconds"])])
    new_encoded = rows[0][2]
    return "\n\n".join([
        "### One paragraph edited in a long document",
        table(["contender", "chunks in the document", "chunks re-embedded", "re-run seconds"],
              rows),
        f"- new indexer re-embeds {new_encoded} (goal ≤ 3: {met(new_encoded <= 3)})"])


def kill(runner: Runner, docs: Path, uninterrupted: dict[str, Any]) -> str:
    index_dir = runner.work / "k-index"
    killed_s, encoded, killed = runner.run_and_kill(runner.config("index", docs, index_dir), 0.8)
    if not killed:
        return ("### kill -9 at ~80% of a build, then a re-run\n\nThe build finished before it "
                "could be killed (the corpus is too small for this model): not measured.")
    rerun = runner.run(runner.config("index", docs, index_dir))
    total = killed_s + rerun["wall"]
    lost = rerun["encoded"] - (uninterrupted["chunks"] - encoded)
    return "\n\n".join([
        "### kill -9 at ~80% of a build, then a re-run",
        table(["", "value"], [
            ["chunks encoded before the kill", encoded],
            ["chunks encoded by the re-run", rerun["encoded"]],
            ["of those, encoded before the kill too (lost work)", max(lost, 0)],
            ["killed run + re-run (processes, model loading included)", secs(total)],
            ["uninterrupted build (the same)", secs(uninterrupted["wall"])]]),
        f"- lost work ≤ one batch ({runner.args.batch_bound} texts): "
        f"{met(max(lost, 0) <= runner.args.batch_bound)}"])


def memory(runner: Runner, copies: int, factors: Sequence[int] = (1, 10),
           onednn_cache: int | None = None) -> str:
    """Peak RSS of indexing `factors` × the corpus, each in a fresh process (VmHWM, reset
    once the model is loaded and warm), split into anonymous memory (RssAnon: the process's
    own) and file-backed pages (RssFile: mapped libraries and files, page cache), each
    sampled every 5 ms (the kernel keeps no peak of either). `onednn_cache`: the child's
    ONEDNN_PRIMITIVE_CACHE_CAPACITY (None: unset, which kotae turns into 0 when it loads the
    model; 1024 is oneDNN's own default)."""
    rows, growth, anon_growth = [], {}, {}
    tiny = runner.model.resolve() == TINY_DIR.resolve()
    name = "tiny random-weight model" if tiny else "bge-m3 architecture"
    tag = "default" if onednn_cache is None else str(onednn_cache)
    for factor in factors:
        docs = make_corpus(runner.work / f"m-docs-{runner.model.name}-{factor}-{tag}",
                           copies * factor, seed=factor)
        extra = {} if onednn_cache is None else {"onednn_cache": onednn_cache}
        result = runner.run(runner.config(
            "index", docs, runner.work / f"m-index-{runner.model.name}-{factor}-{tag}",
            window=runner.args.window, arrays=True, **extra))
        arrays = result["arrays"]
        above = max(result["peak"] - result["base"], 0)
        growth[factor] = max(above - arrays, 0)
        anon_growth[factor] = max(result["anon"] - arrays, 0)
        rows.append([f"{factor}×", result["chunks"], human_bytes(result["base"]),
                     human_bytes(above), human_bytes(result["anon"]),
                     human_bytes(result["file"]),
                     f"{human_bytes(arrays)} ({human_bytes(result['dense_bytes'])} dense)",
                     human_bytes(growth[factor]), human_bytes(anon_growth[factor])])
    cache = ("kotae's defaults: no oneDNN primitive cache, a fixed mmap threshold"
             if onednn_cache is None else f"ONEDNN_PRIMITIVE_CACHE_CAPACITY={onednn_cache} "
             "in the environment" + (" (oneDNN's own default)" if onednn_cache == 1024 else ""))
    heading = (f"### Peak memory, {name}: {' and '.join(f'{f}×' for f in factors)} the corpus "
               f"(new indexer, windows of {runner.args.window} chunks, {cache})")
    parts = [heading, table(["corpus", "chunks", "RSS with the model loaded",
                             "peak above that", "anonymous (RssAnon)", "file-backed (RssFile)",
                             "index arrays", "peak above model and arrays",
                             "anonymous above arrays"], rows)]
    if len(factors) > 1:
        ratio = growth[factors[-1]] / max(growth[factors[0]], 1)
        anon_ratio = anon_growth[factors[-1]] / max(anon_growth[factors[0]], 1)
        parts.append(f"- growth apart from the index arrays: {ratio:.2f}× (goal ≤ 1.1×: "
                     f"{met(ratio <= 1.1)}); anonymous memory apart from them: "
                     f"{anon_ratio:.2f}×")
    return "\n\n".join(parts)


def refresh(args: argparse.Namespace, work: Path) -> str:
    """In this process on the tiny model: a no-change refresh computes no vector."""
    from retrieval.embeddings import BGEM3Embeddings
    from retrieval.indexer import Indexer
    from retrieval.settings import Settings

    tiny = ensure_model(TINY_DIR, "TINY")
    docs = work / "r-docs"
    copies, chunks = 1, 0
    settings = Settings(_env_file=None, embedding_model=str(tiny), embedding_device="cpu",  # type: ignore[call-arg]
                        index_dir=work / "r-index", chunk_size=args.chunk_size,
                        chunk_overlap=args.chunk_overlap, faiss_device="cpu")
    embeddings = BGEM3Embeddings.from_settings(settings)
    indexer = Indexer(settings, embeddings)
    while chunks < args.refresh_chunks:  # grow the corpus until it holds enough chunks
        shutil.rmtree(docs, ignore_errors=True)
        make_corpus(docs, copies)
        built = indexer.run([docs])
        chunks = built.chunks_total
        copies = max(copies + 1, int(copies * args.refresh_chunks / max(chunks, 1) * 1.05) + 1)
    files = len(built.added) + len(built.updated) + len(built.unchanged)
    started = time.perf_counter()
    again = indexer.run([docs])
    seconds = time.perf_counter() - started
    return "\n\n".join([
        "### A refresh that finds nothing changed (tiny model)",
        table(["chunks", "files", "seconds", "published a version"],
              [[again.chunks_total, files, ms(seconds), "yes" if again.switched else "no"]])])


# --- main -------------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> str:
    model = ensure_model(TINY_DIR, "TINY") if args.quick else ensure_model(BGE_M3_ARCH_DIR,
                                                                         "BGE_M3")
    work = Path(tempfile.mkdtemp(prefix="kotae-indexing-"))
    old_code = None
    try:
        if args.before:
            old_code = work / "before"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach",
                            str(old_code), args.before], capture_output=True, check=True)
        runner = Runner(args, model, work, old_code)
        docs = make_corpus(work / "docs", args.copies)
        kind = "tiny random-weight" if args.quick else "bge-m3 architecture, random weights"
        parts = [f"Model: {kind} on {args.device}, {args.threads} torch threads; chunks of "
                 f"{args.chunk_size} tokens; corpus: {args.copies} varied copies of the "
                 "samples, 5 notes per copy, a handbook per 4 copies."]
        only = set(args.only.split(","))
        new = None
        if "throughput" in only or "kill" in only:
            section, new = throughput(runner, docs)
            if "throughput" in only:
                parts.append(section)
        if "edit" in only:
            parts.append(edit(runner))
        if "kill" in only and new is not None:
            parts.append(kill(runner, docs, new))
        if "memory" in only:
            copies = args.memory_copies or args.copies
            for capacity in args.onednn_caches:
                parts.append(memory(runner, copies, args.memory_factors, capacity))
            if not args.quick and args.tiny_memory:  # the same pipeline, a model that is fast
                tiny = Runner(args, ensure_model(TINY_DIR, "TINY"), work, None)
                for capacity in args.onednn_caches:
                    parts.append(memory(tiny, copies, onednn_cache=capacity))
        if "refresh" in only:
            parts.append(refresh(args, work))
        return "\n\n".join(parts)
    finally:
        if old_code is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(old_code)], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = bench_parser("bench.indexing", __doc__)
    parser.add_argument("--quick", action="store_true",
                        help="tiny model, 2 copies, refresh at 300 chunks, no --before")
    parser.add_argument("--no-before", action="store_true", help="skip today's indexer")
    parser.add_argument("--copies", type=int, default=4, help="copies of the samples")
    parser.add_argument("--memory-copies", type=int, default=None,
                        help="copies for the 1× memory run (default --copies; 10× is ten times)")
    parser.add_argument("--before", default=DEFAULT_BEFORE, metavar="REF",
                        help=f"today's indexer: this commit (default {DEFAULT_BEFORE}; '' = skip)")
    parser.add_argument("--only", default="throughput,edit,kill,memory,refresh")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--threads", type=int, default=cpu_count())
    parser.add_argument("--chunk-size", type=int, default=400)
    parser.add_argument("--chunk-overlap", type=int, default=60)
    parser.add_argument("--check", type=int, default=40, help="chunks compared bit for bit")
    parser.add_argument("--refresh-chunks", type=int, default=10_000)
    parser.add_argument("--memory-factors", default="1,10",
                        help="corpus sizes of the memory runs on the chosen model (1 = only 1×)")
    parser.add_argument("--tiny-memory", action="store_true",
                        help="also measure memory at 1× and 10× with the tiny model")
    parser.add_argument("--onednn-caches", default="default,1024",
                        help="memory runs: ONEDNN_PRIMITIVE_CACHE_CAPACITY values, each its own "
                             "table ('default' = unset: kotae sets 0; 1024 = oneDNN's own "
                             "default, the baseline)")
    parser.add_argument("--window", type=int, default=64,
                        help="memory runs: chunks per window, below the 1× corpus so that "
                             "both sizes stream (the product default is 2048)")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="per indexer run (s)")
    args = parser.parse_args(argv)
    if args.quick:
        args.copies, args.refresh_chunks, args.before = min(args.copies, 2), 300, ""
    if args.no_before:
        args.before = ""
    args.memory_factors = [int(f) for f in str(args.memory_factors).split(",")]
    args.onednn_caches = [None if c == "default" else int(c)
                          for c in str(args.onednn_caches).split(",")]
    # one batch is at most 8 × the model's batch size (16 on CPU, 64 on CUDA)
    args.batch_bound = 8 * (64 if args.device.startswith("cuda") else 16)
    args.section = args.section or ("indexing-gpu" if args.device.startswith("cuda")
                                    else "indexing")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    bench = BenchRun("bench.indexing", argv)
    body = measure(args)
    publish("\n\n".join([bench.heading("Indexing"), bench.machine_now(), body]),
            None if args.no_write else args.section)


if __name__ == "__main__":
    main()
