"""Several batches encoded at once on CPU, one torch thread each (`retrieval.indexing.encoding`):
every chunk still gets the dense and sparse vectors it gets alone, bit for bit, and the
caller's thread keeps its torch thread count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from retrieval.embedding_text import embedding_text_for
from retrieval.embeddings import BGEM3Embeddings
from retrieval.indexer import Indexer
from retrieval.settings import Settings
from retrieval.stores.local import LiveIndex
from tests.integration.test_indexer_cache import mixed_corpus


@pytest.mark.parametrize("workers", [1, 3])
def test_every_chunk_gets_the_bits_it_gets_alone_with_any_number_of_workers(
        settings: Settings, embeddings: BGEM3Embeddings, tmp_path: Path, workers: int) -> None:
    docs = mixed_corpus(tmp_path / "docs", files=10)
    threads = torch.get_num_threads()
    summary = Indexer(settings, embeddings, window_chunks=32, token_budget=900,
                      workers=workers).run([docs])
    assert torch.get_num_threads() == threads  # this thread's setting is left alone
    assert summary.chunks_encoded > 20
    store = LiveIndex(settings.index_dir, device="cpu").store()
    for source in store.files():
        rows = store.chunks_of(source)
        dense = store.vectors([row.row_id for row in rows])
        sparse = store.sparse_of([row.row_id for row in rows])
        for row, vector in zip(rows, dense, strict=True):
            text = embedding_text_for(row.metadata["title"], row.metadata["heading_path"],
                                      row.text)
            alone = embeddings.encode_passages([text])
            assert np.array_equal(vector, alone.dense[0]), row.chunk_id
            assert sparse[row.row_id] == alone.sparse[0], row.chunk_id
