"""Markdown titles and text: anchors and inline markup are not title words, a book chapter that
starts at `##` is titled by that heading, and HTML comments are not indexed."""

from __future__ import annotations

from pathlib import Path

from retrieval.loaders import SourceFile, load_path


def load_one(tmp_path: Path, name: str, text: str) -> SourceFile:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    result = load_path([path])
    assert result.skipped == [], result.skipped
    [source] = result.documents
    return source


def test_title_drops_heading_anchor(tmp_path: Path) -> None:
    source = load_one(
        tmp_path, "reactivity.md", "# リアクティビティーの基礎 {#reactivity-fundamentals}\n\n本文\n"
    )
    assert source.title == "リアクティビティーの基礎"


def test_title_drops_inline_markdown(tmp_path: Path) -> None:
    text = (
        "# The `reactive()` **API** [guide](https://vuejs.org) ![logo](logo.png) "
        "<Badge text=\"3.3+\" /> \\*\\* {#reactive .api}\n\nbody\n"
    )
    assert load_one(tmp_path, "api.md", text).title == "The reactive() API guide"


def test_title_keeps_braces_inside_code(tmp_path: Path) -> None:
    text = "# The `{#id}` syntax\n\nbody\n"
    assert load_one(tmp_path, "syntax.md", text).title == "The {#id} syntax"


def test_file_starting_at_h2_is_titled_by_its_first_h2(tmp_path: Path) -> None:
    text = "Intro text.\n\n## Method Syntax\n\nbody\n\n### Defining Methods\n\n## Other\n\nmore\n"
    source = load_one(tmp_path, "ch05-03-method-syntax.md", text)
    assert source.title == "Method Syntax"


def test_first_heading_of_the_highest_level_wins_even_when_later(tmp_path: Path) -> None:
    text = "### Aside\n\nx\n\n## Chapter\n\ny\n\n## Second\n\nz\n"
    assert load_one(tmp_path, "c.md", text).title == "Chapter"


def test_front_matter_title_still_wins(tmp_path: Path) -> None:
    text = "---\ntitle: Methods\n---\n\n## Method Syntax\n\nbody\n"
    assert load_one(tmp_path, "ch05.md", text).title == "Methods"


def test_html_comments_are_not_indexed(tmp_path: Path) -> None:
    text = (
        "# 翻訳\n\n"
        "<!--\n## Original heading\n\nThe original English paragraph.\n-->\n\n"
        "翻訳された段落です。 <!-- inline English original --> 続き。\n\n"
        "- 項目 <!-- list note -->\n"
    )
    source = load_one(tmp_path, "book.md", text)
    for english in ("Original heading", "original English", "inline English", "list note"):
        assert english not in source.text
    assert "翻訳された段落です。" in source.text and "続き。" in source.text
    assert "- 項目" in source.text
    assert "<!--" not in source.text


def test_html_comments_in_code_stay(tmp_path: Path) -> None:
    text = (
        "# HTML\n\nWrite `<!-- note -->` for a comment.\n\n"
        "```html\n<!-- in a fence -->\n<p>x</p>\n```\n\n    <!-- indented code -->\n"
    )
    source = load_one(tmp_path, "html.md", text)
    assert "`<!-- note -->`" in source.text
    assert "<!-- in a fence -->" in source.text
    assert "<!-- indented code -->" in source.text


def test_title_keeps_a_trailing_asterisk_inside_code(tmp_path: Path) -> None:
    assert load_one(tmp_path, "glob.md", "# Wildcard `*`\n\nbody\n").title == "Wildcard *"
