"""Impact-ordered postings: the lexical top-k of a large segment without scoring every chunk.

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

With an access filter (`rows`) or in a small segment the store keeps the exact path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse as sp


@dataclass(frozen=True)
class LexicalChoice:
    """When a segment answers `search_sparse` from impact-ordered postings, and how deep."""

    min_positions: int = 100_000  # segments with fewer chunks stay exact (they are fast)
    depth_per_k: int = 4
    min_depth: int = 1000  # postings read per query token: max(min_depth, depth_per_k * k)
    rescore_per_k: int = 4  # candidates rescored exactly: max(k, rescore_per_k * k)

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
