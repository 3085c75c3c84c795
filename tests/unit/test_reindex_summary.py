"""The reindex summary posted in Slack: counts, every skip and warning, file names as data."""

from __future__ import annotations

from bot.reindex import log_line, summary_text
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


def test_summary_says_what_was_embedded_and_what_reused() -> None:
    summary = IndexSummary(updated=["/d/a.md"], chunks_embedded=40, chunks_reused=38,
                           chunks_encoded=2, chunks_total=90, version="v2", switched=True)
    assert "Chunks: embedded 2, reused 38 from the embedding cache." in summary_text(summary)
    assert summary_text(summary, title="Scheduled refresh").startswith(
        ":white_check_mark: Scheduled refresh finished in")
    unchanged = IndexSummary(unchanged=["/d/a.md"], chunks_total=90, version="v2")
    assert "Chunks:" not in summary_text(unchanged)


def test_log_line_of_a_refresh_that_changed_nothing() -> None:
    summary = IndexSummary(unchanged=["/d/a.md"], chunks_total=90, version="v2")
    assert log_line(summary).endswith("nothing changed, nothing published")
    assert "chunks embedded 0, reused 0, 90 in all" in log_line(summary)
