"""`kotae status` reports the served index's size on disk and in memory (local backend)."""

from __future__ import annotations

from pathlib import Path

from retrieval.embeddings import BGEM3Embeddings
from retrieval.settings import Settings


def test_status_reports_the_index_disk_and_memory_size(
        settings: Settings, embeddings: BGEM3Embeddings, sample_docs: Path) -> None:
    from retrieval.service import KotaeService

    service = KotaeService(settings, embeddings)
    assert service.status()["index_size"] == "none"
    service.reindex([sample_docs])
    shown = service.status()["index_size"]
    root = Path(settings.index_dir)
    version = service.index.version
    on_disk = sum(p.stat().st_size for p in (root / "versions" / str(version)).iterdir()) + sum(
        p.stat().st_size for p in (root / "segments").rglob("*") if p.is_file())
    mapped = sum(p.stat().st_size for p in (root / "segments").rglob("*")
                 if p.name in {"dense.faiss", "sparse.npz"})
    assert shown == (f"{on_disk / 1e6:,.1f} MB on disk, {mapped / 1e6:,.1f} MB in memory "
                     "(mapped files), 1 segment(s)")
