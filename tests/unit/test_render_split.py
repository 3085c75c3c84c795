"""Long answers split under Slack's limits (bot/render/split.py, through render_answer)."""

from __future__ import annotations

import re
import unicodedata

from bot.render import markdown_to_mrkdwn, render_answer
from tests.unit.render_checks import (
    SLACK_LINK,
    actions_blocks,
    answer,
    body_sections,
    check_message,
    check_safe,
    citation,
    fence_lines,
    sections,
    slack_len,
)

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
