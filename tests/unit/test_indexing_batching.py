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


def test_read_ahead_keeps_order_stays_bounded_and_raises_the_producers_error() -> None:
    import threading

    import pytest

    from retrieval.indexing.pipeline import read_ahead

    produced: list[int] = []
    gate = threading.Event()

    def items():  # type: ignore[no-untyped-def]
        for number in range(10):
            produced.append(number)
            yield number
        raise OSError("disk gone")

    stream = read_ahead(items(), 2)
    assert next(stream) == 0
    gate.wait(0.3)  # give the reader time to run ahead as far as it may
    assert len(produced) <= 4  # one consumed, two queued, one waiting to be put
    assert list(_take(stream, 9)) == list(range(1, 10))
    with pytest.raises(OSError, match="disk gone"):
        next(stream)


def _take(stream, count):  # type: ignore[no-untyped-def]
    for _ in range(count):
        yield next(stream)
