"""Cut chunks into batches by a token budget, only chunks of equal token count together.

Equal counts mean no padding, and only a batch without padding gives each text the very bits
it gets encoded alone (padding changes the order of the attention sums). Across a window of
many files, equal counts are common enough to fill batches; padding waste is zero.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence


def length_batches(token_counts: Sequence[int], token_budget: int,
                   max_batch: int) -> list[list[int]]:
    """Indices into `token_counts`, grouped into batches of one token count each, longest
    first, at most `max_batch` texts and (beyond a single text) `token_budget` tokens."""
    by_count: dict[int, list[int]] = defaultdict(list)
    for index, count in enumerate(token_counts):
        by_count[count].append(index)
    batches: list[list[int]] = []
    for count in sorted(by_count, reverse=True):
        size = max(1, min(max_batch, token_budget // max(count, 1)))
        members = by_count[count]
        batches.extend(members[start:start + size] for start in range(0, len(members), size))
    return batches
