"""Citation markers in the model's text (retrieval/citations.py): which count, how they are
renumbered, and what is left alone."""

from __future__ import annotations

import pytest

from retrieval.citations import related_citations, resolve_citations
from retrieval.context import PackedSource
from retrieval.types import SearchHit


def hit(name: str, score: float = 0.5) -> SearchHit:
    return SearchHit(chunk_id=f"{name}-0", text=f"Text of {name}.", score=score,
                     metadata={"source": f"docs/{name}.md", "title": name})


@pytest.fixture
def sources() -> list[PackedSource]:
    return [PackedSource(number, hit(name), f"Text of {name}.", False)
            for number, name in enumerate(["alpha", "beta", "gamma"], start=1)]


def cited_sources(text: str, sources: list[PackedSource]) -> tuple[str, list[str]]:
    cleaned, citations = resolve_citations(text, sources)
    assert [c.number for c in citations] == list(range(1, len(citations) + 1))
    assert all(c.cited for c in citations)
    return cleaned, [c.source for c in citations]


def test_full_width_brackets_are_markers(sources: list[PackedSource]) -> None:
    text, cited = cited_sources("締め切りは25日です［2］。承認は上長です［1］。", sources)
    assert text == "締め切りは25日です[1]。承認は上長です[2]。"
    assert cited == ["docs/beta.md", "docs/alpha.md"]


@pytest.mark.parametrize("group", ["[1, 3]", "[1,3]", "[1、3]", "［1，3］", "[ 1 , 3 ]"])
def test_grouped_markers_become_one_marker_per_source(sources: list[PackedSource],
                                                      group: str) -> None:
    text, cited = cited_sources(f"Both say so {group}.", sources)
    assert text == "Both say so [1][2]."
    assert cited == ["docs/alpha.md", "docs/gamma.md"]


def test_a_group_keeps_its_valid_numbers_only(sources: list[PackedSource]) -> None:
    text, cited = cited_sources("Yes [7, 2, 2]. Also [3].", sources)
    assert text == "Yes [1]. Also [2]."
    assert cited == ["docs/beta.md", "docs/gamma.md"]


def test_only_invented_markers_leave_no_citations(sources: list[PackedSource]) -> None:
    cleaned, citations = resolve_citations("Monday [9] at ten［12］, see [4, 5].", sources)
    assert cleaned == "Monday at ten, see."
    assert citations == []
    # what the chain shows instead: the top sources, marked as related rather than cited
    related = related_citations([source.hit for source in sources], 2)
    assert [(c.number, c.source, c.cited) for c in related] == [
        (1, "docs/alpha.md", False), (2, "docs/beta.md", False)]


@pytest.mark.parametrize("code", [
    "Use `items[0]` to get the first one",
    "Use ``a[1]`b[2]`` as is",
    "```python\na[1] = b[3]\nprint(a[2])\n```",
    "~~~\nx[2]\n~~~",
    "1. Run this:\n\n   ```\n   rows[3]\n   ```",
    "> ```\n> q[1]\n> ```",
    "Indented:\n\n    matrix[1][2] = 0",
    "```\nan unclosed fence[2]",
])
def test_code_is_left_exactly_as_written(sources: list[PackedSource], code: str) -> None:
    text = f"It is in the docs [2].\n\n{code}"
    cleaned, citations = resolve_citations(text, sources)
    assert cleaned == f"It is in the docs [1].\n\n{code}"
    assert [c.source for c in citations] == ["docs/beta.md"]


def test_markers_around_code_still_count(sources: list[PackedSource]) -> None:
    text = "Call `items[0]` first [3], then:\n\n```\nitems[1]\n```\n\nas shown [1] [9]."
    cleaned, citations = resolve_citations(text, sources)
    assert cleaned == ("Call `items[0]` first [1], then:\n\n```\nitems[1]\n```\n\n"
                       "as shown [2].")
    assert [c.source for c in citations] == ["docs/gamma.md", "docs/alpha.md"]


def test_a_lone_backtick_does_not_hide_markers(sources: list[PackedSource]) -> None:
    cleaned, citations = resolve_citations("Type ` then enter [1].\n\nDone` [2].", sources)
    assert cleaned == "Type ` then enter [1].\n\nDone` [2]."
    assert len(citations) == 2
