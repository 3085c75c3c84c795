"""A build killed with SIGKILL keeps what it embedded: the served version is untouched, and the
next run re-embeds at most the batch that was in flight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from retrieval.embeddings import BGEM3Embeddings
from retrieval.indexer import Indexer
from retrieval.settings import Settings
from retrieval.stores.local import LiveIndex
from tests.integration.test_indexer_cache import mixed_corpus

WINDOW, BUDGET, BATCH = 64, 300, 4

# A real indexer in its own process; it says how many chunks it has encoded after each batch
# (progress is reported once a batch is committed to the cache) and dawdles so it can be
# killed between batches or inside one.
BUILD = textwrap.dedent("""
    import json, sys, time
    from retrieval.embeddings import BGEM3Embeddings
    from retrieval.indexer import Indexer
    from retrieval.settings import Settings

    config = json.loads(sys.argv[1])
    settings = Settings(_env_file=None, **config["settings"])
    embeddings = BGEM3Embeddings(**config["embeddings"])

    def progress(p):
        if p.phase == "embedding":
            print(json.dumps({"done": p.chunks_done, "reused": p.chunks_reused,
                              "total": p.chunks_total}), flush=True)
            time.sleep(0.05)

    Indexer(settings, embeddings, window_chunks=config["window"],
            token_budget=config["budget"]).run(config["paths"], progress=progress)
    print("finished", flush=True)
""")


def test_kill_9_mid_build_then_resume(settings: Settings, tiny_model_dir: Path,
                                      tmp_path: Path) -> None:
    docs = mixed_corpus(tmp_path / "docs", files=4)
    embeddings = BGEM3Embeddings(model_name_or_path=str(tiny_model_dir), device="cpu",
                                 batch_size=BATCH, passage_max_tokens=512, query_max_tokens=64)
    first = Indexer(settings, embeddings, window_chunks=WINDOW, token_budget=BUDGET).run([docs])
    served = LiveIndex(settings.index_dir, device="cpu").version
    mixed_corpus(docs / "more", files=60, seed=11)  # the build to kill: many new files

    config = {
        "settings": {"embedding_model": str(tiny_model_dir), "embedding_device": "cpu",
                     "index_dir": str(settings.index_dir), "chunk_size": settings.chunk_size,
                     "chunk_overlap": settings.chunk_overlap, "faiss_device": "cpu",
                     "query_max_tokens": 64},
        "embeddings": {"model_name_or_path": str(tiny_model_dir), "device": "cpu",
                       "batch_size": BATCH, "passage_max_tokens": 512, "query_max_tokens": 64},
        "window": WINDOW, "budget": BUDGET, "paths": [str(docs)],
    }
    process = subprocess.Popen(
        [sys.executable, "-c", BUILD, json.dumps(config)], stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert process.stdout is not None
    committed = 0
    try:
        for line in process.stdout:
            assert line != "finished\n", "the build ended before it could be killed"
            report = json.loads(line)
            committed = report["done"] - report["reused"]
            # the total is an estimate until the last file is read: kill past 80% of the files
            if report["done"] >= 0.8 * report["total"] > 0 and report["total"] > 60:
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL and committed > 30

    assert LiveIndex(settings.index_dir, device="cpu").version == served  # untouched
    resumed = Indexer(settings, embeddings, window_chunks=WINDOW, token_budget=BUDGET).run([docs])
    assert resumed.switched
    # every batch committed before the kill is reused: only the one in flight was lost
    assert resumed.chunks_reused >= committed
    assert resumed.chunks_encoded == resumed.chunks_embedded - resumed.chunks_reused
    assert resumed.chunks_total == first.chunks_total + resumed.chunks_embedded
