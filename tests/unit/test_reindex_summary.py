"""The reindex summary posted in Slack: counts, every skip and warning, file names as data."""

from __future__ import annotations

from bot.reindex import summary_text
from retrieval.indexer import IndexSummary


def test_summary_counts_skips_and_warnings_with_names_escaped() -> None:
    summary = IndexSummary(
        added=["/d/a.md", "/d/b.md"], unchanged=["/d/c.md"],
        failed=[("/d/<!channel>.md", "empty file (0 bytes)")],
        warnings=[("/d/dam`aged.md", "5 undecodable bytes replaced with U+FFFD")],
        chunks_total=12, version="v1", switched=True, seconds=1.25)
    text = summary_text(summary)
    assert ("files: added 2, updated 0, removed 0, unchanged 1, failed 1; 12 chunks." in text)
    assert "failed 1 files" not in text
    assert "• skipped `&lt;!channel&gt;.md`: empty file (0 bytes)" in text
    assert "<!channel>" not in text
    assert ("• indexed `dam'aged.md` with a warning: 5 undecodable bytes replaced with U+FFFD"
            in text)
    assert "Now serving index version `v1`." in text
