"""Streaming: load → chunk → window → embed (or reuse) → write, one window of files at a time.

Files are read and chunked on a thread of their own, at most `READ_AHEAD` files ahead of the
embedding (a bounded queue: the model's forward pass releases the GIL, so reading overlaps
it), and their chunks gathered into a window of about
`window_chunks` chunks from many files; the window's chunks are looked up in the embedding
cache, the rest cut into batches of equal token count (`batching.length_batches`) under a
token budget, encoded a few at a time on CPU (`encoding.BatchEncoder`: the budget is shared
by the batches in flight), each batch committed to the cache as soon as it is encoded, and
then the window's files are written to the build. Memory holds one window, never the corpus.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, cast

import numpy as np

from retrieval.chunking import Chunk, chunk_source
from retrieval.embeddings import BGEM3Embeddings
from retrieval.indexing.batching import length_batches
from retrieval.indexing.cache import CachedVectors, EmbeddingCache, model_identity, text_key
from retrieval.indexing.encoding import BatchEncoder, default_workers
from retrieval.indexing.keys import source_key
from retrieval.loaders import NO_TEXT_REASON, SourceFile, load_path
from retrieval.stores import ChunkStore, FileRecord

logger = logging.getLogger(__name__)

WINDOW_CHUNKS = 2048
READ_AHEAD = 16  # files loaded and chunked ahead of the embedding
MAX_BATCH_FACTOR = 8  # a batch of short chunks holds at most 8 × the model's batch size
HEADROOM_TOKENS = 64  # a chunk's title, headings and special tokens, beyond its chunk size


@dataclass
class PipelineCounts:
    """What the pipeline did, for the summary and progress."""

    files_done: int = 0
    chunks_done: int = 0  # chunks written to the build
    chunks_reused: int = 0  # of those, vectors taken from the cache
    chunks_encoded: int = 0  # of those, vectors computed by the model
    chunks_seen: int = 0
    files_seen: int = 0
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # failed, but their previous chunks stay
    warnings: list[tuple[str, str]] = field(default_factory=list)


Report = Callable[[PipelineCounts, int, float], None]  # counts, files_total, encoded per second


class IndexPipeline:
    """Writes new and changed files into a build, reusing every embedding it can."""

    def __init__(self, embeddings: BGEM3Embeddings, cache: EmbeddingCache, *, chunk_size: int,
                 chunk_overlap: int, window_chunks: int = WINDOW_CHUNKS,
                 token_budget: int | None = None, workers: int | None = None) -> None:
        self.embeddings = embeddings
        self.cache = cache
        self.chunk_size, self.chunk_overlap = chunk_size, chunk_overlap
        self.window_chunks = window_chunks
        self._token_budget = token_budget
        self._workers = workers
        self._model: int | None = None

    @property
    def token_budget(self) -> int:
        """Tokens in flight (shared by the batches encoded at once): what a batch of full chunks
        held in the per-file indexer, `batch` chunks of the chunk size with their titles and
        headings. More buys little (on CPU a pass costs about the same per token from a few
        texts up) and costs memory: activations grow with the batch, so with this, not with
        the corpus, as equal-length groups grow with it."""
        return self._token_budget or self.embeddings.batch * min(
            self.chunk_size + HEADROOM_TOKENS, self.embeddings.passage_max_tokens)

    @property
    def workers(self) -> int:
        """Batches encoded at once (`encoding.default_workers` unless given)."""
        return self._workers or default_workers(self.embeddings)

    @property
    def model(self) -> int:
        if self._model is None:
            self._model = self.cache.model_id(model_identity(self.embeddings))
        return self._model

    def run(self, store: ChunkStore, version: str, paths: Sequence[Path],
            previous: set[str], report: Report,
            counts: PipelineCounts | None = None) -> PipelineCounts:
        """Counted into `counts` (a new one by default) as the work is done, so a caller whose
        run fails still knows how much of it was committed (`chunks_encoded`)."""
        counts = counts if counts is not None else PipelineCounts()
        started = time.perf_counter()

        def progress() -> None:
            elapsed = max(time.perf_counter() - started, 1e-9)
            report(counts, len(paths), counts.chunks_encoded / elapsed)

        files = read_ahead(self._chunked(paths, previous, counts), READ_AHEAD)
        with BatchEncoder(self.embeddings, self.workers) as encoder:
            for window in self._windows(files):
                vectors = self._vectors(window, counts, progress, encoder)
                for source, chunks in window:
                    self._write(store, version, source, chunks, vectors)
                    counts.files_done += 1
                    counts.chunks_done += len(chunks)
                    (counts.updated if source.source in previous else counts.added).append(
                        source.source)
                progress()
        return counts

    # --- load and chunk, one file at a time ----------------------------------------------------

    def _chunked(self, paths: Sequence[Path], previous: set[str],
                 counts: PipelineCounts) -> Iterator[tuple[SourceFile, list[Chunk]]]:
        for path in paths:
            loaded = load_path([path])
            counts.files_seen += 1
            for skipped in loaded.skipped:
                key = source_key(Path(skipped.path))
                counts.failed.append((key, skipped.reason))
                if key in previous:  # a file that was fine before keeps its old chunks
                    counts.kept.append(key)
            for source in loaded.documents:
                counts.warnings.extend((source.source, warning) for warning in source.warnings)
                chunks = chunk_source(source, token_length=self.embeddings.token_length,
                                      chunk_size=self.chunk_size,
                                      chunk_overlap=self.chunk_overlap)
                if not chunks:
                    counts.failed.append((source.source, NO_TEXT_REASON))
                    continue
                counts.chunks_seen += len(chunks)
                yield source, chunks

    def _windows(self, files: Iterator[tuple[SourceFile, list[Chunk]]]
                 ) -> Iterator[list[tuple[SourceFile, list[Chunk]]]]:
        window: list[tuple[SourceFile, list[Chunk]]] = []
        size = 0
        for item in files:
            window.append(item)
            size += len(item[1])
            if size >= self.window_chunks:
                yield window
                window, size = [], 0
        if window:
            yield window

    # --- vectors: the cache first, then the model in equal-length batches -----------------------

    def _vectors(self, window: list[tuple[SourceFile, list[Chunk]]], counts: PipelineCounts,
                 progress: Callable[[], None],
                 encoder: BatchEncoder) -> dict[bytes, CachedVectors]:
        texts = {text_key(c.embedding_text): c.embedding_text
                 for _source, chunks in window for c in chunks}
        found = self.cache.get_many(self.model, list(texts))
        missing = [key for key in texts if key not in found]
        # every chunk not encoded below is a reuse (a text twice in the window is encoded once)
        counts.chunks_reused += sum(len(chunks) for _s, chunks in window) - len(missing)
        if not missing:
            return found
        lengths = self.embeddings.passage_token_counts([texts[key] for key in missing])
        # the batches in flight together hold what one batch did: as much work at risk when
        # a build is killed, as much memory
        share = encoder.workers
        max_batch = max(1, self.embeddings.batch * MAX_BATCH_FACTOR // share)
        batches = [[missing[i] for i in batch]
                   for batch in length_batches(lengths, self.token_budget // share, max_batch)]
        encoded = encoder.encode([[texts[key] for key in keys] for keys in batches])
        for keys, views in zip(batches, encoded, strict=True):
            self.cache.put_many(self.model, keys, views.dense, views.sparse)
            for key, dense, sparse in zip(keys, views.dense, views.sparse, strict=True):
                found[key] = CachedVectors(dense=dense, sparse=sparse)
            counts.chunks_encoded += len(keys)
            progress()
        return found

    def _write(self, store: ChunkStore, version: str, source: SourceFile, chunks: list[Chunk],
               vectors: dict[bytes, CachedVectors]) -> None:
        keys = [text_key(c.embedding_text) for c in chunks]
        store.delete_source(source.source)
        store.add([c.chunk_id for c in chunks], [c.text for c in chunks],
                  [c.metadata for c in chunks], np.stack([vectors[k].dense for k in keys]),
                  [vectors[k].sparse for k in keys])
        store.record_file(FileRecord(
            source=source.source, file_hash=source.content_hash, mtime=source.mtime,
            title=source.title, chunk_count=len(chunks), indexed_at=time.time()))
        self.cache.use(version, source.source, self.model, keys)



class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()
T = TypeVar("T")


def read_ahead(items: Iterator[T], size: int) -> Iterator[T]:
    """`items`, produced on a thread at most `size` ahead of the consumer; an error there is
    raised here, and a consumer that stops early (an error, Ctrl-C) stops the thread."""
    ready: queue.Queue[object] = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as error:  # handed to the consumer, raised there
            put(_Failed(error))

    thread = threading.Thread(target=produce, daemon=True, name="kotae-index-reader")
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield cast(T, item)
    finally:
        stop.set()
        thread.join(timeout=5)
