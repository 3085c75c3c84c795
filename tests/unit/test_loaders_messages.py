"""What the person indexing reads: sizes in MiB, one wording for "no text", library complaints
kept with their file instead of printed, and no per-file warnings in the log."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

from retrieval.loaders import MAX_FILE_BYTES, NO_TEXT_REASON, load_path


def test_too_large_says_mib_for_the_file_and_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "dump.txt"
    with path.open("wb") as stream:  # sparse: the size is what matters, not the bytes
        stream.truncate(int(52.4 * 1024 * 1024))
    [skipped] = load_path([path]).skipped
    assert MAX_FILE_BYTES == 50 * 1024 * 1024
    assert skipped.reason == "too large (52.4 MiB; the limit is 50 MiB)"


def test_too_large_below_a_mebibyte(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("x" * 3000)
    [skipped] = load_path([path], max_bytes=2048).skipped
    assert skipped.reason == "too large (2.9 KiB; the limit is 2 KiB)"


def test_blank_file_uses_the_shared_no_text_reason(tmp_path: Path) -> None:
    path = tmp_path / "blank.md"
    path.write_text(" \n\t\n\u3000\n")
    [skipped] = load_path([path]).skipped
    assert skipped.reason == NO_TEXT_REASON


def test_xml_read_as_html_is_a_file_warning_not_a_printed_one(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "feed.html"
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n'
        "<rss><channel><title>Feed</title><item><description>Release notes here"
        "</description></item></channel></rss>",
        encoding="utf-8",
    )
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        result = load_path([path])
    assert escaped == []
    [source] = result.documents
    assert "Release notes here" in source.text
    assert len(source.warnings) == 1
    assert "XML" in source.warnings[0] and "\n" not in source.warnings[0]
    assert capfd.readouterr().err == ""


def test_pypdf_complaint_is_part_of_the_skip_reason_not_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "garbage.pdf"
    path.write_bytes(b"%PDF-1.4\nthis is not really a pdf\x8f\x90")
    caplog.set_level(logging.DEBUG)
    [skipped] = load_path([path]).skipped
    assert skipped.reason.startswith("unreadable PDF: ")
    assert "EOF marker not found" in skipped.reason
    assert [r for r in caplog.records if r.name.startswith("pypdf")] == []


def test_skipped_files_are_not_logged_as_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "empty.md").write_bytes(b"")
    (tmp_path / "broken.json").write_text('{"a": ')
    caplog.set_level(logging.DEBUG)
    result = load_path([tmp_path, tmp_path / "missing.md"])
    assert len(result.skipped) == 3
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
