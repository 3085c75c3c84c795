"""Lexical scoring of a segment: every chunk exactly (`all_scores`, `top_positive`), or the
top-k from impact-ordered postings (`impact_top`, opt-in).

`all_scores` adds each query token's postings into one score array in place (scipy's C
`csc_matvec` over views of the token's slice of the CSR arrays): nothing is copied, where
`matrix[tokens].T @ weights` first copies every posting of the query's tokens (at a million
chunks with this bench's Zipf tokens, ~6M a query: half the time). `top_positive` skips the
full `argpartition` over a million scores by first keeping those above a threshold read off a
strided sample (exact: it falls back when fewer than k pass).

Impact-ordered postings (opt-in: `LexicalChoice.min_positions`):

The exact lexical search reads every posting of the query's tokens (at a million chunks, a
few million a query) and ranks a score per chunk. A chunk ranks high because some query
tokens weigh a lot in it, so the postings that matter sit at the top of each token's list
once the list is sorted by weight: `impact_order` keeps each token's postings (chunk
positions, weights) in descending weight, saved beside the CSR arrays in the segment's
`sparse.npz`. A query reads the first `depth` postings of each of its tokens, sums those
partial scores per chunk, rescores the best `rescore` of them exactly (the CSR rows, binary
search) and returns the exact top-k among them. It is exact whenever every query token has at
most `depth` postings; otherwise a chunk that is mediocre in every token can be missed — the
hybrid retriever scores its candidates exactly anyway, and `bench.scale` measures the recall.

With an access filter (`rows`) or in a small segment the store keeps the exact path. On
`bench.scale`'s corpus (frequent tokens in most chunks, weights alike) it finds few of the exact
lexical top-50 and costs hybrid recall, so it is off by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse as sp

try:  # scipy's own C kernel (private module, there since scipy 0.x): y += A @ x for CSC
    from scipy.sparse._sparsetools import csc_matvec
except ImportError:  # pragma: no cover - a scipy without it: the copying path below
    csc_matvec = None

_SAMPLE_STRIDE = 64  # top_positive's threshold sample: every 64th score
_SAMPLE_MIN = 1 << 16  # arrays shorter than this are ranked directly


@dataclass(frozen=True)
class LexicalChoice:
    """When a segment answers `search_sparse` from impact-ordered postings, and how deep."""

    min_positions: int | None = None  # from this many chunks on; None: never (exact)
    depth_per_k: int = 4
    min_depth: int = 1000  # postings read per query token: max(min_depth, depth_per_k * k)
    rescore_per_k: int = 4  # candidates rescored exactly: max(k, rescore_per_k * k)

    def wants_impact(self, positions: int) -> bool:
        return self.min_positions is not None and positions >= self.min_positions

    def depth(self, k: int) -> int:
        return max(self.min_depth, self.depth_per_k * k)

    def rescore(self, k: int) -> int:
        return max(k, self.rescore_per_k * k)


def impact_order(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Each token's postings by descending weight (ties: ascending position): the CSR's
    `indices` and `data` permuted, token rows still delimited by `matrix.indptr`."""
    tokens = np.repeat(np.arange(matrix.shape[0], dtype=np.int32), np.diff(matrix.indptr))
    order = np.lexsort((-np.asarray(matrix.data), tokens))
    return (np.ascontiguousarray(np.asarray(matrix.indices)[order]),
            np.ascontiguousarray(np.asarray(matrix.data)[order]))


def all_scores(matrix: sp.csr_matrix, query: dict[int, float]) -> np.ndarray:
    """The lexical score of every column (chunk) of `matrix` (tokens x chunks)."""
    tokens = [t for t in query if 0 <= t < matrix.shape[0]]
    if csc_matvec is None or not tokens:
        weights = np.asarray([query[t] for t in tokens], np.float32)
        if not tokens:
            return np.zeros(matrix.shape[1], np.float32)
        return np.asarray(matrix[tokens].T @ weights, np.float32).ravel()
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    scores = np.zeros(matrix.shape[1], np.float32)
    for token in tokens:  # one C call per query token, never a Python loop over postings
        start, stop = int(indptr[token]), int(indptr[token + 1])
        if start < stop:
            csc_matvec(matrix.shape[1], 1, np.asarray([0, stop - start], indices.dtype),
                       indices[start:stop], data[start:stop],
                       np.asarray([query[token]], data.dtype), scores)
    return scores


def top_positive(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the n highest positive scores, best first (ties: lower position first)."""
    if not len(scores):
        return np.zeros(0, np.int64)
    among = None
    if len(scores) >= _SAMPLE_MIN and n * _SAMPLE_STRIDE * 4 < len(scores):
        sample = scores[::_SAMPLE_STRIDE]
        # the sample's (n/stride + a margin)-th best: ~4n scores above it, often fewer than n
        rank = min(len(sample) - 1, n // _SAMPLE_STRIDE + 8)
        threshold = max(np.partition(sample, len(sample) - 1 - rank)[len(sample) - 1 - rank],
                        np.float32(np.finfo(np.float32).tiny))
        above = np.flatnonzero(scores >= threshold)
        if len(above) >= n:
            among = above
    if among is None:
        among = (np.argpartition(-scores, n - 1)[:n] if len(scores) > n
                 else np.arange(len(scores)))
        among = np.sort(among)
    values = scores[among]
    if len(among) > n:  # the n best of them; every score tied with the n-th is kept here
        cut = np.partition(-values, n - 1)[n - 1]
        keep = -values <= cut
        among, values = among[keep], values[keep]
    order = np.argsort(-values, kind="stable")[:n]  # `among` ascends: ties by position
    order = order[values[order] > 0]
    return among[order].astype(np.int64)


def exact_scores(matrix: sp.csr_matrix, query: dict[int, float],
                 positions: np.ndarray) -> np.ndarray:
    """The lexical score of each column in `positions` (sorted or not): each query token's
    postings (ascending positions) are binary-searched, nothing else is read."""
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    # the postings' own dtype: a mixed-dtype searchsorted would copy each posting list
    asked = np.asarray(positions).astype(indices.dtype)
    scores = np.zeros(len(asked), np.float32)
    if not len(asked):
        return scores
    for token, weight in query.items():
        if not 0 <= token < matrix.shape[0]:
            continue
        start, stop = int(indptr[token]), int(indptr[token + 1])
        if start == stop:
            continue
        postings = indices[start:stop]
        at = np.minimum(np.searchsorted(postings, asked), stop - start - 1)
        hit = postings[at] == asked
        scores[hit] += np.float32(weight) * data[start:stop][at[hit]]
    return scores


def impact_top(matrix: sp.csr_matrix, impact: tuple[np.ndarray, np.ndarray],
               query: dict[int, float], k: int, choice: LexicalChoice,
               hidden_positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The top-k positive (exact scores, column positions), best first, among the chunks
    found in the first `choice.depth(k)` impact-ordered postings of each query token;
    `hidden_positions` (sorted) never come back."""
    positions, weights = impact
    depth = choice.depth(k)
    indptr = matrix.indptr
    parts, contributions = [], []
    for token, weight in query.items():  # one slice per query token, never per posting
        if not 0 <= token < matrix.shape[0] or weight <= 0:
            continue
        start = int(indptr[token])
        stop = min(int(indptr[token + 1]), start + depth)
        if start < stop:
            parts.append(positions[start:stop])
            contributions.append(np.float32(weight) * weights[start:stop])
    if not parts:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    found, inverse = np.unique(np.concatenate(parts), return_inverse=True)
    partial = np.bincount(inverse, np.concatenate(contributions))
    if len(hidden_positions):
        partial[np.isin(found, hidden_positions, assume_unique=True)] = 0.0
    rescore = choice.rescore(k)
    if len(found) > rescore:
        best = np.argpartition(-partial, rescore - 1)[:rescore]
        found, partial = found[best], partial[best]
    found = found[partial > 0]
    scores = exact_scores(matrix, query, found)
    order = np.lexsort((found, -scores))[:k]  # best first; ties by position, as the exact path
    order = order[scores[order] > 0]
    return scores[order], found[order].astype(np.int64)
