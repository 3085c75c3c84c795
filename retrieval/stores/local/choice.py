"""Which dense index a local segment gets: read by versions and status without FAISS."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

DenseKind = Literal["auto", "flat", "ivf"]

TRAIN_POINTS_PER_LIST = 40  # FAISS warns below 39 training points per centroid


@dataclass(frozen=True)
class DenseChoice:
    """Which dense index a segment gets. `auto`: IVF from `ivf_min_chunks` chunks on."""

    kind: DenseKind = "auto"
    ivf_min_chunks: int = 100_000
    nprobe: int = 32
    lists: int | None = None  # None: about 4 sqrt(n), the FAISS guideline

    def wants_ivf(self, count: int) -> bool:
        if self.kind == "auto":
            return count >= self.ivf_min_chunks
        return self.kind == "ivf" and count > 0

    def lists_for(self, count: int) -> int:
        if self.lists is not None:
            return max(1, min(self.lists, count))
        return max(1, min(int(4 * math.sqrt(count)), count // TRAIN_POINTS_PER_LIST or 1))
