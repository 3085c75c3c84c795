"""Packing sources into the prompt's token budget (retrieval/context.py)."""

from __future__ import annotations

from retrieval.context import MIN_TRIMMED_TOKENS, TRIM_MARKER, pack_sources
from retrieval.types import SearchHit


def words(text: str) -> int:
    """A stand-in tokenizer: one token per whitespace-separated word (the marker's … is one)."""
    return len(text.split())


def hit(name: str, n_words: int) -> SearchHit:
    text = " ".join(f"{name}{i}" for i in range(n_words))
    return SearchHit(chunk_id=name, text=text, score=1.0, metadata={"source": f"{name}.md"})


def test_a_chunk_longer_than_the_budget_is_trimmed_to_fit() -> None:
    budget = 100
    packed = pack_sources([hit("long", 250), hit("next", 10)], budget, words)
    assert len(packed) == 1  # nothing follows a trimmed source
    only = packed[0]
    assert only.trimmed and only.number == 1
    assert only.text.endswith(TRIM_MARKER)
    assert words(only.text) <= budget  # the marker counts against the budget
    assert words(only.text) == budget  # …and the rest of the budget is used
    assert only.text.removesuffix(TRIM_MARKER) == " ".join(f"long{i}" for i in range(99))
    assert only.hit.text.startswith(only.text.removesuffix(TRIM_MARKER))  # the hit is intact


def test_whole_sources_first_then_the_one_that_does_not_fit_is_trimmed() -> None:
    budget = 200
    packed = pack_sources([hit("a", 80), hit("b", 70), hit("c", 500), hit("d", 5)],
                          budget, words)
    assert [(p.hit.chunk_id, p.trimmed) for p in packed] == [
        ("a", False), ("b", False), ("c", True)]
    assert [p.text for p in packed[:2]] == [packed[0].hit.text, packed[1].hit.text]
    assert sum(words(p.text) for p in packed) <= budget
    assert packed[2].text.endswith(TRIM_MARKER)


def test_a_remainder_too_small_to_be_useful_is_dropped() -> None:
    budget = 100
    packed = pack_sources([hit("a", budget - MIN_TRIMMED_TOKENS + 1), hit("b", 300)],
                          budget, words)
    assert [p.hit.chunk_id for p in packed] == ["a"] and not packed[0].trimmed

