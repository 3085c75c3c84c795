"""Block Kit rendering of answers and apologies (bot/render/messages.py, sources.py, blocks.py)."""

from __future__ import annotations

import json
import re

import pytest
from slack_sdk.errors import SlackObjectFormationError

from bot.render import (
    FEEDBACK_DOWN_ACTION_ID,
    FEEDBACK_UP_ACTION_ID,
    render_answer,
    render_apology,
)
from bot.render.blocks import section
from tests.unit.render_checks import (
    ZWSP,
    actions_blocks,
    all_texts,
    answer,
    check_block,
    check_message,
    check_safe,
    citation,
    sections,
)

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


# --- render_apology ---


def test_a_long_apology_is_cut_before_escaping_so_no_entity_is_split() -> None:
    import re

    from bot.render import SECTION_TEXT_LIMIT

    for reason in ("&" * 5000, "a<b " * 2000, "x" * 2990 + "&&&&&&"):
        text = render_apology(reason).text
        assert len(text) <= SECTION_TEXT_LIMIT and text.endswith("…")
        body = text.split(": ", 1)[1].removesuffix("…")
        assert re.fullmatch(r"(?:&amp;|&lt;|&gt;|[^&<>])*", body), body[-20:]


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


def test_a_block_over_slacks_limits_is_refused_before_it_is_sent() -> None:
    # The backstop slack_sdk's block models give us: a limit the splitter failed to enforce
    # fails here, naming the field, rather than at Slack as a bare `invalid_blocks`.
    with pytest.raises(SlackObjectFormationError, match="3000"):
        section("x" * 3001)
