"""find_sources: every input that is not read is reported, and the symlink rule (follow links
whose target is inside the given folders, cite them under the link's path, report the others)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from retrieval.loaders import find_sources, iter_source_paths, load_path

OUTSIDE = "outside the folders being indexed; index that folder itself to include it"


def write(path: Path, text: str = "# T\n\ntext\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def reasons(skipped: list) -> dict[str, str]:
    return {s.path: s.reason for s in skipped}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """docs/ with links of every kind, and a folder outside it."""
    docs = tmp_path / "docs"
    write(docs / "a.md")
    write(docs / "sub" / "b.md")
    write(docs / ".private" / "c.md")
    write(tmp_path / "outside" / "secret.md")
    (docs / "alias").symlink_to(docs / "sub")  # folder link inside: same files
    (docs / "c-link.md").symlink_to(docs / ".private" / "c.md")  # file link inside
    (docs / "shared").symlink_to(tmp_path / "outside")  # folder link outside
    (docs / "ext.md").symlink_to(tmp_path / "outside" / "secret.md")  # file link outside
    (docs / "loop").symlink_to(docs)  # a loop back to the root
    (docs / "gone.md").symlink_to(tmp_path / "nowhere.md")  # broken
    (docs / "photo.png").symlink_to(tmp_path / "outside" / "secret.md")  # not a document
    return tmp_path


def test_missing_and_unsupported_inputs_are_reported(tmp_path: Path) -> None:
    pyproject = write(tmp_path / "pyproject.toml", "[project]\n")
    files, skipped = find_sources([tmp_path / "missing", pyproject])
    assert files == []
    found = reasons(skipped)
    assert found[(tmp_path / "missing").as_posix()] == "not found"
    assert found[pyproject.as_posix()].startswith(
        "unsupported file type '.toml' (supported: .csv, .htm, .html, .json, .markdown, .md, "
    )


def test_links_inside_the_roots_are_followed_and_outside_ones_reported(tree: Path) -> None:
    docs = tree / "docs"
    files, skipped = find_sources([docs])

    assert files == [docs / "a.md", docs / "c-link.md", docs / "sub" / "b.md"]
    assert reasons(skipped) == {
        (docs / "ext.md").as_posix(): f"symlink to {(tree / 'outside' / 'secret.md').as_posix()}, "
        + OUTSIDE,
        (docs / "shared").as_posix(): f"symlink to {(tree / 'outside').as_posix()}, " + OUTSIDE,
        (docs / "gone.md").as_posix(): "broken symlink (No such file or directory)",
    }


def test_giving_the_outside_folder_too_includes_it_once(tree: Path) -> None:
    docs, outside = tree / "docs", tree / "outside"
    files, skipped = find_sources([docs, outside])
    assert outside / "secret.md" in files
    assert docs / "ext.md" not in files and docs / "shared" / "secret.md" not in files
    assert all(OUTSIDE not in s.reason for s in skipped)


def test_a_file_is_cited_under_the_links_path(tree: Path) -> None:
    result = load_path([tree / "docs"])
    sources = [d.source for d in result.documents]
    assert (tree / "docs" / "c-link.md").as_posix() in sources
    assert (tree / "docs" / ".private" / "c.md").as_posix() not in sources
    assert len(sources) == 3
    assert {Path(s.path).name for s in result.skipped} == {"ext.md", "shared", "gone.md"}


def test_a_root_that_is_a_symlink_is_read_under_its_own_name(tmp_path: Path) -> None:
    write(tmp_path / "real" / "doc.md")
    (tmp_path / "docs").symlink_to(tmp_path / "real")
    files, skipped = find_sources([tmp_path / "docs"])
    assert files == [tmp_path / "docs" / "doc.md"]
    assert skipped == []


def test_symlink_loops_between_folders_end(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "a" / "one.md")
    write(docs / "b" / "two.md")
    (docs / "a" / "to-b").symlink_to(docs / "b")
    (docs / "b" / "to-a").symlink_to(docs / "a")
    files, skipped = find_sources([docs])
    assert files == [docs / "a" / "one.md", docs / "b" / "two.md"]
    assert skipped == []


def test_iter_source_paths_still_returns_the_files(tree: Path) -> None:
    docs = tree / "docs"
    assert iter_source_paths([docs]) == find_sources([docs])[0]


def test_relative_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "docs" / "a.md")
    monkeypatch.chdir(tmp_path)
    files, _skipped = find_sources("docs")
    assert files == [tmp_path / "docs" / "a.md"]
    assert all(os.path.isabs(f) for f in files)
