"""Heading paths are what a reader sees, and a file of headings only still yields a chunk."""

from __future__ import annotations

from pathlib import Path

from retrieval.chunking import chunk_source
from retrieval.loaders import SourceFile, load_path


def chunks_of(source: SourceFile) -> list:
    return chunk_source(source, token_length=len, chunk_size=400, chunk_overlap=0)


def markdown(text: str, title: str = "Doc") -> SourceFile:
    return SourceFile(
        source="/docs/doc.md", title=title, content_hash="f" * 64, mtime=1.0, kind="markdown",
        text=text,
    )  # fmt: skip


def test_heading_path_drops_anchors_and_inline_markdown() -> None:
    text = (
        "# リアクティビティーの基礎 {#reactivity-fundamentals}\n\n"
        "### `reactive()` \\*\\* {#reactive}\n\nリアクティブなオブジェクトを作ります。\n\n"
        "## [Links](https://example.com) and *emphasis* <Badge text=\"new\" /> ##\n\nbody\n"
    )
    paths = {c.text: c.heading_path for c in chunks_of(markdown(text))}
    assert paths == {
        "リアクティブなオブジェクトを作ります。": ["リアクティビティーの基礎", "reactive()"],
        "body": ["リアクティビティーの基礎", "Links and emphasis"],
    }


def test_embedding_text_uses_the_clean_path() -> None:
    text = "# Guide {#guide}\n\n## `ref()` {#ref}\n\nbody\n"
    [chunk] = chunks_of(markdown(text, title="Guide"))
    assert chunk.embedding_text == "Guide › ref()\n\nbody"


def test_heading_only_file_gives_one_chunk_with_its_heading(tmp_path: Path) -> None:
    path = tmp_path / "faq.md"
    path.write_text("# Vue 2 vs. Vue 3 FAQ\n", encoding="utf-8")
    [source] = load_path([path]).documents

    chunks = chunks_of(source)

    assert len(chunks) == 1
    assert "Vue 2 vs. Vue 3 FAQ" in chunks[0].text
    assert chunks[0].metadata["title"] == "Vue 2 vs. Vue 3 FAQ"


def test_headings_only_file_keeps_every_heading_once() -> None:
    text = "# Migration {#migration}\n\n## Breaking changes\n\n## `v-model` ##\n"
    [chunk] = chunks_of(markdown(text))
    assert chunk.text == "Migration\nBreaking changes\nv-model"
