"""reStructuredText read by docutils: what docutils takes for a title or a literal block is what
becomes a `#` heading or a fence; Sphinx markup it does not know still reads as words."""

from __future__ import annotations

from pathlib import Path

from retrieval.loaders import SourceFile, load_path


def load_one(tmp_path: Path, text: str) -> SourceFile:
    path = tmp_path / "doc.rst"
    path.write_text(text, encoding="utf-8")
    result = load_path([path])
    assert result.skipped == [], result.skipped
    [source] = result.documents
    return source


def test_sphinx_role_in_a_title_reads_as_its_label(tmp_path: Path) -> None:
    source = load_one(tmp_path, "Using :ref:`the API <api>`\n==========================\n\nx\n")
    assert source.title == "Using the API"
    assert source.text.startswith("# Using the API\n")


def test_code_block_with_sphinx_options_is_still_fenced(tmp_path: Path) -> None:
    # `:linenos:` is Sphinx's option, unknown to docutils, which then rejects the directive.
    text = (
        "Setup\n=====\n\n.. code-block:: bash\n   :linenos:\n\n   # install first\n"
        "   pip install kotae\n\nDone.\n"
    )
    source = load_one(tmp_path, text)
    assert "```\n   :linenos:\n\n   # install first\n   pip install kotae\n```" in source.text
    assert [line for line in source.text.split("\n") if line.startswith("#")] == ["# Setup"]


def test_admonition_text_is_not_fenced(tmp_path: Path) -> None:
    text = "Guide\n=====\n\n.. note::\n\n   Read this first.\n\nBody.\n"
    assert "```" not in load_one(tmp_path, text).text


def test_a_transition_is_not_a_title(tmp_path: Path) -> None:
    text = "Guide\n=====\n\nFirst part.\n\n----------\n\nSecond part.\n"
    source = load_one(tmp_path, text)
    assert [line for line in source.text.split("\n") if line.startswith("#")] == ["# Guide"]

