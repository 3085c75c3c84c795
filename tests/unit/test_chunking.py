"""Chunking: heading paths, token-sized pieces for Japanese and English, overlap, stable ids.

The bundled corpus and the facts it holds are listed in tests/sample_facts.py.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from retrieval.chunking import Chunk, chunk_source, embedding_text_for
from retrieval.loaders import SourceFile, load_path
from retrieval.settings import BUNDLED_SAMPLES
from tests.sample_facts import SAMPLE_FACTS

REPO_ROOT = Path(__file__).resolve().parents[2]
_TOKEN = re.compile(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]")


def simple_token_length(text: str) -> int:
    """One token per Latin word or number, one per any other visible character (CJK, marks)."""
    return len(_TOKEN.findall(text))


def source_of(
    text: str, kind: str = "markdown", name: str = "doc.md", **extra: object
) -> SourceFile:
    return SourceFile(
        source=f"/docs/{name}",
        title=str(extra.pop("title", "Doc")),
        content_hash="f" * 64,
        mtime=1.5,
        kind=kind,  # type: ignore[arg-type]
        text=text,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def corpus() -> dict[str, SourceFile]:
    result = load_path([BUNDLED_SAMPLES])
    assert result.skipped == []
    return {Path(d.source).name: d for d in result.documents}


@pytest.fixture(scope="module")
def unigram_token_length(corpus: dict[str, SourceFile]) -> Callable[[str], int]:
    """A real SentencePiece-style Unigram tokenizer, like bge-m3's, trained on the corpus.

    Unlike `simple_token_length` it is not additive: the word-start marker and merges across a
    cut make len(a + b) differ from len(a) + len(b), which the splitter's arithmetic ignores.
    """
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=600, special_tokens=["<unk>"], unk_token="<unk>")
    tokenizer.train_from_iterator([d.text for d in corpus.values()], trainer)

    def token_length(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    for name in ("expense-ja.md", "oncall-runbook.md"):  # it learned pieces longer than a char
        assert token_length(corpus[name].text) < len(corpus[name].text) * 0.9
    return token_length


def chunks_of(source: SourceFile, size: int = 400, overlap: int = 60) -> list[Chunk]:
    return chunk_source(
        source, token_length=simple_token_length, chunk_size=size, chunk_overlap=overlap
    )


# --------------------------------------------------------------------------- structure


def test_bundled_expense_deadline_has_its_heading_path(corpus: dict[str, SourceFile]) -> None:
    chunks = chunks_of(corpus["expense-ja.md"])
    deadline = [c for c in chunks if "毎月25日" in c.text]
    assert len(deadline) == 1
    assert deadline[0].heading_path == ["経費精算", "締め切り"]
    assert deadline[0].metadata["heading_path"] == ["経費精算", "締め切り"]
    assert not deadline[0].text.startswith("#")  # headings live in the path, not the text


def test_heading_paths_nest_and_reset() -> None:
    text = (
        "Preface before any heading.\n\n# Top\n\nintro\n\n## Second ##\n\nsecond body\n\n"
        "#### Deep\n\ndeep body\n\n## Third\n\nthird body\n\n# Next top\n\nlast body\n"
    )
    paths = {c.text: c.heading_path for c in chunks_of(source_of(text))}
    assert paths == {
        "Preface before any heading.": [],
        "intro": ["Top"],
        "second body": ["Top", "Second"],
        "deep body": ["Top", "Second", "Deep"],
        "third body": ["Top", "Third"],
        "last body": ["Next top"],
    }


def test_hash_lines_inside_code_blocks_are_not_headings() -> None:
    text = "# Setup\n\nRun:\n\n```bash\n# install first\npip install kotae\n```\n\nDone.\n"
    chunks = chunks_of(source_of(text))
    assert [c.heading_path for c in chunks] == [["Setup"]]
    assert "# install first" in chunks[0].text


def test_html_headings_become_the_heading_path(corpus: dict[str, SourceFile]) -> None:
    chunks = chunks_of(corpus["kotae-faq-ja.html"])
    privacy = next(c for c in chunks if "過去のメッセージは読みません" in c.text)
    assert privacy.heading_path == ["kotae よくある質問", "プライバシー"]
    assert all("console.log" not in c.text for c in chunks)


def test_rst_sections_become_the_heading_path(corpus: dict[str, SourceFile]) -> None:
    chunks = chunks_of(corpus["kotae-admin.rst"])
    reindex = next(c for c in chunks if "only the files that changed" in c.text)
    assert reindex.heading_path == ["kotae admin guide", "Reindexing"]


def test_paragraphs_inside_a_section_stay_apart() -> None:
    # MarkdownHeaderTextSplitter joins paragraphs with "  \n"; they must come back as paragraphs.
    text = "# T\n\nFirst paragraph.\n\nSecond paragraph.\n"
    assert chunks_of(source_of(text))[0].text == "First paragraph.\n\nSecond paragraph."


def test_tabs_and_full_width_spaces_are_not_lost() -> None:
    text = "# T\n\nname\tvalue and 全角\u3000スペース\n"
    assert chunks_of(source_of(text))[0].text == "name value and 全角 スペース"


def test_pdf_chunks_carry_their_page(corpus: dict[str, SourceFile]) -> None:
    chunks = chunks_of(corpus["vacation-policy.pdf"], size=40, overlap=0)
    pages = {c.metadata["page"] for c in chunks}
    assert pages == {1, 2}
    carry_over = next(c for c in chunks if "carry over" in c.text)
    assert carry_over.metadata["page"] == 2
    assert all(c.heading_path == [] for c in chunks)


def test_plain_text_is_not_split_on_hash_lines() -> None:
    chunks = chunks_of(source_of("# not a heading\nbody\n", kind="text", name="a.txt"))
    assert [(c.text, c.heading_path) for c in chunks] == [("# not a heading\nbody", [])]


# --------------------------------------------------------------------------- size


JAPANESE_PARAGRAPH = (
    "経費精算の締め切りは毎月25日です。"
    "締め切りを過ぎた申請は翌月分として扱われます。"
    "領収書の原本は経理部で7年間保管します。"
    "5万円以上の申請には部長の承認が必要です！"
    "出張の日当はいくらですか？"
    "出張の日当は1日3,000円です。"
) * 3


def test_japanese_without_spaces_is_split_at_sentence_ends() -> None:
    chunks = chunks_of(source_of(JAPANESE_PARAGRAPH, kind="text"), size=40, overlap=0)
    assert len(chunks) > 3
    for chunk in chunks:
        assert simple_token_length(chunk.text) <= 40
        assert chunk.text[-1] in "。！？", chunk.text  # the mark stays with its sentence
    assert "".join(c.text for c in chunks) == JAPANESE_PARAGRAPH


def test_japanese_sentence_longer_than_a_chunk_falls_back_to_commas_then_characters() -> None:
    sentence = "、".join(["在宅勤務の申請は前営業日の17時まで"] * 6) + "。"
    no_punctuation = "あ" * 50
    chunks = chunks_of(source_of(sentence + "\n" + no_punctuation, kind="text"), size=20, overlap=0)
    assert all(simple_token_length(c.text) <= 20 for c in chunks)
    assert any(c.text.endswith("、") for c in chunks)
    assert "".join(c.text for c in chunks) == (sentence + no_punctuation)


@pytest.mark.parametrize("size", [16, 32, 64, 128, 400])
def test_no_chunk_exceeds_chunk_size_simple_tokens(
    corpus: dict[str, SourceFile], size: int
) -> None:
    for source in corpus.values():
        chunks = chunks_of(source, size=size, overlap=size // 5)
        assert chunks
        over = [c.text for c in chunks if simple_token_length(c.text) > size]
        assert over == [], source.source


@pytest.mark.parametrize("size", [16, 24, 32, 48, 64, 128])
def test_no_chunk_exceeds_chunk_size_real_tokenizer(
    corpus: dict[str, SourceFile], unigram_token_length: Callable[[str], int], size: int
) -> None:
    for source in corpus.values():
        chunks = chunk_source(
            source, token_length=unigram_token_length, chunk_size=size, chunk_overlap=size // 5
        )
        assert chunks
        assert [c.text for c in chunks if unigram_token_length(c.text) > size] == []


def test_a_non_additive_token_length_is_still_respected() -> None:
    # A 。 inside a text costs two tokens, at its end one: pieces measured one by one look
    # cheaper than the chunk they are merged into, so the merge overshoots and must be re-cut.
    def token_length(text: str) -> int:
        return len(text) + text.count("。") - text.endswith("。")

    source = source_of(JAPANESE_PARAGRAPH, kind="text")
    chunks = chunk_source(source, token_length=token_length, chunk_size=30, chunk_overlap=0)
    assert all(token_length(c.text) <= 30 for c in chunks)
    assert "".join(c.text for c in chunks) == JAPANESE_PARAGRAPH


# --------------------------------------------------------------------------- overlap


ENGLISH_PARAGRAPH = " ".join(f"Sentence number {n} is here." for n in range(30))


def _sentences(text: str) -> list[str]:
    return re.findall(r"Sentence number \d+ is here\.", text)


def test_overlap_repeats_the_end_of_the_previous_chunk() -> None:
    chunks = chunks_of(source_of(ENGLISH_PARAGRAPH, kind="text"), size=30, overlap=12)
    assert len(chunks) > 3
    for previous, current in itertools.pairwise(chunks):
        shared = set(_sentences(previous.text)) & set(_sentences(current.text))
        assert shared, (previous.text, current.text)
        assert _sentences(current.text)[0] in shared  # the overlap is at the start
        assert simple_token_length(current.text) <= 30
    assert {s for c in chunks for s in _sentences(c.text)} == set(_sentences(ENGLISH_PARAGRAPH))


def test_without_overlap_nothing_repeats() -> None:
    chunks = chunks_of(source_of(ENGLISH_PARAGRAPH, kind="text"), size=30, overlap=0)
    sentences = [s for c in chunks for s in _sentences(c.text)]
    assert sentences == _sentences(ENGLISH_PARAGRAPH)


def test_invalid_sizes_are_refused() -> None:
    source = source_of("text", kind="text")
    with pytest.raises(ValueError, match="chunk_overlap"):
        chunks_of(source, size=10, overlap=10)
    with pytest.raises(ValueError, match="chunk_size"):
        chunks_of(source, size=0, overlap=0)


# --------------------------------------------------------------------------- ids and metadata


def test_chunk_metadata(corpus: dict[str, SourceFile]) -> None:
    source = corpus["onboarding-ja.md"]
    chunks = chunks_of(source, size=50, overlap=10)
    assert [c.metadata["chunk_number"] for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        meta = chunk.metadata
        assert meta["source"] == source.source
        assert meta["title"] == "オンボーディング"
        assert meta["kind"] == "markdown"
        assert meta["file_hash"] == source.content_hash
        assert meta["mtime"] == source.mtime
        assert meta["content_hash"] == hashlib.sha256(chunk.text.encode()).hexdigest()
        # what was embedded can be rebuilt from stored metadata (ColBERT re-encodes it)
        assert embedding_text_for(meta["title"], meta["heading_path"], chunk.text) == (
            chunk.embedding_text)
        assert "url" not in meta and "page" not in meta
        assert json.loads(json.dumps(meta)) == meta  # plain JSON, storable as is
    document = chunks[0].to_document()
    assert document.id == chunks[0].chunk_id and document.page_content == chunks[0].text


def test_chunk_ids_are_unique_per_file_and_differ_between_files(
    corpus: dict[str, SourceFile],
) -> None:
    ids = [c.chunk_id for source in corpus.values() for c in chunks_of(source, size=64, overlap=8)]
    assert len(ids) == len(set(ids))
    prefixes = {i.split(":")[0] for i in ids}
    assert len(prefixes) == len(corpus)


def test_chunk_ids_are_the_same_in_another_process() -> None:
    """Ids key the store across runs, so they must not depend on Python's per-process hash."""
    script = (
        "import json; from retrieval.chunking import chunk_source;"
        "from retrieval.loaders import load_path; from retrieval.settings import BUNDLED_SAMPLES;"
        "docs = load_path([BUNDLED_SAMPLES]).documents;"
        "print(json.dumps([c.chunk_id for d in docs for c in chunk_source(d,"
        " token_length=len, chunk_size=120, chunk_overlap=20)]))"
    )
    runs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        output = subprocess.run(
            [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, check=True,
            capture_output=True, text=True,
        ).stdout  # fmt: skip
        runs.append(json.loads(output))
    here = [
        c.chunk_id
        for d in load_path([BUNDLED_SAMPLES]).documents
        for c in chunk_source(d, token_length=len, chunk_size=120, chunk_overlap=20)
    ]
    assert runs[0] == runs[1] == here


def test_url_from_front_matter_reaches_the_chunks() -> None:
    source = source_of("# A\n\nbody\n", url="https://wiki.example.com/a")
    assert chunks_of(source)[0].metadata["url"] == "https://wiki.example.com/a"


def test_embedding_text_has_title_and_headings_once() -> None:
    text = "# 経費精算\n\n## 締め切り\n\n毎月25日です。\n"
    chunk = chunks_of(source_of(text, title="経費精算"))[0]
    assert chunk.text == "毎月25日です。"
    assert chunk.embedding_text == "経費精算 › 締め切り\n\n毎月25日です。"
    other = chunks_of(source_of("# Deadlines\n\nBy the 25th.\n", title="Expenses"))[0]
    assert other.embedding_text == "Expenses › Deadlines\n\nBy the 25th."


def test_no_empty_chunks() -> None:
    text = "# Only headings\n\n## Empty\n\n   \n\n## Also empty\n\n\u3000\n\n## Body\n\nreal text\n"
    chunks = chunks_of(source_of(text), size=16, overlap=4)
    assert [(c.text, c.heading_path) for c in chunks] == [("real text", ["Only headings", "Body"])]
    # A file of headings only is not empty: its headings are its text (test_chunking_headings).
    assert [c.text for c in chunks_of(source_of("# Just a title\n"))] == ["Just a title"]


# --------------------------------------------------------------------------- sample facts


def test_sample_facts_are_found_in_exactly_their_file(corpus: dict[str, SourceFile]) -> None:
    assert len(SAMPLE_FACTS) >= 10
    assert sum(f.language == "ja" for f in SAMPLE_FACTS) * 2 >= len(SAMPLE_FACTS)
    chunked = {name: chunks_of(source) for name, source in corpus.items()}
    for fact in SAMPLE_FACTS:
        holders = {
            name for name, chunks in chunked.items() if any(fact.answer in c.text for c in chunks)
        }
        assert holders == {fact.source}, fact
