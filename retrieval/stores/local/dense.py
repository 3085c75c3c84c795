"""The dense half of a local segment: an exact flat index below a size, FAISS IVF above it.

A flat scan reads every vector per query (memory-bound: ~45 ms at 100k x 1024 on 2 cores,
linear beyond), so large segments get an `IndexIVFFlat`: the vectors are split into `lists`
k-means cells and a query scans the `nprobe` nearest cells. The vectors stay exact (no
quantisation), so every score returned is the exact cosine similarity; only which vectors
are looked at is approximate. IVF (not HNSW) because it takes `IDSelector`s (access filters,
deleted rows) and its training — the centroids — can be reused by the next base segment.

Both kinds are read with `IO_FLAG_MMAP_IFC`: FAISS maps the file instead of copying it, so
opening costs no time and no memory beyond the page cache the searches touch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from retrieval.stores.local.choice import TRAIN_POINTS_PER_LIST, DenseChoice

logger = logging.getLogger(__name__)

_KMEANS_ITERATIONS = 10  # FAISS's IVF default is 10 as well; written down, not inherited


def empty_flat(dim: int) -> Any:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def is_ivf(index: Any) -> bool:
    return isinstance(index, faiss.IndexIVF)


def read_dense(path: Path) -> Any:
    """The index at `path`, memory-mapped (read-only: never edit what this returns)."""
    return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)


def read_dense_writable(path: Path) -> Any:
    """The index at `path` copied into memory, to be edited (a standalone store)."""
    index = faiss.read_index(str(path))
    if is_ivf(index):  # a writable store edits a flat index; IVF is made again on save
        index = to_flat(index)
    return index


def to_flat(index: Any) -> Any:
    """An `IndexIDMap2(IndexFlatIP)` holding `index`'s vectors and ids."""
    ids = stored_ids(index)
    flat = empty_flat(index.d)
    if len(ids):
        flat.add_with_ids(index.reconstruct_batch(ids), ids)
    return flat


def stored_ids(index: Any) -> np.ndarray:
    """Row ids held by a flat `IndexIDMap2` or an IVF index, ascending."""
    if is_ivf(index):
        invlists = index.invlists
        parts = [faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
                 for i in range(index.nlist) if invlists.list_size(i)]
        ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    else:
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    return np.sort(ids)


def trained_quantizer(index: Any) -> Any | None:
    """A copy of an IVF index's centroids (to train the next base segment with), or None."""
    if not is_ivf(index):
        return None
    return faiss.clone_index(faiss.downcast_index(index.quantizer))


def build_ivf(flat: Any, choice: DenseChoice, quantizer: Any | None = None) -> Any:
    """The IVF index of a flat `IndexIDMap2`'s vectors. With `quantizer` (centroids of the
    previous base segment, same dimension) k-means is skipped: the cells stay as trained."""
    count, dim = int(flat.ntotal), int(flat.d)
    ids = faiss.vector_to_array(flat.id_map).astype(np.int64)
    vectors = faiss.downcast_index(flat.index)
    if quantizer is None or quantizer.d != dim:
        lists = choice.lists_for(count)
        quantizer = faiss.IndexFlatIP(dim)
        ivf = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.niter = _KMEANS_ITERATIONS
        sample = _training_sample(vectors, count, lists)
        logger.info("training IVF%d on %d of %d vectors", lists, len(sample), count)
        ivf.train(sample)
    else:
        lists = int(quantizer.ntotal)
        ivf = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        logger.info("IVF%d: centroids reused from the previous base segment", lists)
    for start in range(0, count, 65_536):  # in slices: no second full copy of the vectors
        stop = min(count, start + 65_536)
        ivf.add_with_ids(faiss.rev_swig_ptr(vectors.get_xb(), count * dim)
                         .reshape(count, dim)[start:stop], ids[start:stop])
    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct by row id
    ivf.nprobe = choice.nprobe
    return ivf


def _training_sample(vectors: Any, count: int, lists: int) -> np.ndarray:
    """k-means on a sample (40 points a cell): on all of 1M x 1024 it would take many
    minutes on 2 cores, for centroids no better placed."""
    size = min(count, lists * TRAIN_POINTS_PER_LIST)
    picked = np.sort(np.random.default_rng(0).choice(count, size, replace=False))
    return vectors.reconstruct_batch(picked)


def search_params(index: Any, nprobe: int, selector: Any | None) -> Any | None:
    """FAISS search parameters for `index`: its nprobe (IVF) and a row filter, if any."""
    if is_ivf(index):
        params = faiss.SearchParametersIVF()
        params.nprobe = min(nprobe, int(index.nlist))
    elif selector is None:
        return None
    else:
        params = faiss.SearchParameters()
    if selector is not None:
        params.sel = selector
    return params
