"""A million chunks on one machine: today's local index vs the segmented one with IVF.

At each size (default 100k and 1M synthetic chunks), in one run:

- **build**: one version from nothing through `LocalVersions.begin_build` / `add` / `publish`
  (what the Indexer calls), by today's code (`--before REF`, a git worktree run with this
  venv) and by this code (`KOTAE_DENSE_INDEX=auto`: IVF from `--ivf-min-chunks`);
- **open**: a fresh process opens the served version: wall time, RSS after open and after 20
  searches, beside the arrays the searches read;
- **publish one changed file**: a version from the served one with one 20-chunk file
  replaced: wall time (begin_build -> publish) and the bytes of every file it created;
- **search**: `HybridRetriever.search` (hybrid, k = 10, candidates = 50, precomputed query
  views) on today's flat index and on the IVF index at several nprobe, each contender once a
  query in a shuffled order; recall@10 of each against the flat (exact) results, hybrid and dense.

The corpus: 1024-d unit vectors in topical clusters (a shared direction, subjects, topics,
documents of 20 chunks, variation in a 32-d subspace shared by all and in a 32-d subspace of
each subject, plus isotropic noise)
calibrated so a query's
1st / 10th nearest chunk and the median chunk have cosines like bge-m3's on real text (the
run reports them); independent Gaussian vectors would have no true neighbours, tight clusters
would make any index look perfect. Sparse weights: ~60 Zipf tokens per chunk, as
`bench.retrieval` draws them, generated vectorised. It is cached under `--cache` (NumPy files).

Every measured step runs in a fresh process (`--worker`), today's in the worktree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DIM = 1024
PER_DOC = 20
VOCAB = 30_000
# energy of each component of a chunk vector (sums to 1): shared direction, subject, topic,
# document, variation in one 32-d subspace shared by all subjects, variation in a 32-d
# subspace of the chunk's subject, isotropic noise — see `calibration` in the output
MIXES = {"mixed": (0.36, 0.10, 0.08, 0.04, 0.12, 0.20, 0.10),
         # all variation in the shared subspace: near neighbours cross subjects (harder for IVF)
         "shared": (0.36, 0.10, 0.08, 0.04, 0.32, 0.0, 0.10)}
GENERATOR = 3  # bump when the corpus changes: cached corpora are keyed by it
NOISE_RANK = 32


# --------------------------------------------------------------------------- the corpus


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_corpus(folder: Path, n: int, queries: int, seed: int, variation: str = "mixed") -> Path:
    """Vectors, sparse CSR and query views of `n` chunks under `folder` (reused if there)."""
    done = folder / "done"
    mix = MIXES[variation]
    if done.exists() and json.loads(done.read_text()).get("generator") == GENERATOR:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    subjects, topics, docs = max(4, n // 2000), max(8, n // 60), -(-n // PER_DOC)
    shared = _unit(rng.standard_normal(DIM))
    subject_dirs = _unit(rng.standard_normal((subjects, DIM)))
    topic_dirs = _unit(rng.standard_normal((topics, DIM)))
    topic_subject = rng.integers(0, subjects, topics)
    doc_topic = rng.integers(0, topics, docs)
    # each subject varies in its own 32-d subspace: fine-grained neighbours are topical
    bases = np.stack([np.linalg.qr(rng.standard_normal((DIM, NOISE_RANK)))[0]
                      for _ in range(subjects + 1)]).astype(np.float32)  # the last: shared
    a, b, c, e, g, f, h = (np.float32(np.sqrt(x)) for x in mix)
    dense = np.lib.format.open_memmap(folder / "dense.npy", "w+", np.float32, (n, DIM))
    step = 32_768
    for start in range(0, n, step):
        stop = min(n, start + step)
        doc = np.arange(start, stop) // PER_DOC
        first, last = int(doc[0]), int(doc[-1])
        doc_dirs = _unit(np.random.default_rng([seed, first]).standard_normal(
            (last - first + 1, DIM)))
        topic = doc_topic[doc]
        subject = topic_subject[topic]
        dense[start:stop] = _unit(a * shared + b * subject_dirs[subject]
                                  + c * topic_dirs[topic] + e * doc_dirs[doc - first]
                                  + _variation(rng, bases, subject, g, f, h))
    dense.flush()
    # queries: about one document's topic (its chunks' mean as the document part)
    picked = rng.integers(0, docs, queries)
    topic = doc_topic[picked]
    doc_part = _unit(np.stack([dense[d * PER_DOC:min(n, (d + 1) * PER_DOC)].mean(0)
                               for d in picked]))
    subject = topic_subject[topic]
    q_dense = _unit(a * shared + b * subject_dirs[subject] + c * topic_dirs[topic]
                    + e * doc_part + _variation(rng, bases, subject, g, f, h))
    np.save(folder / "q_dense.npy", q_dense)
    token_ids = rng.permutation(VOCAB) + 4  # 0..3 are bge-m3's special tokens
    _save_csr(folder, "sparse", *_zipf_rows(rng, n, 60, (0.02, 0.35), token_ids))
    _save_csr(folder, "q_sparse", *_zipf_rows(rng, queries, 16, (0.05, 0.3), token_ids))
    done.write_text(json.dumps({"n": n, "seed": seed, "mix": mix, "generator": GENERATOR}))
    return folder


def _variation(rng: np.random.Generator, bases: np.ndarray, subject: np.ndarray,
               shared: np.float32, local: np.float32, iso: np.float32) -> np.ndarray:
    """Per-chunk variation: random unit directions in the shared subspace (`bases[-1]`), in
    the subspace of each row's subject, and in all 1024 dimensions, weighted."""
    rows = len(subject)

    def coords() -> np.ndarray:
        return _unit(rng.standard_normal((rows, NOISE_RANK)).astype(np.float32))

    out = shared * (coords() @ bases[-1].T)
    local_coords = coords()
    for s in np.unique(subject):
        picked = subject == s
        out[picked] += local * (local_coords[picked] @ bases[s].T)
    return out + iso * _unit(rng.standard_normal((rows, DIM)).astype(np.float32))


def _zipf_rows(rng: np.random.Generator, rows: int, per_row: int, weights: tuple[float, float],
               token_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`per_row` distinct tokens per row, rank r drawn with p ∝ 1/(r + 2) (bench.retrieval's
    ZipfTokens, vectorised: frequent ranks repeat, so 2 x per_row draws)."""
    cdf = np.cumsum(1.0 / (np.arange(VOCAB) + 2.0))
    cdf /= cdf[-1]
    indptr, tokens, values = [np.zeros(1, np.int64)], [], []
    for start in range(0, rows, 65_536):
        count = min(rows, start + 65_536) - start
        ranks = np.minimum(np.searchsorted(cdf, rng.random((count, 2 * per_row))), VOCAB - 1)
        ranks.sort(axis=1)
        keep = np.ones_like(ranks, bool)
        keep[:, 1:] = ranks[:, 1:] != ranks[:, :-1]
        keep &= np.cumsum(keep, axis=1) <= per_row
        tokens.append(token_ids[ranks[keep]].astype(np.int32))
        values.append(rng.uniform(*weights, size=int(keep.sum())).astype(np.float32))
        indptr.append(indptr[-1][-1] + np.cumsum(keep.sum(axis=1)))
    return np.concatenate(indptr), np.concatenate(tokens), np.concatenate(values)


def _save_csr(folder: Path, name: str, indptr: np.ndarray, tokens: np.ndarray,
              values: np.ndarray) -> None:
    np.save(folder / f"{name}_indptr.npy", indptr)
    np.save(folder / f"{name}_tokens.npy", tokens)
    np.save(folder / f"{name}_weights.npy", values)


def _sparse_dicts(folder: Path, name: str, start: int, stop: int) -> list[dict[int, float]]:
    indptr = np.load(folder / f"{name}_indptr.npy", mmap_mode="r")
    tokens = np.load(folder / f"{name}_tokens.npy", mmap_mode="r")
    values = np.load(folder / f"{name}_weights.npy", mmap_mode="r")
    return [dict(zip(tokens[indptr[i]:indptr[i + 1]].tolist(),
                     values[indptr[i]:indptr[i + 1]].tolist(), strict=True))
            for i in range(start, stop)]


_TEMPLATES: list[str] = []


def _texts(count: int, offset: int) -> list[str]:
    if not _TEMPLATES:
        rng = np.random.default_rng(7)
        letters = "abcdefghijklmnopqrstuvwxyz"
        words = ["".join(rng.choice(list(letters), size=int(rng.integers(2, 10))))
                 for _ in range(3000)]
        _TEMPLATES.extend(" ".join(rng.choice(words, size=140))[:400] for _ in range(2048))
    return [_TEMPLATES[(offset + i) % len(_TEMPLATES)] for i in range(count)]


def _chunks(corpus: Path, start: int, stop: int, dense: np.ndarray,
            version: int = 0) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    ids, metas = [], []
    for i in range(start, stop):
        doc, number = divmod(i, PER_DOC)
        ids.append(f"{doc:012x}:{number}")
        metas.append({"source": _source(doc), "title": f"Document {doc}", "kind": "markdown",
                      "file_hash": f"{doc + version:064x}", "mtime": 1.7e9 + doc,
                      "heading_path": [f"Document {doc}", f"Section {number // 5}"],
                      "chunk_number": number, "content_hash": f"{i + version:064x}"})
    return ids, _texts(stop - start, start + version), metas


def _source(doc: int) -> str:
    return f"/srv/docs/team/doc-{doc:06d}.md"


# --------------------------------------------------------------------------- workers


def _versions(root: Path, dense: str | None, nprobe: int | None = None,
              ivf_min_chunks: int | None = None, lists: int | None = None) -> Any:
    """LocalVersions of this code (with a dense choice) or of today's (without one)."""
    from retrieval.stores.local import LocalVersions

    if dense is None:
        return LocalVersions(root, device="cpu")
    from retrieval.stores.local.choice import DenseChoice

    choice = DenseChoice(kind=dense, nprobe=nprobe or 32,  # type: ignore[arg-type]
                         ivf_min_chunks=ivf_min_chunks or 100_000, lists=lists)
    return LocalVersions(root, device="cpu", dense=choice)


def _file_record(source: str, count: int, version: int) -> Any:
    from retrieval.stores import FileRecord

    return FileRecord(source, f"{version:064x}", 0.0, source, count, time.time())


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def work_build(job: dict[str, Any]) -> dict[str, Any]:
    root, corpus, n = Path(job["root"]), Path(job["corpus"]), int(job["n"])
    dense = np.load(corpus / "dense.npy", mmap_mode="r")
    started = time.perf_counter()
    versions = _versions(root, job.get("dense"), ivf_min_chunks=job.get("ivf_min_chunks"),
                         lists=job.get("lists"))
    build = versions.begin_build(DIM)
    for start in range(0, n, 512):
        stop = min(n, start + 512)
        ids, texts, metas = _chunks(corpus, start, stop, dense)
        build.store.add(ids, texts, metas, np.ascontiguousarray(dense[start:stop]),
                        _sparse_dicts(corpus, "sparse", start, stop))
    for doc in range(-(-n // PER_DOC)):
        build.store.record_file(_file_record(_source(doc), PER_DOC, 0))
    added_s = time.perf_counter() - started
    build.publish({"version": build.version, "dim": DIM, "chunks": n, "files": n // PER_DOC,
                   "created_at": time.time()})
    versions.prune()
    total = time.perf_counter() - started
    by_name: dict[str, int] = {}
    for path in root.rglob("*"):
        if path.is_file():
            by_name[path.name] = by_name.get(path.name, 0) + path.stat().st_size
    return {"build_s": total, "publish_s": total - added_s, "peak_rss": _peak_rss(),
            "disk": sum(by_name.values()), "by_name": by_name}


def work_open(job: dict[str, Any]) -> dict[str, Any]:
    root, corpus = Path(job["root"]), Path(job["corpus"])
    q_dense = np.load(corpus / "q_dense.npy")
    q_sparse = _sparse_dicts(corpus, "q_sparse", 0, 20)
    versions = _versions(root, job.get("dense"))
    import faiss  # noqa: F401  (imported before the clock starts: not part of opening)
    import scipy.sparse  # noqa: F401

    before, started = _rss(), time.perf_counter()
    store = versions.open_version(versions.current_version())
    open_s, opened = time.perf_counter() - started, _rss()
    for i in range(20):
        store.search_dense(q_dense[i:i + 1], 50)
        if hasattr(store, "search_sparse"):
            store.search_sparse(q_sparse[i], 50)
        else:  # today's seam: a score for every chunk
            store.sparse_scores(q_sparse[i])
    searched = _rss()
    return {"open_s": open_s, "rss_open": opened - before, "rss_searched": searched - before,
            "count": store.count}


def work_publish(job: dict[str, Any]) -> dict[str, Any]:
    """One 20-chunk file replaced (new vectors, weights and texts), the way the Indexer does
    it: delete_source, add, record_file, publish, prune."""
    root, corpus = Path(job["root"]), Path(job["corpus"])
    doc = int(job["doc"])
    dense = np.load(corpus / "dense.npy", mmap_mode="r")
    start, stop = doc * PER_DOC, (doc + 1) * PER_DOC
    rng = np.random.default_rng(doc)
    vectors = np.ascontiguousarray(dense[start:stop]) + rng.normal(
        0, 0.01, (PER_DOC, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids, texts, metas = _chunks(corpus, start, stop, dense, version=1)
    sparse = _sparse_dicts(corpus, "sparse", start, stop)
    versions = _versions(root, job.get("dense"))
    before = _files(root)
    started = time.perf_counter()
    base = versions.current_version()
    build = versions.begin_build(DIM, base=base)
    build.store.delete_source(_source(doc))
    build.store.add(ids, texts, metas, vectors, sparse)
    build.store.record_file(_file_record(_source(doc), PER_DOC, 1))
    build.publish({"version": build.version, "dim": DIM, "chunks": build.store.count,
                   "files": len(build.store.files()), "created_at": time.time()})
    published = time.perf_counter() - started
    versions.prune()
    pruned = time.perf_counter() - started - published
    after = _files(root)
    written = sum(size for path, (size, mtime) in after.items()
                  if before.get(path) != (size, mtime))
    served = sum(size for path, (size, _m) in after.items()
                 if f"/{versions.current_version()}/" in path or "/segments/" in path)
    return {"publish_s": published, "prune_s": pruned, "written": written,
            "store_bytes": served, "peak_rss": _peak_rss()}


def work_search(job: dict[str, Any]) -> dict[str, Any]:
    """Every contender once per query, in a shuffled order: today's flat index and IVF at
    each nprobe."""
    import faiss

    from bench.retrieval import FixedQueryViews
    from retrieval.embeddings import EncodedBatch
    from retrieval.retriever import HybridRetriever
    from retrieval.stores import ServedIndex
    from retrieval.stores.local.impact import LexicalChoice

    faiss.omp_set_num_threads(int(job["threads"]))
    corpus = Path(job["corpus"])
    q_dense = np.load(corpus / "q_dense.npy")
    count = min(int(job["queries"]), len(q_dense))
    q_sparse = _sparse_dicts(corpus, "q_sparse", 0, count)
    names = [f"q{i}" for i in range(count)]
    views = FixedQueryViews({name: EncodedBatch(q_dense[i:i + 1].copy(), [q_sparse[i]], None)
                             for i, name in enumerate(names)})
    contenders: dict[str, Any] = {
        "flat": ServedIndex(_versions(Path(job["flat_root"]), "flat"))}
    for nprobe in job["nprobes"]:
        contenders[f"ivf nprobe {nprobe}"] = ServedIndex(
            _versions(Path(job["ivf_root"]), "auto", nprobe=nprobe))
    # the same index at the default nprobe, its lexical top-k from impact-ordered postings
    # (opt-in, approximate) instead of every posting of the query's tokens
    impact_name = f"ivf nprobe {job['default_nprobe']}, impact-ordered lexical"
    contenders[impact_name] = ServedIndex(
        _versions(Path(job["ivf_root"]), "auto", nprobe=int(job["default_nprobe"])))
    retrievers = {name: HybridRetriever.model_construct(
        index=index, embeddings=views, mode="hybrid", weights=[0.4, 0.2, 0.4], k=10,
        candidates=50, rerank=20, access=None) for name, index in contenders.items()}
    stores = {name: index.store() for name, index in contenders.items()}
    impact = LexicalChoice(min_positions=IMPACT_MIN_POSITIONS)
    for segment in stores[impact_name].segments:  # type: ignore[attr-defined]
        segment.lexical = impact
    for name in names[:3]:  # warm-up: the first touches of mapped pages
        for retriever in retrievers.values():
            retriever.search(name)
    times: dict[str, list[float]] = {name: [] for name in retrievers}
    hits: dict[str, list[list[str]]] = {name: [] for name in retrievers}
    order = np.random.default_rng(5)
    for name in names:  # contenders in a new order each query: none always follows the flat
        for contender in order.permutation(list(retrievers)).tolist():
            retriever = retrievers[contender]
            started = time.perf_counter()
            found = retriever.search(name)
            times[contender].append(time.perf_counter() - started)
            hits[contender].append([h.chunk_id for h in found])
    dense_ids = {contender: store.search_dense(q_dense[:count], 10)[1]
                 for contender, store in stores.items()}
    parts: dict[str, list[float]] = {"dense": [], "sparse": [], "sparse_impact": [],
                                     "sparse_recall": []}
    ivf_store = stores[f"ivf nprobe {job['default_nprobe']}"] if (
        f"ivf nprobe {job['default_nprobe']}" in stores) else stores["flat"]
    for i in range(count):
        started = time.perf_counter()
        ivf_store.search_dense(q_dense[i:i + 1], 50)
        parts["dense"].append(time.perf_counter() - started)
        started = time.perf_counter()
        _scores, exact = ivf_store.search_sparse(q_sparse[i], 50)
        parts["sparse"].append(time.perf_counter() - started)
        started = time.perf_counter()
        _scores, approximate = stores[impact_name].search_sparse(q_sparse[i], 50)
        parts["sparse_impact"].append(time.perf_counter() - started)
        parts["sparse_recall"].append(len(set(approximate.tolist()) & set(exact.tolist()))
                                      / max(1, len(exact)))
    flat_scores, _ids = stores["flat"].search_dense(q_dense[:count], 10)
    sample = np.load(corpus / "dense.npy", mmap_mode="r")
    picks = np.sort(np.random.default_rng(3).choice(len(sample), min(5000, len(sample)),
                                                     replace=False))
    median = float(np.median(q_dense[:count] @ np.asarray(sample[picks]).T))
    truth_docs = [len({cid.split(":")[0] for cid in row}) for row in hits["flat"]]
    result: dict[str, Any] = {"rows": {}, "calibration": {
        "first": float(np.median(flat_scores[:, 0])), "tenth": float(np.median(flat_scores[:, 9])),
        "median": median, "docs_in_top10": float(np.mean(truth_docs))},
        "parts": {k: float(np.median(v) if k != "sparse_recall" else np.mean(v))
                  for k, v in parts.items()}}
    for contender in retrievers:
        hybrid = np.mean([len(set(a) & set(b)) / max(1, len(b))
                          for a, b in zip(hits[contender], hits["flat"], strict=True)])
        dense = np.mean([len(set(a.tolist()) & set(b.tolist())) / 10
                         for a, b in zip(dense_ids[contender], dense_ids["flat"], strict=True)])
        result["rows"][contender] = {
            "p50": float(np.percentile(times[contender], 50)),
            "p99": float(np.percentile(times[contender], 99)),
            "hybrid_recall": float(hybrid), "dense_recall": float(dense)}
    return result


IMPACT_MIN_POSITIONS = 250_000  # the impact contender's segments from this size on


WORKERS = {"build": work_build, "open": work_open, "publish": work_publish,
           "search": work_search}


# --------------------------------------------------------------------------- the run


class Runner:
    """Runs worker jobs in fresh processes, in this tree or in today's worktree."""

    def __init__(self, before: Path | None) -> None:
        self.before = before

    def __call__(self, kind: str, job: dict[str, Any], *, today: bool = False) -> dict[str, Any]:
        code = self.before if today else REPO
        assert code is not None
        env = {**os.environ, "PYTHONPATH": str(code)}
        result = subprocess.run(
            [sys.executable, "-m", "bench.scale", "--worker", kind, json.dumps(job)],
            cwd=code, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{kind} worker failed ({'today' if today else 'new'}):\n"
                               + result.stderr[-4000:])
        return json.loads(result.stdout.strip().splitlines()[-1])


def _worktree(ref: str, folder: Path) -> Iterator[Path]:
    """Today's code at `ref`, with this script copied in (it runs the same jobs there)."""
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(folder), ref],
                   capture_output=True, check=True)
    try:
        shutil.copy2(Path(__file__), folder / "bench" / "scale.py")
        yield folder
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(folder)],
                       capture_output=True, check=False)


def log_line(message: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {message}", flush=True)


def bench_size(n: int, args: argparse.Namespace, run: Runner, work: Path) -> dict[str, Any]:
    corpus = make_corpus(Path(args.cache) / f"corpus-{args.variation}-{n}-{args.seed}", n,
                         args.queries, args.seed, args.variation)
    log_line(f"{n:,}: corpus ready")
    today_root, new_root = work / f"today-{n}", work / f"new-{n}"
    for folder in (today_root, new_root):
        shutil.rmtree(folder, ignore_errors=True)
    base = {"corpus": str(corpus), "n": n}
    today: dict[str, Any] = {}
    if run.before is not None:
        today["build"] = run("build", {**base, "root": str(today_root)}, today=True)
        log_line(f"{n:,}: today's build {today['build']['build_s']:.1f} s")
        today["open"] = run("open", {**base, "root": str(today_root)}, today=True)
    else:  # no worktree: this code's flat index stands in for today's search
        run("build", {**base, "root": str(today_root), "dense": "flat"})
    new = {"build": run("build", {**base, "root": str(new_root), "dense": "auto",
                                  "ivf_min_chunks": args.ivf_min_chunks,
                                  "lists": args.lists})}
    log_line(f"{n:,}: new build {new['build']['build_s']:.1f} s")
    new["open"] = run("open", {**base, "root": str(new_root), "dense": "auto"})
    search = run("search", {**base, "flat_root": str(today_root), "ivf_root": str(new_root),
                            "nprobes": args.nprobes, "default_nprobe": args.default_nprobe,
                            "queries": args.queries, "threads": args.threads})
    log_line(f"{n:,}: searched")
    doc = (n // PER_DOC) // 2
    if run.before is not None:
        today["publish"] = run("publish", {**base, "root": str(today_root), "doc": doc},
                               today=True)
    new["publish"] = run("publish", {**base, "root": str(new_root), "doc": doc,
                                     "dense": "auto"})
    log_line(f"{n:,}: published one changed file")
    if not args.keep:
        shutil.rmtree(today_root, ignore_errors=True)
        shutil.rmtree(new_root, ignore_errors=True)
    return {"n": n, "today": today, "new": new, "search": search}


def report(results: list[dict[str, Any]], args: argparse.Namespace, run: Any) -> str:
    from bench.common import human_bytes, met, ms, secs, table

    search_rows, size_rows, publish_rows, calibration = [], [], [], []
    goal_rows: list[str] = []
    for result in results:
        n, search = result["n"], result["search"]
        cal = search["calibration"]
        calibration.append(
            f"- {n:,} chunks: a query's 1st / 10th nearest chunk cos {cal['first']:.3f} / "
            f"{cal['tenth']:.3f} (medians over queries), median chunk cos {cal['median']:.3f}; "
            f"the exact hybrid top-10 spans {cal['docs_in_top10']:.1f} documents on average; "
            f"store calls at nprobe {args.default_nprobe}: search_dense "
            f"{ms(search['parts']['dense'])}, search_sparse {ms(search['parts']['sparse'])} "
            f"(exact; impact-ordered, opt-in: {ms(search['parts']['sparse_impact'])}) (p50), "
            f"lexical top-50 recall of the impact-ordered search vs the exact one "
            f"{search['parts']['sparse_recall']:.3f}")
        for contender, row in search["rows"].items():
            search_rows.append([f"{n:,}", contender if contender != "flat" else "today's flat "
                                "(exact)", ms(row["p50"]), ms(row["p99"]),
                                f"{row['hybrid_recall']:.3f}", f"{row['dense_recall']:.3f}"])
        default = search["rows"].get(f"ivf nprobe {args.default_nprobe}")
        if default is not None and n >= 1_000_000:
            goal_rows.append(
                f"- goal at {n:,} chunks, p50 < 10 ms with hybrid recall@10 ≥ 0.95 (nprobe "
                f"{args.default_nprobe}, the default): {ms(default['p50'])}, "
                f"{default['hybrid_recall']:.3f}: "
                f"{met(default['p50'] < 0.010 and default['hybrid_recall'] >= 0.95)}")
        for who in ("today", "new"):
            side = result[who]
            if not side:
                continue
            build, opened = side["build"], side["open"]
            size_rows.append([f"{n:,}", "today" if who == "today" else "segments + IVF",
                              secs(build["build_s"]), human_bytes(build["peak_rss"]),
                              ms(opened["open_s"]), human_bytes(max(0, opened["rss_open"])),
                              human_bytes(max(0, opened["rss_searched"])),
                              human_bytes(build["disk"] / n)])
            published = side["publish"]
            share = published["written"] / max(1, published["store_bytes"])
            publish_rows.append([f"{n:,}", "today" if who == "today" else "segments + IVF",
                                 secs(published["publish_s"]), human_bytes(published["written"]),
                                 f"{100 * share:.2f}%", human_bytes(published["store_bytes"]),
                                 secs(published["prune_s"])])
            if who == "new" and n >= 1_000_000:
                goal_rows.append(
                    f"- goal at {n:,} chunks, one changed file published in ≤ 5 s writing "
                    f"≤ 1% of the store: {secs(published['publish_s'])}, {100 * share:.2f}%: "
                    f"{met(published['publish_s'] <= 5 and share <= 0.01)}")
    return "\n\n".join([
        run.heading("A million chunks: today's local index vs segments + IVF"
                    + ("" if args.variation == "mixed" else f", {args.variation} variation")),
        run.machine_now(),
        "Shared machine: other sessions ran beside this one (see the load average); the "
        "contenders of each table ran in the same run; searches: each contender once per "
        "query, in a shuffled order.",
        f"### Search: HybridRetriever.search, hybrid, k = 10, candidates = 50, "
        f"{args.queries} queries (precomputed views), FAISS threads = {args.threads}; recall@10 "
        "against today's flat (exact) results",
        table(["chunks", "index", "p50", "p99", "hybrid recall@10", "dense recall@10"],
              search_rows),
        "\n".join(calibration),
        "IVF scores are exact cosines of the vectors it scans; what it can miss is a "
        "neighbour in a cell it does not probe, hence recall below 1 at small nprobe. The "
        "lexical half does not depend on the dense index: `search_sparse` reads every posting "
        "of the query's tokens (with these Zipf weights ~6M postings per query at 1M chunks, "
        "frequent tokens weighted like rare ones), added in place into one score per chunk "
        "(no copy of the postings), then the top-k above a threshold read off a sample. The "
        "impact-ordered contender (opt-in) reads only the heaviest 1000 postings of each query "
        "token and rescores the best 200 exactly: on this corpus, where the best chunks share "
        "10-15 of the 16 query tokens with weights like everyone's, it finds few of the exact "
        "lexical top-50 (the recall above); what that costs the hybrid top-10 is its row.",
        "### Build, open, memory, disk (a fresh process for each step)",
        "Build: one version from nothing, LocalVersions.begin_build → add (512 a call) → "
        "publish → prune. Open: open_version in a fresh process; RSS growth after the open, "
        "then after 20 dense + sparse searches (mapped pages the searches touched are counted "
        "in RSS; they are page cache, shared by every process and version mapping them).",
        table(["chunks", "store", "build", "build peak RSS", "open", "RSS after open",
               "RSS after 20 searches", "disk per chunk"], size_rows),
        "### One changed file (20 chunks replaced) published from the served version",
        "Time from begin_build to the switch; written = bytes of every file the publish "
        "created or changed (today: the copied dense.faiss and docstore, the rebuilt sparse "
        "matrix; segments: the new segment, the delete list, the files table).",
        table(["chunks", "store", "publish", "written", "of the served store",
               "served store", "prune"], publish_rows),
        "\n".join(goal_rows) or "- (goals are stated at 1M chunks)",
    ])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from bench.common import bench_parser, comma_ints, cpu_count

    parser = bench_parser("bench.scale", __doc__)
    parser.add_argument("--quick", action="store_true",
                        help="3k chunks, IVF from 1k, 30 queries (a smoke run)")
    parser.add_argument("--sizes", help="comma-separated chunk counts (default 100000,1000000)")
    parser.add_argument("--nprobes", default="8,16,32,64,128")
    parser.add_argument("--default-nprobe", type=int, default=32)
    parser.add_argument("--queries", type=int)
    parser.add_argument("--ivf-min-chunks", type=int, default=100_000)
    parser.add_argument("--lists", type=int, help="IVF cells (default about 4 sqrt(n))")
    parser.add_argument("--before", default="53687a8",
                        help="today's code: a commit run from a git worktree")
    parser.add_argument("--no-before", action="store_true",
                        help="skip today's build/open/publish (search against a flat index)")
    parser.add_argument("--cache", default="/tmp/kotae-scale")
    parser.add_argument("--keep", action="store_true", help="keep the built indexes")
    parser.add_argument("--threads", type=int, default=cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variation", choices=sorted(MIXES), default="mixed",
                        help="where chunks vary: a subspace shared by all subjects and one per "
                        "subject (mixed), or the shared one only")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "JOB"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or "3000"
        args.queries = args.queries or 30
        args.ivf_min_chunks = 1000
        args.nprobes = "4,16"
        args.default_nprobe = 16
    args.sizes = comma_ints(args.sizes or "100000,1000000")
    args.nprobes = comma_ints(args.nprobes)
    args.queries = args.queries or 200
    args.section = args.section or ("scale-quick" if args.quick else "scale")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        kind, job = args.worker
        print(json.dumps(WORKERS[kind](json.loads(job))))
        return
    from bench.common import BenchRun, publish

    bench_run = BenchRun("bench.scale", argv)
    work = Path(args.cache) / "indexes"
    work.mkdir(parents=True, exist_ok=True)
    worktree = None if args.no_before else _worktree(args.before, Path(args.cache) / "before")
    try:
        before = next(worktree) if worktree is not None else None
        results = [bench_size(n, args, Runner(before), work) for n in args.sizes]
    finally:
        if worktree is not None:
            worktree.close()
    publish(report(results, args, bench_run), None if args.no_write else args.section)


if __name__ == "__main__":
    main()
