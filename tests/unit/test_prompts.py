"""Loading and checking prompt files (retrieval/prompts.py), bundled or from KOTAE_PROMPTS_DIR."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.prompts import ChatPromptTemplate

from retrieval.errors import KotaeError, PromptInvalid
from retrieval.prompts import BUNDLED_PROMPTS, load_prompts


def test_the_bundled_prompts_load() -> None:
    prompts = load_prompts()
    assert "{sources}" in prompts.answer and "{history}" in prompts.condense
    assert set(prompts.retrieval_only_header) >= {"en", "ja"}


def test_a_folder_replaces_only_the_files_it_has(tmp_path: Path) -> None:
    (tmp_path / "answer.md").write_text("Answer in {language} from:\n{sources}\n",
                                        encoding="utf-8")
    prompts = load_prompts(tmp_path)
    assert prompts.answer == "Answer in {language} from:\n{sources}\n"
    assert prompts.condense == (BUNDLED_PROMPTS / "condense.md").read_text(encoding="utf-8")


def test_doubled_braces_are_literal_braces(tmp_path: Path) -> None:
    (tmp_path / "answer.md").write_text('Reply as JSON like {{"answer": "..."}}.\n{sources}',
                                        encoding="utf-8")
    prompts = load_prompts(tmp_path)
    template = ChatPromptTemplate.from_messages([("system", prompts.answer)])
    [system] = template.format_messages(sources="<source id=\"1\">x</source>")
    assert system.content == 'Reply as JSON like {"answer": "..."}.\n<source id="1">x</source>'


@pytest.mark.parametrize(("name", "text", "says"), [
    ("answer.md", "Answer in {language} from the documents.", "no {sources} placeholder"),
    ("answer.md", "Sources:\n{sources}\nTeam: {team}", "unknown placeholder {team}"),
    ("answer.md", "Sources: {sources.text}", "unknown placeholder {sources.text}"),
    ("answer.md", "Positional {} here\n{sources}", "unknown placeholder {}"),
    ("answer.md", 'Reply as JSON like {"answer": 1}\n{sources}', "unknown placeholder"),
    ("answer.md", "Use { and nothing else\n{sources}", "not a valid template"),
    ("answer.md", "{sources}\nA stray } here", "not a valid template"),
    ("condense.md", "Conversation:\n{history}\nRewrite it.", "no {question} placeholder"),
    ("condense.md", "Rewrite: {question}", "no {history} placeholder"),
])
def test_a_broken_custom_prompt_is_refused_with_its_name(tmp_path: Path, name: str, text: str,
                                                         says: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(PromptInvalid) as caught:
        load_prompts(tmp_path)
    assert isinstance(caught.value, KotaeError)  # the CLI and the bot turn it into a message
    reason = str(caught.value)
    assert f"KOTAE_PROMPTS_DIR ({tmp_path}): {name}" in reason
    assert says in reason
    assert "{{" in reason  # tells how to write a literal brace


def test_a_prompts_dir_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PromptInvalid, match=r"KOTAE_PROMPTS_DIR .* is not a folder"):
        load_prompts(tmp_path / "typo")
