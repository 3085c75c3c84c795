"""Keep the native memory of embedding from growing with the corpus.

Two things made peak RSS while indexing grow with the corpus, both outside Python's heap
(bench/RESULTS.md, indexing, memory):

- **oneDNN's primitive cache.** On CPU torch runs the model's matrix products through oneDNN,
  which keeps every primitive it creates (a JIT-compiled kernel and its buffers) for each
  distinct input shape, up to 1024 of them, for the life of the process. Length-bucketed
  batches (`batching`) give nearly every new (batch size, token count) a new shape, so the
  bigger the corpus, the more shapes. Measured: 100 batches of distinct shapes on the bge-m3
  architecture kept 207 MiB more anonymous memory with the cache than 37 MiB without, and took
  the same time (163 s vs 160 s); the tiny model kept 16 MiB vs 4 MiB for 400 shapes. oneDNN
  reads ONEDNN_PRIMITIVE_CACHE_CAPACITY once, at its first primitive: this takes effect only
  in a process whose model has not run a forward pass yet (`kotae index`).
- **glibc's sliding mmap threshold.** Freeing a large block (an activation) raises the size
  from which malloc maps blocks of their own, up to 32 MiB; activations of ever new sizes then
  come from the heap and arenas, whose freed holes are kept, not given back. A fixed threshold
  (glibc's initial 128 KiB; `mallopt`, any time) gives each large block back when freed.

Values the environment sets (ONEDNN_PRIMITIVE_CACHE_CAPACITY, MALLOC_MMAP_THRESHOLD_) are kept.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

CAPACITY_VARIABLE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
MMAP_THRESHOLD_VARIABLE = "MALLOC_MMAP_THRESHOLD_"
M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, before it starts sliding


def bound_native_memory() -> None:
    """No oneDNN primitive cache and a fixed mmap threshold, unless the environment says."""
    os.environ.setdefault(CAPACITY_VARIABLE, "0")
    if MMAP_THRESHOLD_VARIABLE in os.environ:
        return
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS): nothing to fix
        return
    if not mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        logger.debug("mallopt(M_MMAP_THRESHOLD) refused; malloc keeps its sliding threshold")
