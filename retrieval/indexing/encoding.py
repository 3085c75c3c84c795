"""Encoding a window's batches: on CPU, several batches at once, each on one thread.

Why: torch's intra-op threads (OpenMP) split every matrix product of one forward pass and
meet at a barrier after each, hundreds of times per pass, and a thread waiting there spins.
On a machine whose cores are also busy with other work, a spinning thread waits for one that
is not running: profiled on 2 shared cores with the bge-m3 architecture (71 chunks of the
bench corpus, the same batches), one batch at a time on 2 threads took 139-166 s and 130 s
of CPU, two at a time on one thread each 52 s and 72 s of CPU. On idle cores the two are
close (bench/RESULTS.md, indexing, has both side by side). The forward pass releases the
GIL, so Python threads suffice.

Each batch is still one forward pass over texts of one token count, so every text gets the
dense vector it gets alone, bit for bit: the thread count does not change it
(`tests/integration/test_indexer_workers.py`). The caller's thread keeps its own torch thread
count (`set_num_threads` is per thread for OpenMP and MKL), so queries answered meanwhile
keep theirs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

from retrieval.embeddings import BGEM3Embeddings, EncodedBatch


def default_workers(embeddings: BGEM3Embeddings) -> int:
    """One per torch thread on CPU (KOTAE_EMBEDDING_CPU_THREADS, else the cores); one on a GPU,
    which runs one batch at a time anyway."""
    if embeddings.resolved_device != "cpu":
        return 1
    import torch

    return max(1, torch.get_num_threads())


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


class BatchEncoder:
    """Encodes batches of passages in order, `workers` at a time (at most `workers` in
    flight: a killed build loses only those). Use as a context manager."""

    def __init__(self, embeddings: BGEM3Embeddings, workers: int) -> None:
        self.embeddings = embeddings
        self.workers = max(1, workers)
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> BatchEncoder:
        if self.workers > 1:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="kotae-encode",
                                            initializer=_one_thread)
        return self

    def __exit__(self, _kind: type[BaseException] | None, _error: BaseException | None,
                 _tb: TracebackType | None) -> None:
        if self._pool is not None:
            # an error or Ctrl-C does not wait for the passes in flight: nothing keeps them
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def encode(self, batches: Sequence[Sequence[str]]) -> Iterator[EncodedBatch]:
        """Each batch's views, in the order of `batches`, as soon as it (and every one before
        it) is done."""
        if self._pool is None:
            for texts in batches:
                yield self._encode(texts)
            return
        pending: deque[Future[EncodedBatch]] = deque()
        for texts in batches:
            pending.append(self._pool.submit(self._encode, texts))
            if len(pending) >= self.workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def _encode(self, texts: Sequence[str]) -> EncodedBatch:
        return self.embeddings.encode_passages(list(texts), batch_size=len(texts))
