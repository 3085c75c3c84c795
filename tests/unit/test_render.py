"""Markdown -> Slack mrkdwn conversion and Block Kit rendering of answers (bot/render.py).

Slack is not reachable from unit tests, so the block checks below encode the Block Kit limits
Slack enforces (section text <= 3,000 characters, <= 50 blocks, button text <= 75, ...): a payload
that fails them here would be rejected by `chat.postMessage` with `invalid_blocks`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

import pytest

from bot.render import (
    FEEDBACK_DOWN_ACTION_ID,
    FEEDBACK_UP_ACTION_ID,
    SlackMessage,
    escape_mrkdwn,
    markdown_to_mrkdwn,
    render_answer,
    render_apology,
    render_progress,
)
from retrieval.types import Answer, Citation

ZWSP = "\u200b"
FENCE_LINE = re.compile(r"(?:> ?)*```")
# A link we generate: <http(s)/mailto URL> or <URL|label>; nothing else may use < or >.
SLACK_LINK = re.compile(r"<(?:https?://|mailto:)[^<>|\s]+(?:\|[^<>]*)?>")


# --- helpers ---


def slack_len(text: str) -> int:
    """Slack counts UTF-16 code units; an emoji outside the BMP is two."""
    return len(text.encode("utf-16-le")) // 2


def display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def citation(number: int, **overrides: Any) -> Citation:
    fields: dict[str, Any] = {
        "number": number,
        "title": f"Doc {number}",
        "heading_path": [],
        "source": f"docs/doc{number}.md",
        "chunk_id": f"c{number}",
        "score": 0.5,
        "snippet": f"snippet {number}",
    }
    fields.update(overrides)
    return Citation(**fields)


def answer(text: str = "An answer [1].", **overrides: Any) -> Answer:
    fields: dict[str, Any] = {
        "answer_id": "ans-42",
        "question": "q?",
        "text": text,
        "citations": [citation(1)],
    }
    fields.update(overrides)
    return Answer(**fields)


def text_objects(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for block in blocks:
        if "text" in block:
            found.append(block["text"])
        for element in block.get("elements", []):
            found.append(element["text"] if element.get("type") == "button" else element)
    return found


def all_texts(messages: list[SlackMessage]) -> list[str]:
    return [m.text for m in messages] + [
        obj["text"] for m in messages for obj in text_objects(m.blocks)
    ]


def check_text_object(obj: dict[str, Any], *, kinds: tuple[str, ...], limit: int) -> None:
    assert obj["type"] in kinds
    assert set(obj) <= {"type", "text", "emoji", "verbatim"}
    assert isinstance(obj["text"], str)
    assert 1 <= slack_len(obj["text"]) <= limit
    if obj["type"] == "plain_text":
        assert "verbatim" not in obj
    else:
        assert "emoji" not in obj
        # Text from the model or documents must not be auto-parsed into mentions.
        assert obj.get("verbatim") is True


def check_block(block: dict[str, Any]) -> None:
    kind = block["type"]
    assert len(block.get("block_id", "")) <= 255
    if kind == "section":
        assert set(block) <= {"type", "text", "block_id"}
        check_text_object(block["text"], kinds=("mrkdwn",), limit=3000)
    elif kind == "divider":
        assert set(block) <= {"type", "block_id"}
    elif kind == "context":
        assert 1 <= len(block["elements"]) <= 10
        for element in block["elements"]:
            check_text_object(element, kinds=("mrkdwn", "plain_text"), limit=3000)
    elif kind == "actions":
        assert 1 <= len(block["elements"]) <= 25
        for button in block["elements"]:
            assert button["type"] == "button"
            assert 1 <= len(button["action_id"]) <= 255
            assert len(button["value"]) <= 2000
            assert len(button.get("accessibility_label", "")) <= 75
            check_text_object(button["text"], kinds=("plain_text",), limit=75)
    else:
        pytest.fail(f"unexpected block type {kind!r}")


def check_message(message: SlackMessage) -> None:
    assert isinstance(message, SlackMessage)
    json.dumps({"text": message.text, "blocks": message.blocks})  # must be JSON-serialisable
    assert 1 <= slack_len(message.text) <= 40_000
    assert 1 <= len(message.blocks) <= 50
    block_ids = [b["block_id"] for b in message.blocks if "block_id" in b]
    assert len(block_ids) == len(set(block_ids))
    for block in message.blocks:
        check_block(block)


def check_safe(text: str) -> None:
    """Every < > left in mrkdwn is a link we generated: no <!channel>, <@U..>, <#C..>."""
    without_links = SLACK_LINK.sub("", text)
    without_quotes = re.sub(r"^(?:> ?)+", "", without_links, flags=re.MULTILINE)
    assert "<" not in without_quotes and ">" not in without_quotes, text


def sections(messages: list[SlackMessage]) -> list[str]:
    return [b["text"]["text"] for m in messages for b in m.blocks if b["type"] == "section"]


def body_sections(messages: list[SlackMessage]) -> list[str]:
    """Section texts before the sources divider."""
    out: list[str] = []
    for message in messages:
        for block in message.blocks:
            if block["type"] == "divider":
                return out
            if block["type"] == "section":
                out.append(block["text"]["text"])
    return out


def fence_lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if FENCE_LINE.fullmatch(line)]


def actions_blocks(messages: list[SlackMessage]) -> list[tuple[int, dict[str, Any]]]:
    return [(i, b) for i, m in enumerate(messages) for b in m.blocks if b["type"] == "actions"]


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


# --- render_answer: shape, sources, feedback ---


def test_short_answer_is_one_valid_message() -> None:
    messages = render_answer(answer("経費は**月末**までに申請します[1]。"))
    assert len(messages) == 1
    check_message(messages[0])
    kinds = [b["type"] for b in messages[0].blocks]
    assert kinds == ["section", "divider", "section", "actions"]
    assert messages[0].blocks[0]["text"]["text"] == f"経費は{ZWSP}*月末*{ZWSP}までに申請します[1]。"
    assert messages[0].text == messages[0].blocks[0]["text"]["text"]


def test_citation_line_with_url() -> None:
    cite = citation(
        1,
        title="経費精算規程",
        heading_path=["出張", "宿泊費"],
        url="https://wiki.example.com/expense?id=1&v=2",
    )
    messages = render_answer(answer(citations=[cite]))
    assert messages[0].blocks[2]["text"]["text"] == (
        "*Sources*\n"
        "[1] <https://wiki.example.com/expense?id=1&amp;v=2|経費精算規程> › 出張 › 宿泊費"
    )


def test_citation_line_without_url_shows_short_path() -> None:
    cite = citation(
        2, title="Expense policy", heading_path=["Travel"], source="/srv/docs/handbook/expense.md"
    )
    messages = render_answer(answer(citations=[cite]))
    source_text = messages[0].blocks[2]["text"]["text"]
    assert source_text == "*Sources*\n[2] *Expense policy* › Travel · `handbook/expense.md`"


def test_citation_with_unsafe_url_scheme_is_not_linked() -> None:
    cite = citation(3, title="T", url="javascript:alert(1)", source="a/b.md")
    text = render_answer(answer(citations=[cite]))[0].blocks[2]["text"]["text"]
    assert "javascript" not in text
    assert text.endswith("[3] *T* · `a/b.md`")


def test_citation_titles_and_headings_are_escaped() -> None:
    cite = citation(
        1, title="R&D <!channel>", heading_path=["<@U1> & co"], url="https://e.com/x|<y>"
    )
    messages = render_answer(answer(citations=[cite]))
    text = messages[0].blocks[2]["text"]["text"]
    check_safe(text)
    assert "R&amp;D &lt;!channel&gt;" in text and "&lt;@U1&gt; &amp; co" in text
    assert "<https://e.com/x%7C%3Cy%3E|" in text  # a | in the URL would end it early


def test_overlong_titles_are_shortened() -> None:
    cite = citation(1, title="長" * 5000, heading_path=["節" * 5000], url="https://e.com")
    [message] = render_answer(answer(citations=[cite]))
    check_message(message)
    line = message.blocks[2]["text"]["text"].split("\n")[1]
    assert len(line) < 600 and line.count("…") == 2


def test_sources_heading_related_when_nothing_was_cited() -> None:
    cited = render_answer(answer(citations=[citation(1), citation(2, cited=False)]))
    related = render_answer(answer(citations=[citation(1, cited=False)]))
    assert cited[0].blocks[2]["text"]["text"].startswith("*Sources*\n")
    assert related[0].blocks[2]["text"]["text"].startswith("*Related sources*\n")


def test_citations_listed_in_number_order() -> None:
    messages = render_answer(answer(citations=[citation(3), citation(1), citation(2)]))
    numbers = re.findall(r"^\[(\d+)\]", messages[0].blocks[2]["text"]["text"], re.MULTILINE)
    assert numbers == ["1", "2", "3"]


def test_feedback_buttons_carry_answer_id() -> None:
    messages = render_answer(answer(answer_id="01HZX-abc"))
    [(_, actions)] = actions_blocks(messages)
    up, down = actions["elements"]
    assert (up["action_id"], down["action_id"]) == (FEEDBACK_UP_ACTION_ID, FEEDBACK_DOWN_ACTION_ID)
    assert (up["action_id"], down["action_id"]) == ("kotae_feedback_up", "kotae_feedback_down")
    assert up["value"] == down["value"] == "01HZX-abc"
    assert up["text"]["text"].startswith("👍") and down["text"]["text"].startswith("👎")


def test_no_feedback_when_disabled() -> None:
    assert actions_blocks(render_answer(answer(), feedback=False)) == []


@pytest.mark.parametrize("kind", ["no_match", "no_index"])
def test_no_match_and_no_index_are_just_text(kind: str) -> None:
    messages = render_answer(answer("見つかりませんでした。", kind=kind, citations=[citation(1)]))
    assert len(messages) == 1
    check_message(messages[0])
    assert [b["type"] for b in messages[0].blocks] == ["section"]
    assert messages[0].blocks[0]["text"]["text"] == "見つかりませんでした。"


def test_notice_shown_first_as_warning_context() -> None:
    notice = "The language model was unavailable; here are the most relevant passages."
    messages = render_answer(answer("", kind="retrieval_only", notice=notice))
    check_message(messages[0])
    first = messages[0].blocks[0]
    assert first["type"] == "context"
    assert first["elements"][0]["text"] == f":warning: {notice}"


def test_retrieval_only_quotes_snippets_under_sources() -> None:
    cites = [
        citation(1, cited=False, snippet="出張の宿泊費は\n1泊 12,000円 まで <!here>"),
        citation(2, cited=False, snippet="x" * 2000),
    ]
    messages = render_answer(
        answer("Here are the most relevant passages.", kind="retrieval_only", citations=cites)
    )
    check_message(messages[0])
    lines = sections(messages)[-1].split("\n")
    assert lines[0] == "*Related sources*"
    assert lines[1].startswith("[1] ")
    assert lines[2] == "> 出張の宿泊費は 1泊 12,000円 まで &lt;!here&gt;"
    assert lines[3].startswith("[2] ")
    assert lines[4].startswith("> xxx") and lines[4].endswith("…") and len(lines[4]) < 400
    assert len(actions_blocks(messages)) == 1


def test_answer_snippets_not_shown_for_model_answers() -> None:
    messages = render_answer(answer(citations=[citation(1, snippet="secret snippet")]))
    assert "secret snippet" not in "\n".join(all_texts(messages))


def test_injection_is_escaped_everywhere_in_the_payload() -> None:
    evil = "<!channel> <@U999> <!here>"
    messages = render_answer(
        answer(
            f"# {evil}\n\n{evil} **{evil}** [{evil}](https://e.com)\n\n```\n{evil}\n```",
            kind="retrieval_only",
            notice=evil,
            citations=[citation(1, title=evil, heading_path=[evil], snippet=evil)],
        )
    )
    for text in all_texts(messages):
        check_safe(text)
        assert "<!" not in text and "<@" not in text


# --- render_answer: long answers ---


def _long_markdown() -> tuple[str, list[str]]:
    """~60,000+ characters of mixed Japanese/English with code fences; returns (md, code lines)."""
    parts: list[str] = []
    code_lines: list[str] = []
    for i in range(40):
        parts.append(f"## 第{i}章 Section {i}")
        parts.append(
            f"経費精算の手順{i}について説明します。**重要**な点は領収書です[{i % 5 + 1}]。"
            f"See [the handbook](https://wiki.example.com/h/{i}?a=1&b=2) for details. " * 6
        )
        if i % 4 == 0:
            lines = [f"    value_{i}_{n} = compute(a < b & c)  # 行 {n}" for n in range(90)]
            code_lines += lines
            parts.append("```python\n" + "\n".join(lines) + "\n```")
        if i % 7 == 0:
            parts.append("- 項目 A\n- 項目 B\n  - 詳細 <!here> & more")
    # One paragraph longer than a section, with no line breaks: must split at sentence ends.
    parts.append("これは長い段落の文です。" * 400)
    return "\n\n".join(parts), code_lines


def test_long_answer_respects_slack_limits() -> None:
    markdown, _ = _long_markdown()
    assert len(markdown) >= 60_000
    messages = render_answer(answer(markdown, citations=[citation(n) for n in range(1, 6)]))
    assert len(body_sections(messages)) >= 20
    for message in messages:
        check_message(message)
        assert sum(b["type"] == "section" for b in message.blocks) <= 50
    for text in sections(messages):
        assert slack_len(text) <= 3000
        check_safe(text)


def test_long_answer_fences_balanced_and_nothing_lost() -> None:
    markdown, code_lines = _long_markdown()
    messages = render_answer(answer(markdown))
    body = body_sections(messages)
    for text in body:
        fences = fence_lines(text)
        assert len(fences) % 2 == 0, text[:200]
    # Every code line survives, once, in order.
    rendered_code = [
        line for text in body for line in text.split("\n") if line.startswith("    value_")
    ]
    assert rendered_code == [ln.replace("&", "&amp;").replace("<", "&lt;") for ln in code_lines]

    # Joining the pieces gives back the whole conversion, apart from fence reopens and whitespace.
    def squash(text: str) -> str:
        return re.sub(r"\s+|```", "", text)

    assert squash("".join(body)) == squash(markdown_to_mrkdwn(markdown))


def test_long_answer_splits_before_code_rather_than_inside_it() -> None:
    markdown, _ = _long_markdown()
    body = body_sections(render_answer(answer(markdown)))
    for text in body:
        # A heading is never left alone at the end of a piece, away from its section.
        assert not re.search(r"\*第\d+章 Section \d+\*$", text)
    # Each 90-line fence is longer than a piece, so it is split once, not twice: two pieces
    # per fence, the first starting at the fence itself rather than mid-way.
    starts = [text for text in body if text.startswith("```\n    value_") and "_0 =" in text[:40]]
    assert len(starts) == 10


def test_long_answer_feedback_only_in_last_message_after_sources() -> None:
    markdown, _ = _long_markdown()
    messages = render_answer(answer(markdown, citations=[citation(1)]))
    [(index, _)] = actions_blocks(messages)
    assert index == len(messages) - 1
    assert messages[-1].blocks[-1]["type"] == "actions"
    assert sum(b["type"] == "divider" for m in messages for b in m.blocks) == 1
    assert all(len(m.blocks) <= 50 for m in messages)


def test_long_sentence_paragraph_splits_at_sentence_ends() -> None:
    messages = render_answer(answer("これは長い段落の文です。" * 700, citations=[]))
    body = body_sections(messages)
    assert len(body) >= 3
    assert all(text.endswith("。") for text in body)
    assert "".join(body) == "これは長い段落の文です。" * 700


def test_english_sentences_split_after_period() -> None:
    text = "This sentence is here. " * 400
    body = body_sections(render_answer(answer(text, citations=[])))
    assert len(body) >= 2
    assert all(part.endswith(".") for part in body)
    assert " ".join(body) == text.strip()


def test_single_huge_code_fence_is_closed_and_reopened() -> None:
    code = "\n".join(f"line {n}: a < b" for n in range(1200))
    body = body_sections(render_answer(answer(f"前置き\n\n```js\n{code}\n```\n\n後書き")))
    # The short intro is cut off before the fence rather than splitting the fence once more.
    assert body[0] == "前置き"
    code_pieces = body[1:]
    assert len(code_pieces) >= 3
    for i, text in enumerate(code_pieces):
        assert slack_len(text) <= 3000
        lines = text.split("\n")
        assert len(fence_lines(text)) == 2, f"piece {i} is not one closed fence"
        assert lines[0] == "```"
        if i < len(code_pieces) - 1:
            assert lines[-1] == "```"
    assert code_pieces[-1].endswith("```\n\n後書き")
    rendered = [ln for text in body for ln in text.split("\n") if ln.startswith("line ")]
    assert rendered == [ln.replace("<", "&lt;") for ln in code.split("\n")]


def test_fence_inside_blockquote_reopens_with_quote_prefix() -> None:
    code = "\n".join(f"> row {n}" for n in range(600))
    body = body_sections(render_answer(answer(f"> ```\n{code}\n> ```")))
    assert len(body) >= 2
    for text in body:
        assert all(line.startswith(">") for line in text.split("\n"))
        assert len(fence_lines(text)) == 2
        assert text.split("\n")[0] == "> ```" and text.split("\n")[-1] == "> ```"


def test_links_are_never_split() -> None:
    links = " ".join(f"[リンク{i}](https://example.com/{i}?a=1&b=2)" for i in range(400))
    body = body_sections(render_answer(answer(links)))
    assert len(body) >= 2
    count = 0
    for text in body:
        check_safe(text)  # a half link would leave a stray < or >
        count += len(SLACK_LINK.findall(text))
    assert count == 400


def test_links_are_never_split_even_without_spaces() -> None:
    links = "".join(f"[リンク{i}](https://example.com/{i})" for i in range(400))
    body = body_sections(render_answer(answer(links)))
    assert len(body) >= 2
    assert sum(len(SLACK_LINK.findall(text)) for text in body) == 400
    for text in body:
        check_safe(text)


def test_surrogate_pairs_are_counted_and_never_split() -> None:
    body = body_sections(render_answer(answer("😀" * 4000)))
    assert len(body) >= 3
    for text in body:
        assert slack_len(text) <= 3000
        text.encode("utf-8")  # a lone surrogate would raise here
    assert "".join(body) == "😀" * 4000


def test_combining_marks_stay_with_their_base() -> None:
    # が as two code points; the odd-length prefix makes a naive cut land on a combining mark.
    decomposed = "あ" + "か\u3099" * 2500
    body = body_sections(render_answer(answer(decomposed)))
    assert len(body) >= 2
    assert not any(unicodedata.combining(text[0]) for text in body)
    assert "".join(body) == decomposed


def test_many_blocks_continue_in_further_messages() -> None:
    paragraphs = "\n\n".join(f"段落{i}。" + "あ" * 2900 for i in range(120))
    messages = render_answer(answer(paragraphs, notice="note"))
    assert len(messages) >= 3
    for message in messages:
        check_message(message)
        assert sum(b["type"] == "section" for b in message.blocks) <= 45
    assert messages[0].blocks[0]["type"] == "context"
    assert sum(b["type"] == "context" for m in messages for b in m.blocks) == 1
    assert len(body_sections(messages)) == 120
    assert all(slack_len(m.text) <= 40_000 for m in messages)
    assert messages[0].text.endswith("…")


def test_sources_move_to_next_message_when_the_last_one_is_full() -> None:
    paragraphs = "\n\n".join(f"段落{i}。" + "あ" * 2900 for i in range(45))
    cites = [citation(n, cited=False, snippet="本文 " * 100) for n in range(1, 31)]
    messages = render_answer(
        answer(paragraphs, kind="retrieval_only", notice="note", citations=cites)
    )
    assert len(messages) == 2
    for message in messages:
        check_message(message)
    assert [b["type"] for b in messages[0].blocks] == ["context"] + ["section"] * 45
    assert messages[1].blocks[0]["type"] == "divider"
    assert messages[1].blocks[-1]["type"] == "actions"
    # The fallback text of the sources-only message names the sources, not an empty string.
    assert messages[1].text.startswith("*Related sources*")


def test_many_sources_are_split_into_sections() -> None:
    cites = [
        citation(n, cited=False, title=f"文書{n}", snippet="本文 " * 200, heading_path=["章", "節"])
        for n in range(1, 61)
    ]
    messages = render_answer(answer("x", kind="retrieval_only", citations=cites))
    for message in messages:
        check_message(message)
    source_text = "\n".join(sections(messages)[1:])
    assert len(re.findall(r"^\[\d+\] ", source_text, re.MULTILINE)) == 60
    assert source_text.count("*Related sources*") == 1


# --- render_progress / render_apology ---


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


def test_apology_text_and_blocks_say_the_same() -> None:
    apology = render_apology("the index is <!channel> missing & stale")
    for block in apology.blocks:
        check_block(block)
    expected = (":warning: Sorry — I couldn't answer that: "
                "the index is &lt;!channel&gt; missing &amp; stale")
    assert apology.blocks[0]["text"]["text"] == apology.text == expected
    assert apology.trailer == []


def test_apology_truncates_long_reasons() -> None:
    apology = render_apology("x" * 10_000)
    [block] = apology.blocks
    check_block(block)
    assert block["text"]["text"].endswith("…") and apology.text == block["text"]["text"]


# --- what a streamed reply needs (bot/replies.py streams raw text, then stops with these) ---


def test_trailer_is_everything_but_the_answer_text() -> None:
    [message] = render_answer(answer("Monday [1].", notice="The model was slow."))
    trailer = json.dumps(message.trailer, ensure_ascii=False)
    assert "Sources" in trailer and FEEDBACK_UP_ACTION_ID in trailer
    assert "The model was slow." in trailer and "Monday [1]." not in trailer
    assert all(block in message.blocks for block in message.trailer)


def test_escaping_pieces_equals_escaping_the_whole() -> None:
    text = "Tell <!channel> & <@U123>: a<b && c>d"
    pieces = [text[i:i + 3] for i in range(0, len(text), 3)]
    assert "".join(map(escape_mrkdwn, pieces)) == escape_mrkdwn(text)
    assert "<" not in escape_mrkdwn(text) and ">" not in escape_mrkdwn(text)
