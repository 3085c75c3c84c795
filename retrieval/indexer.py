"""Build or update the index: incremental by file content hash, atomic by version switch.

A run begins a build from the served version, removes the chunks of changed and deleted files,
indexes only new and changed files, then publishes the build with one switch. A crash or
Ctrl-C leaves the served version untouched; a lock keeps a second indexer out. Everything about
the index goes through the store seam (`retrieval.stores`), so any backend serves.

New and changed files stream through `retrieval.indexing.pipeline` (a window of files at a
time, equal-length batches from many files); each chunk's vectors come from the embedding cache
(`retrieval.indexing.cache`) when its exact text was embedded before, by any build, finished or
not, so an edit re-embeds only the chunks it changed and a killed build resumes.

A disk that fills up mid-build (no space, over quota, over the file size limit), in whichever
file, fails the run with `IndexDiskFull`: the build is discarded, the served version is as it
was, and the batches embedded before stay in the cache (each is committed whole or not at all),
so a run after space is freed picks up where this one stopped.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval.embeddings import BGEM3Embeddings
from retrieval.errors import IndexDiskFull, IndexPathMissing, IndexSwapRefused, KotaeError
from retrieval.indexing.cache import EmbeddingCache, cache_path
from retrieval.indexing.diskfull import disk_full_errno
from retrieval.indexing.kernels import bound_native_memory
from retrieval.indexing.keys import source_key
from retrieval.indexing.pipeline import WINDOW_CHUNKS, IndexPipeline, PipelineCounts
from retrieval.loaders import find_sources, hash_file
from retrieval.settings import BUNDLED_SAMPLES, Settings
from retrieval.stores import ChunkStore, FileRecord, open_store_backend

logger = logging.getLogger(__name__)

__all__ = ["IndexProgress", "IndexSummary", "Indexer", "default_roots", "source_key"]


@dataclass
class IndexProgress:
    """Reported while indexing; `phase` is scanning | embedding | saving | done.

    While embedding, `chunks_done` counts chunks that have their vectors, `chunks_reused` of
    them from the cache; `chunks_total` is an estimate until every file is read (files are
    read as they are embedded), and `embeddings_per_s` counts the model's work only.
    """

    phase: str
    files_done: int = 0
    files_total: int = 0
    chunks_done: int = 0
    chunks_total: int = 0
    embeddings_per_s: float = 0.0
    eta_s: float | None = None
    chunks_reused: int = 0


@dataclass
class IndexSummary:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # indexed, but (source, what)
    chunks_embedded: int = 0  # chunks of new and changed files written: reused + encoded
    chunks_reused: int = 0  # of those, vectors from the embedding cache
    chunks_encoded: int = 0  # of those, vectors computed by the model in this run
    chunks_total: int = 0
    version: str | None = None
    switched: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "added": self.added, "updated": self.updated, "unchanged": self.unchanged,
            "removed": self.removed,
            "failed": [{"source": s, "reason": r} for s, r in self.failed],
            "warnings": [{"source": s, "warning": w} for s, w in self.warnings],
            "chunks_embedded": self.chunks_embedded, "chunks_reused": self.chunks_reused,
            "chunks_encoded": self.chunks_encoded, "chunks_total": self.chunks_total,
            "version": self.version, "switched": self.switched, "seconds": round(self.seconds, 3),
        }


ProgressCallback = Callable[[IndexProgress], None]


def default_roots(settings: Settings) -> list[Path]:
    """What a run without paths indexes (`kotae index`, `/kotae reindex`).

    KOTAE_DOCS_DIR when it is set. Otherwise the folders the served version was built from,
    as recorded in its manifest: a reindex from Slack on a bot started without KOTAE_DOCS_DIR
    must refresh the team's documents, not replace them with the bundled samples. Only a
    first build falls back to the samples.
    """
    if "docs_dir" in settings.model_fields_set:
        return [settings.docs_dir]
    versions = open_store_backend(settings)
    current = versions.current_version()
    if current is None:
        return [settings.docs_dir]
    recorded = versions.manifest(current).get("paths")
    if recorded:
        return [Path(path) for path in recorded]
    # A version built before folders were recorded: refresh exactly its files (new files
    # need one run with explicit folders), rather than swap them for the samples.
    files = sorted(versions.file_records(current))
    if files:
        logger.warning("index version %s does not record its folders; reindexing its %d "
                       "files. Run `kotae index <folder>` once to record them.", current,
                       len(files))
        return [Path(source) for source in files]
    return [settings.docs_dir]


def _is_under(key: str, folder: str) -> bool:
    return key.startswith(folder.rstrip("/") + "/")


def _names(roots: Sequence[Path]) -> str:
    return ", ".join(str(root) for root in roots)


class Indexer:
    """Turns folders of documents into a published index version."""

    def __init__(self, settings: Settings, embeddings: BGEM3Embeddings, *,
                 window_chunks: int = WINDOW_CHUNKS, token_budget: int | None = None,
                 workers: int | None = None) -> None:
        """`window_chunks`, `token_budget` and `workers` (batches encoded at once): see
        `retrieval.indexing.pipeline`; the defaults are the product's. Made before the model
        runs, it keeps native memory from growing with the corpus
        (`retrieval.indexing.kernels`)."""
        bound_native_memory()
        self.settings = settings
        self.embeddings = embeddings
        self.versions = open_store_backend(settings)
        self.window_chunks = window_chunks
        self.token_budget = token_budget
        self.workers = workers

    def run(self, paths: Sequence[Path] | None = None, *, full: bool = False,
            replace: bool = False, holder: str = "cli",
            progress: ProgressCallback | None = None) -> IndexSummary:
        """Index `paths` (default: `default_roots`) as the whole corpus.

        Files indexed before but absent from `paths` are removed from the index, except those
        under a path that does not exist at all (kept, and the path reported as failed).
        Refused, leaving the served version as it is: a run where no given path exists (a
        typo would otherwise empty the index), and a run on explicit `paths` other than the
        index's own folders that would remove most of what it serves (unless `replace`).
        """
        report = progress or (lambda _p: None)
        started = time.perf_counter()
        try:
            with self.versions.lock(holder):
                self.versions.remove_stale_builds()
                explicit = bool(paths)
                roots = [Path(p) for p in paths] if paths else default_roots(self.settings)
                summary = self._run_locked(roots, full, report,
                                           guard_removals=explicit and not replace)
        except (OSError, sqlite3.Error, RuntimeError) as error:  # before or around a build
            number = disk_full_errno(error, self.settings.index_dir)
            if number is None:
                raise
            raise self._disk_full(number, chunks_kept=0) from error
        summary.seconds = time.perf_counter() - started
        report(IndexProgress("done", chunks_total=summary.chunks_total))
        return summary

    def _run_locked(self, roots: list[Path], full: bool, report: ProgressCallback,
                    guard_removals: bool) -> IndexSummary:
        summary = IndexSummary()
        current = self.versions.current_version()
        if not any(root.exists() for root in roots):
            raise IndexPathMissing(
                f"{_names(roots)}: no such file or folder. Nothing was indexed"
                + (f"; the index keeps serving {current} as it was." if current else "."))
        missing_roots = [source_key(r) for r in roots if not r.exists()]
        paths, not_read = find_sources([r for r in roots if r.exists()])
        # every input that will not be read is reported (unsupported, a link leading outside)
        summary.failed.extend((source_key(Path(s.path)), s.reason) for s in not_read)
        report(IndexProgress("scanning", files_total=len(paths)))
        hashes = {source_key(p): (p, hash_file(p)) for p in paths}

        served = self.versions.file_records(current) if current else {}
        # read only where it is used: a rebuild from scratch (--full) does not need it
        needs_manifest = current is not None and (not full or guard_removals)
        served_manifest = self.versions.manifest(current) if needs_manifest else {}
        reuse = current is not None and not full and self._compatible(served_manifest)
        previous = served if reuse else {}
        # Files that failed with exactly these bytes last time fail the same way again: they
        # are reported, not re-read, and do not make a run publish a new version.
        known_failures = _failures(served_manifest) if reuse else {}
        failing_again = {key: known_failures[key]["reason"] for key, (_p, h) in hashes.items()
                         if key in known_failures and known_failures[key]["hash"] == h}
        changed = {key for key, (_p, h) in hashes.items() if key not in failing_again
                   and (key not in previous or previous[key].file_hash != h)}
        gone = [k for k in previous if k not in hashes]
        # A folder that is not there (unmounted, renamed, a typo) is a failure, not a deletion:
        # its files keep their chunks until a run can see the folder again. (A missing path
        # that was itself an indexed file is a deleted file, and goes.)
        kept = {root: [k for k in served if k not in hashes and _is_under(k, root)]
                for root in missing_roots}
        kept_keys = {k for keys in kept.values() for k in keys}
        if kept_keys and not reuse:
            absent = ", ".join(root for root, keys in kept.items() if keys)
            raise IndexPathMissing(
                f"{absent} does not exist, and a rebuild from scratch would drop the "
                f"{len(kept_keys)} files indexed from it. The index keeps serving its current "
                "version: mount or fix the folder, or leave it out of the paths to index.")
        summary.failed.extend(
            (root, "no such file or folder" + (f"; kept what was indexed from it ({len(keys)} "
                                               "files)" if keys else ""))
            for root, keys in kept.items())
        summary.failed.extend(sorted(failing_again.items()))
        summary.unchanged = sorted([*(k for k in hashes if k not in changed
                                      and (k in previous or k not in failing_again)),
                                    *kept_keys])
        summary.removed = sorted(k for k in gone if k not in kept_keys)
        if guard_removals and current is not None:
            _refuse_a_swap(served_manifest, roots, served,
                           [k for k in served if k not in hashes and k not in kept_keys])
        if reuse and not changed and not summary.removed:
            summary.version = current
            summary.chunks_total = int(served_manifest.get("chunks", 0))
            return summary

        build = self.versions.begin_build(self.embeddings.dimension,
                                          base=current if reuse else None)
        version, store = build.version, build.store
        cache: EmbeddingCache | None = None
        counts = PipelineCounts()
        try:
            cache = EmbeddingCache(cache_path(self.settings.index_dir))
            cache.start_version(version, base=current if reuse else None)
            for key in summary.removed:
                store.delete_source(key)
                cache.drop_source(version, key)
            failures = {key: known_failures[key] for key in failing_again}
            self._index_files(store, cache, version, [hashes[k][0] for k in sorted(changed)],
                              previous, summary, report, counts)
            new_failures = {source for source, _reason in summary.failed} - set(failing_again)
            failures.update({key: {"hash": hashes[key][1], "reason": reason}
                             for key, reason in summary.failed if key in new_failures
                             and key in hashes})
            report(IndexProgress("saving", chunks_done=summary.chunks_embedded,
                                 chunks_total=summary.chunks_embedded))
            store.set_meta(model=self.settings.embedding_model, dim=self.embeddings.dimension)
            summary.chunks_total = store.count
            manifest = {
                "version": version, "model": self.settings.embedding_model,
                "dim": self.embeddings.dimension, "created_at": time.time(),
                "chunks": store.count, "files": len(store.files()),
                "chunk_size": self.settings.chunk_size,
                "chunk_overlap": self.settings.chunk_overlap,
                # never a path that does not exist, unless files indexed from it are kept
                "paths": [source_key(root) for root in roots
                          if root.exists() or kept.get(source_key(root))],
                "failed": failures,
            }
            build.publish(manifest)  # saves the store, then switches readers to it
        except BaseException as error:
            # told apart before the discard, which frees the space the check looks for
            number = (disk_full_errno(error, self.settings.index_dir)
                      if isinstance(error, Exception) else None)
            build.discard()  # the served version stays as it was; the cache keeps its work
            if cache is not None:
                cache.close()
            if number is not None:
                raise self._disk_full(number, chunks_kept=counts.chunks_encoded) from error
            raise
        self.versions.prune()
        try:  # what the served and the previous version use (the ones prune keeps)
            cache.prune({version, *([current] if current else [])})
        except (KotaeError, sqlite3.Error) as error:  # published already: pruning can wait
            logger.warning("embedding cache not pruned: %s", error)
        finally:
            cache.close()
        summary.version, summary.switched = version, True
        return summary

    def _index_files(self, store: ChunkStore, cache: EmbeddingCache, version: str,
                     paths: list[Path], previous: dict[str, FileRecord],
                     summary: IndexSummary, report: ProgressCallback,
                     counts: PipelineCounts) -> None:
        pipeline = IndexPipeline(self.embeddings, cache, chunk_size=self.settings.chunk_size,
                                 chunk_overlap=self.settings.chunk_overlap,
                                 window_chunks=self.window_chunks,
                                 token_budget=self.token_budget, workers=self.workers)

        def on_progress(counts: PipelineCounts, files_total: int, rate: float) -> None:
            ready = counts.chunks_reused + counts.chunks_encoded
            # files are read as they are embedded: extrapolate from those read so far
            estimate = (round(counts.chunks_seen * files_total / counts.files_seen)
                        if counts.files_seen else 0)
            total = max(counts.chunks_seen if counts.files_seen >= files_total else estimate,
                        ready)
            left = max(total - ready, 0)
            report(IndexProgress("embedding", files_done=counts.files_done,
                                 files_total=files_total, chunks_done=ready, chunks_total=total,
                                 embeddings_per_s=rate, eta_s=left / rate if rate else None,
                                 chunks_reused=counts.chunks_reused))

        pipeline.run(store, version, paths, set(previous), on_progress, counts)
        summary.failed.extend(counts.failed)
        summary.unchanged.extend(counts.kept)
        summary.warnings.extend(counts.warnings)
        summary.added.extend(counts.added)
        summary.updated.extend(counts.updated)
        summary.chunks_embedded = counts.chunks_done
        summary.chunks_reused = counts.chunks_reused
        summary.chunks_encoded = counts.chunks_encoded

    def _disk_full(self, number: int, chunks_kept: int) -> IndexDiskFull:
        """One line for the CLI and the Slack summaries: what happened, that nothing served
        changed, what to do, and that the work done is not lost."""
        current = self.versions.current_version()
        serving = (f"the index keeps serving {current}, untouched" if current
                   else "no index was published")
        kept = (f" (the {chunks_kept} chunks embedded before it are kept in the embedding "
                "cache and will not be embedded again)" if chunks_kept else "")
        return IndexDiskFull(
            f"The build stopped: no space left in {self.settings.index_dir} "
            f"({os.strerror(number)}); {serving}. Free some space there and index again{kept}.")

    def _compatible(self, manifest: dict[str, Any]) -> bool:
        """An old version is reused only if it was built with the same model and chunking."""
        return (manifest.get("model") == self.settings.embedding_model
                and manifest.get("chunk_size") == self.settings.chunk_size
                and manifest.get("chunk_overlap") == self.settings.chunk_overlap)


def _refuse_a_swap(manifest: dict[str, Any], roots: list[Path], served: dict[str, FileRecord],
                   removed: list[str]) -> None:
    """Explicit paths other than the index's folders, removing most of what it serves, are far
    more often a typo or a misunderstanding ("add this folder") than a wish to swap the
    corpus: ask for `--replace`. The bundled samples may always be replaced."""
    recorded = sorted(manifest.get("paths") or [])
    if sorted(source_key(root) for root in roots) == recorded:
        return
    samples = BUNDLED_SAMPLES.resolve().as_posix()
    team_files = [key for key in served if not _is_under(key, samples)]
    lost = [key for key in removed if not _is_under(key, samples)]
    if team_files and len(lost) * 2 > len(team_files):
        given = [source_key(root) for root in roots]
        inside = all(any(key == folder or _is_under(key, folder) for folder in recorded)
                     for key in given)
        advice = ["to refresh it, run `kotae index` without paths"]
        if not inside:  # a folder beside the corpus: most likely meant to be added
            advice.append(f"to add {_names(roots)}, name its folders too (`kotae index "
                          f"{' '.join(recorded + given)}`)")
        advice.append(f"to replace its documents with {_names(roots)}, add --replace")
        raise IndexSwapRefused(
            f"Indexing only {_names(roots)} would remove {len(lost)} of the "
            f"{len(team_files)} files the index serves (it was built from "
            f"{', '.join(recorded) or 'other files'}), because the paths given are the whole "
            f"corpus. Nothing was changed. {'; '.join(advice).capitalize()}.")


def _failures(manifest: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Files that failed in the version `manifest` describes: source -> {hash, reason}."""
    failed = manifest.get("failed")
    return failed if isinstance(failed, dict) else {}

