"""The streaming preview (bot/render/progress.py)."""

from __future__ import annotations

import pytest

from bot.render import render_progress
from tests.unit.render_checks import ZWSP, check_safe, fence_lines, slack_len

# --- render_progress ---


def test_progress_closes_unclosed_fence() -> None:
    out = render_progress("例:\n\n```python\nprint('a < b')")
    assert out == "例:\n\n```\nprint('a &lt; b')\n```"


@pytest.mark.parametrize(
    ("partial", "expected"),
    [
        ("これは**重要", f"これは{ZWSP}*重要*"),
        ("これは**重要*", f"これは{ZWSP}*重要*"),
        ("Hello **", "Hello"),
        ("a **b ~~c", "a *b ~c~*"),
        ("run `make te", "run `make te`"),
        ("done **ok** and", "done *ok* and"),
    ],
)
def test_progress_never_shows_dangling_markers(partial: str, expected: str) -> None:
    assert render_progress(partial) == expected


def test_progress_keeps_the_end_of_long_text() -> None:
    partial = "\n\n".join(f"段落 {i} の文章です。" * 20 for i in range(100)) + "\n\n最後の**文"
    out = render_progress(partial)
    assert slack_len(out) <= 3000
    assert out.startswith("…")
    assert out.endswith(f"最後の{ZWSP}*文*")
    check_safe(out)


def test_progress_reopens_fence_when_the_kept_end_is_code() -> None:
    code = "\n".join(f"    x = {n} & {n}" for n in range(1000))
    out = render_progress(f"説明\n\n```\n{code}")
    assert slack_len(out) <= 3000
    assert out.startswith("…\n```\n    x = ")  # code indentation survives the cut
    assert out.endswith("    x = 999 &amp; 999\n```")
    assert len(fence_lines(out)) == 2


def test_progress_of_empty_text_is_not_empty() -> None:
    assert render_progress("") == "…"
