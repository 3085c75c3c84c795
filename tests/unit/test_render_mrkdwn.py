"""Markdown -> Slack mrkdwn (bot/render/mrkdwn.py, inline.py, table.py, text.py)."""

from __future__ import annotations

import unicodedata

import pytest

from bot.render import escape_mrkdwn, markdown_to_mrkdwn
from tests.unit.render_checks import ZWSP, check_safe


def display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


# --- markdown_to_mrkdwn: inline ---


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**bold** and __bold__", "*bold* and *bold*"),
        ("*italic* and _italic_", "_italic_ and _italic_"),
        ("~~gone~~ now", "~gone~ now"),
        ("***both***", "_*both*_"),
        ("a **b _c_ d** e", "a *b _c_ d* e"),
    ],
)
def test_emphasis_becomes_slack_markers(markdown: str, expected: str) -> None:
    assert markdown_to_mrkdwn(markdown) == expected


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("これは**重要**です", f"これは{ZWSP}*重要*{ZWSP}です"),
        ("*強調*する", f"_強調_{ZWSP}する"),
        ("必ず~~削除~~しない", f"必ず{ZWSP}~削除~{ZWSP}しない"),
        # CJK punctuation is not a boundary Slack trusts either.
        ("「**重要**」", f"「{ZWSP}*重要*{ZWSP}」"),
        ("**重要**：申請は月末まで", f"*重要*{ZWSP}：申請は月末まで"),
        ("API**キー**を", f"API{ZWSP}*キー*{ZWSP}を"),
    ],
)
def test_japanese_emphasis_gets_zero_width_spaces(markdown: str, expected: str) -> None:
    assert markdown_to_mrkdwn(markdown) == expected


@pytest.mark.parametrize(
    "markdown",
    ["**bold** text", "text **bold**", "(**bold**)", "**bold**, then", "- **bold**: x"],
)
def test_no_zero_width_space_next_to_spaces_or_ascii_punctuation(markdown: str) -> None:
    assert ZWSP not in markdown_to_mrkdwn(markdown)


@pytest.mark.parametrize(
    "text",
    [
        "call snake_case_names and __dunder__ here",
        "compute 2*3*4 today",
        "2*3 + 4*5 = 26",
        "glob *.py and *.md",
        "file_name_v2_final.txt",
    ],
)
def test_identifiers_and_arithmetic_are_not_emphasis(text: str) -> None:
    assert markdown_to_mrkdwn(text) == text.replace("__dunder__", "*dunder*")


def test_dunder_with_spaces_is_bold_but_snake_case_is_not() -> None:
    # The previous test relies on this: CommonMark reads " __x__ " as strong emphasis.
    assert markdown_to_mrkdwn("snake_case __x__") == "snake_case *x*"


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("[Handbook](https://example.com/h)", "<https://example.com/h|Handbook>"),
        ("[site](http://example.com)", "<http://example.com|site>"),
        ("[mail us](mailto:help@example.com)", "<mailto:help@example.com|mail us>"),
        ("[x](https://e.com/?a=1&b=2)", "<https://e.com/?a=1&amp;b=2|x>"),
        ("<https://example.com/a>", "<https://example.com/a>"),
        ("[bad](javascript:alert(1))", "[bad](javascript:alert(1))"),
        ("[ftp](ftp://example.com/f)", "ftp"),
        ("[relative](./docs/a.md)", "relative"),
        ("[**bold** label](https://e.com)", "<https://e.com|bold label>"),
        ("[a & <b>](https://e.com)", "<https://e.com|a &amp; &lt;b&gt;>"),
    ],
)
def test_links(markdown: str, expected: str) -> None:
    assert markdown_to_mrkdwn(markdown) == expected


def test_bare_urls_are_linked_because_blocks_are_verbatim() -> None:
    out = markdown_to_mrkdwn("See https://e.com/a?b=1&c=2. また https://e.com/x)を参照")
    assert out == "See <https://e.com/a?b=1&amp;c=2>. また <https://e.com/x>)を参照"


def test_link_text_with_line_break_stays_on_one_line() -> None:
    out = markdown_to_mrkdwn("[two\nlines](https://e.com)")
    assert out == "<https://e.com|two lines>"


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("経費は精算できます[1]。", "経費は精算できます[1]。"),
        ("Both apply [2][3].", "Both apply [2][3]."),
        ("See [1, 2] and [4,5].", "See [1, 2] and [4,5]."),
        ("At https://e.com/p[1] too", "At <https://e.com/p>[1] too"),
        ("Linked [1](https://e.com/a) marker", "Linked [1] marker"),
        ("**重要**[1]", "*重要*[1]"),
    ],
)
def test_citation_markers_stay_intact(markdown: str, expected: str) -> None:
    assert markdown_to_mrkdwn(markdown) == expected


@pytest.mark.parametrize(
    "markdown",
    [
        "<!channel> please read",
        "hey <!here|here> and <!everyone>",
        "ping <@U123ABC> and <#C024BE7LR|general> and <!subteam^S123>",
        "entity-encoded &lt;!channel&gt; in the source",
        "[<!here>](https://e.com)",
        "[click](https://e.com/<!here>)",
        "`<!channel>` in code",
        "```\n<!channel>\n<@U1>\n```",
        "# <!here> heading",
        "| a | b |\n|---|---|\n| <!channel> | <@U1> |",
        "> <!channel> quoted",
        "- <!here> item",
        "![<!here>](https://e.com/i.png)",
    ],
)
def test_mentions_cannot_be_injected(markdown: str) -> None:
    out = markdown_to_mrkdwn(markdown)
    check_safe(out)
    assert "<!" not in out and "<@" not in out and "<#" not in out


def test_reserved_characters_are_escaped() -> None:
    assert markdown_to_mrkdwn("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d"


def test_inline_code_is_verbatim() -> None:
    out = markdown_to_mrkdwn("Run `a **b** _c_ [x](https://y) snake_case` now")
    assert out == "Run `a **b** _c_ [x](https://y) snake_case` now"


def test_inline_code_escapes_only_reserved_characters() -> None:
    assert markdown_to_mrkdwn("`if a < b && c:`") == "`if a &lt; b &amp;&amp; c:`"


# --- markdown_to_mrkdwn: blocks ---


def test_fenced_code_is_verbatim_and_drops_language_tag() -> None:
    code = "def f(snake_case):\n    return **kwargs, 2*3*4  # [link](https://x) ~~no~~\n"
    out = markdown_to_mrkdwn(f"Intro\n\n```python\n{code}```\n\nAfter")
    assert out == f"Intro\n\n```\n{code.rstrip()}\n```\n\nAfter"


def test_fenced_code_escapes_reserved_characters() -> None:
    out = markdown_to_mrkdwn("```html\n<b>a & b</b>\n```")
    assert out == "```\n&lt;b&gt;a &amp; b&lt;/b&gt;\n```"


@pytest.mark.parametrize("level", range(1, 7))
def test_headings_become_bold_lines(level: int) -> None:
    out = markdown_to_mrkdwn(f"{'#' * level} 経費 **精算**\n\n本文")
    assert out == "*経費 精算*\n\n本文"


def test_lists() -> None:
    # A new bullet character starts a new list in CommonMark, hence the blank lines.
    markdown = "- one\n* two\n+ three\n\n1. first\n2. second\n\ntext\n\n5. five\n6. six"
    assert markdown_to_mrkdwn(markdown) == (
        "• one\n\n• two\n\n• three\n\n1. first\n2. second\n\ntext\n\n5. five\n6. six"
    )


def test_nested_lists_keep_indentation() -> None:
    out = markdown_to_mrkdwn("- 親\n  - 子\n    - 孫\n- 次\n  1. a\n  2. b")
    assert out.split("\n") == ["• 親", "    • 子", "        • 孫", "• 次", "    1. a", "    2. b"]


def test_code_fence_inside_list_stays_a_whole_line() -> None:
    out = markdown_to_mrkdwn("- step:\n\n  ```sh\n  make test\n  ```")
    assert out.split("\n") == ["• step:", "```", "make test", "```"]


def test_blockquote_kept() -> None:
    assert markdown_to_mrkdwn("> 引用です\n> **続き**") == "> 引用です\n> *続き*"


def test_table_becomes_aligned_code_block_with_japanese_widths() -> None:
    markdown = (
        "| 項目 | 金額 | 備考 |\n"
        "|:--|--:|:-:|\n"
        "| 交通費 | 1,000 | R&D |\n"
        "| Hotel | 12,000円 | 要**領収書** |\n"
    )
    out = markdown_to_mrkdwn(markdown)
    lines = out.split("\n")
    assert lines[0] == "```" and lines[-1] == "```"
    rows = [line.replace("&amp;", "&") for line in lines[1:-1]]
    assert len(rows) == 4
    # All rows have the same display width and their pipes sit in the same columns.
    pipe_columns = [
        [display_width(row[:i]) for i, ch in enumerate(row) if ch == "|"] for row in rows
    ]
    assert all(cols == pipe_columns[0] for cols in pipe_columns), rows
    assert len(pipe_columns[0]) == 4
    assert rows[1].startswith("|---")
    # Cells are plain text in a code block: no mrkdwn markers; alignment honoured.
    assert "要領収書" in rows[3] and "*" not in out
    assert rows[2].startswith("| 交通費 |    1,000 |")  # right-aligned to 12,000円
    assert "R&amp;D" in out  # escaped after padding


def test_horizontal_rule_and_paragraphs() -> None:
    out = markdown_to_mrkdwn("上\n\n---\n\n下")
    first, rule, last = out.split("\n\n")
    assert (first, last) == ("上", "下")
    assert rule and set(rule) <= set("─—-―")


def test_escaping_pieces_equals_escaping_the_whole() -> None:
    text = "Tell <!channel> & <@U123>: a<b && c>d"
    pieces = [text[i:i + 3] for i in range(0, len(text), 3)]
    assert "".join(map(escape_mrkdwn, pieces)) == escape_mrkdwn(text)
    assert "<" not in escape_mrkdwn(text) and ">" not in escape_mrkdwn(text)
