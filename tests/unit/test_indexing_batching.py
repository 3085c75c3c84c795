"""Equal-length batches under a token budget (retrieval.indexing.batching)."""

from __future__ import annotations

from retrieval.indexing.batching import length_batches


def test_batches_hold_one_length_longest_first_within_the_budget() -> None:
    counts = [10, 50, 10, 50, 10, 30, 50, 10]
    batches = length_batches(counts, token_budget=100, max_batch=3)
    assert [[counts[i] for i in batch] for batch in batches] == [
        [50, 50], [50], [30], [10, 10, 10], [10]]
    assert sorted(i for batch in batches for i in batch) == list(range(len(counts)))


def test_a_text_longer_than_the_budget_still_gets_a_batch() -> None:
    assert length_batches([900, 900], token_budget=100, max_batch=8) == [[0], [1]]
    assert length_batches([], token_budget=100, max_batch=8) == []
