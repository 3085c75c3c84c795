"""Indexer with the embedding cache: equal-length batches give each chunk the bits it gets
alone, an edited paragraph re-embeds only its chunks, a rebuild reuses everything, a bad or
foreign cache is set aside, another model's entries are never used, unused entries are pruned."""

from __future__ import annotations

import logging
import random
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from retrieval.embedding_text import embedding_text_for
from retrieval.embeddings import BGEM3Embeddings
from retrieval.indexer import Indexer, IndexProgress
from retrieval.indexing.cache import cache_path, cache_size
from retrieval.settings import Settings
from retrieval.stores.local import LiveIndex

WORDS = ["expense", "report", "deadline", "approval", "travel", "receipt", "policy", "manager",
         "budget", "invoice", "server", "deploy", "rollback", "incident", "pager", "backup",
         "restore", "network", "latency", "経費", "申請", "締め切り", "承認", "出張", "領収書"]


def paragraph(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def long_document(seed: int = 7, sections: int = 40) -> str:
    """Many sections of two or three paragraphs: about 100 chunks at chunk_size 200."""
    rng = random.Random(seed)
    parts = ["# Handbook"]
    for number in range(sections):
        parts.append(f"## Section {number}")
        parts.extend(paragraph(rng, rng.randint(40, 90)) for _ in range(rng.randint(2, 3)))
    return "\n\n".join(parts) + "\n"


def mixed_corpus(folder: Path, files: int = 12, seed: int = 3) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(files):
        body = "\n\n".join(paragraph(rng, rng.randint(3, 120)) for _ in range(rng.randint(1, 6)))
        (folder / f"note-{number}.md").write_text(f"# Note {number}\n\n{body}\n", "utf-8")
    return folder


@pytest.fixture
def indexer(settings: Settings, embeddings: BGEM3Embeddings) -> Indexer:
    return Indexer(settings, embeddings, window_chunks=16, token_budget=600)


def test_every_chunk_gets_the_bits_it_gets_alone(indexer: Indexer, settings: Settings,
                                                 embeddings: BGEM3Embeddings,
                                                 tmp_path: Path) -> None:
    docs = mixed_corpus(tmp_path / "docs", files=10)
    summary = indexer.run([docs])
    assert summary.chunks_encoded > 0 and summary.chunks_total > 20
    store = LiveIndex(settings.index_dir, device="cpu").store()
    checked = 0
    for source in store.files():
        rows = store.chunks_of(source)
        dense = store.vectors([row.row_id for row in rows])
        sparse = store.sparse_of([row.row_id for row in rows])
        for row, vector in zip(rows, dense, strict=True):
            meta = row.metadata
            text = embedding_text_for(meta["title"], meta["heading_path"], row.text)
            alone = embeddings.encode_passages([text])
            assert np.array_equal(vector, alone.dense[0]), row.chunk_id
            assert sparse[row.row_id] == alone.sparse[0]
            checked += 1
    assert checked == summary.chunks_total


def test_one_edited_paragraph_re_embeds_only_its_chunks(indexer: Indexer,
                                                        tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    document = docs / "handbook.md"
    text = long_document()
    document.write_text(text, "utf-8")
    first = indexer.run([docs])
    assert first.chunks_total >= 80
    paragraphs = text.split("\n\n")
    target = paragraphs.index("## Section 20") + 1
    paragraphs[target] = paragraphs[target].replace(".", " with one more clause.", 1)
    document.write_text("\n\n".join(paragraphs), "utf-8")
    edited = indexer.run([docs])
    assert edited.updated == [document.as_posix()]
    assert 1 <= edited.chunks_encoded <= 3
    assert edited.chunks_reused == edited.chunks_embedded - edited.chunks_encoded


def test_full_rebuild_reuses_every_embedding(indexer: Indexer, sample_docs: Path) -> None:
    first = indexer.run([sample_docs])
    rebuilt = indexer.run([sample_docs], full=True)
    assert rebuilt.switched and rebuilt.chunks_embedded == first.chunks_embedded
    assert rebuilt.chunks_encoded == 0 and rebuilt.chunks_reused == first.chunks_embedded


def test_progress_says_what_was_reused(indexer: Indexer, sample_docs: Path) -> None:
    indexer.run([sample_docs])
    seen: list[IndexProgress] = []
    indexer.run([sample_docs], full=True, progress=seen.append)
    embedding = [p for p in seen if p.phase == "embedding"]
    assert embedding and embedding[-1].chunks_reused == embedding[-1].chunks_done > 0
    assert embedding[-1].chunks_done == embedding[-1].chunks_total


@pytest.mark.parametrize("content", [b"this is not a database at all" * 100, "sqlite"])
def test_a_corrupt_or_foreign_cache_is_set_aside_and_rebuilt(
        indexer: Indexer, settings: Settings, sample_docs: Path, content: bytes | str,
        caplog: pytest.LogCaptureFixture) -> None:
    first = indexer.run([sample_docs])
    path = cache_path(settings.index_dir)
    path.unlink()
    Path(f"{path}-wal").unlink(missing_ok=True)
    if content == "sqlite":  # another program's database under our name
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE entries (x)")
        db.commit()
        db.close()
    else:
        path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        rebuilt = indexer.run([sample_docs], full=True)
    assert "not usable" in caplog.text and "set aside" in caplog.text
    assert rebuilt.switched and rebuilt.chunks_encoded == first.chunks_embedded
    assert path.with_name(path.name + ".bad").exists()
    again = indexer.run([sample_docs], full=True)
    assert again.chunks_encoded == 0


def test_a_damaged_entry_is_not_trusted(indexer: Indexer, settings: Settings,
                                        sample_docs: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    indexer.run([sample_docs])
    db = sqlite3.connect(cache_path(settings.index_dir))
    dense = db.execute("SELECT dense FROM entries LIMIT 1").fetchone()[0]
    flipped = bytes([dense[0] ^ 0x40]) + dense[1:]
    db.execute("UPDATE entries SET dense = ? WHERE dense = ?", (flipped, dense))
    db.commit()
    db.close()
    with caplog.at_level(logging.WARNING):
        rebuilt = indexer.run([sample_docs], full=True)
    assert "failed their checksum" in caplog.text
    assert rebuilt.chunks_encoded == 1


def test_another_model_under_the_same_name_never_shares_entries(
        settings: Settings, sample_docs: Path, tmp_path: Path) -> None:
    from retrieval.tiny_model import build_tiny_bge_m3

    model_dir = tmp_path / "model"
    build_tiny_bge_m3(model_dir)
    config = dict(model_name_or_path=str(model_dir), device="cpu", batch_size=8,
                  passage_max_tokens=512, query_max_tokens=64)
    settings = settings.model_copy(update={"embedding_model": str(model_dir)})
    first = Indexer(settings, BGEM3Embeddings(**config)).run([sample_docs])
    shutil.rmtree(model_dir)
    build_tiny_bge_m3(model_dir, seed=1)  # "retrained": same name, other weights
    rebuilt = Indexer(settings, BGEM3Embeddings(**config)).run([sample_docs], full=True)
    assert rebuilt.chunks_reused == 0 and rebuilt.chunks_encoded == first.chunks_embedded


def test_entries_no_kept_version_uses_are_pruned(indexer: Indexer, settings: Settings,
                                                 tmp_path: Path) -> None:
    docs = mixed_corpus(tmp_path / "docs", files=6)
    first = indexer.run([docs])
    size = cache_size(settings.index_dir)
    assert size is not None and size.chunks == first.chunks_total and size.bytes > 0
    removed = sorted(docs.iterdir())[0]
    removed.unlink()
    second = indexer.run([docs])  # the previous version still uses the removed file's chunks
    assert cache_size(settings.index_dir).chunks == first.chunks_total  # type: ignore[union-attr]
    (docs / "other.md").write_text("# Other\n\nA new page about backups.\n", "utf-8")
    third = indexer.run([docs])  # now neither kept version has the removed file
    after = cache_size(settings.index_dir)
    assert after is not None and after.chunks == third.chunks_total
    assert second.chunks_total < first.chunks_total


def test_status_shows_the_cache_size_and_the_summary_counts(
        settings: Settings, embeddings: BGEM3Embeddings, sample_docs: Path) -> None:
    from retrieval.service import KotaeService

    service = KotaeService(settings, embeddings)
    assert service.status()["embedding_cache"] == "none"
    summary = service.reindex([sample_docs])
    shown = service.status()["embedding_cache"]
    assert shown.endswith(f", {summary.chunks_total} chunks") and "KiB" in shown
    counts = summary.as_dict()
    assert counts["chunks_encoded"] == summary.chunks_embedded and counts["chunks_reused"] == 0


def test_a_full_disk_fails_the_build_with_a_clear_message(settings: Settings,
                                                          tmp_path: Path) -> None:
    from retrieval.indexing.cache import EmbeddingCache, EmbeddingCacheFull

    cache = EmbeddingCache(tmp_path / "cache.sqlite3")
    model = cache.model_id("model")
    cache._db.execute("PRAGMA max_page_count = 1")  # SQLite's own 'database or disk is full'
    dense = np.ones((200, 256), np.float32)
    with pytest.raises(EmbeddingCacheFull, match="is full: the build stopped"):
        cache.put_many(model, [bytes([i]) * 32 for i in range(200)], dense, [{1: 0.5}] * 200)
    cache._db.execute("PRAGMA max_page_count = 1073741823")
    assert cache.get_many(model, [bytes([0]) * 32]) == {}  # all or nothing
    cache.close()
