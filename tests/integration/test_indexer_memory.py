"""Indexing memory does not grow with the number of distinct batch shapes (a bigger corpus).

Each run is a fresh process: oneDNN reads its cache capacity once, at the first forward pass,
and the shared `embeddings` fixture has run many already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from retrieval.embeddings import BGEM3Embeddings
from retrieval.indexer import Indexer
from retrieval.settings import Settings

model, docs, index_dir = sys.argv[1:4]

def anon():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024

settings = Settings(_env_file=None, embedding_model=model, embedding_device="cpu",
                    index_dir=index_dir, faiss_device="cpu")
embeddings = BGEM3Embeddings.from_settings(settings)
indexer = Indexer(settings, embeddings, window_chunks=32, workers=1)  # before any forward pass
indexer.run([Path(docs) / "warm"])
before = anon()
summary = indexer.run([Path(docs) / "warm", Path(docs) / "many"])
print("RESULT " + json.dumps({"growth": anon() - before, "chunks": summary.chunks_total}))
"""

WORDS = ["expense", "report", "deadline", "approval", "travel", "receipt", "policy", "server"]


def _corpus(folder: Path) -> Path:
    """Files of 1 to 240 words: nearly every chunk of another token count, a new batch shape."""
    (folder / "warm").mkdir(parents=True)
    (folder / "warm" / "note.md").write_text("# Warm\n\nexpense report deadline.\n", "utf-8")
    many = folder / "many"
    many.mkdir()
    for length in range(1, 241):
        body = " ".join(WORDS[(length + i) % len(WORDS)] for i in range(length))
        (many / f"note-{length}.md").write_text(f"# Note {length}\n\n{body}.\n", "utf-8")
    return folder


def _growth(tiny_model_dir: Path, tmp_path: Path, docs: Path, env: dict[str, str]) -> int:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tiny_model_dir), str(docs), str(tmp_path / "index")],
        env={**env, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}, capture_output=True,
        text=True, timeout=600, check=False)
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert results, done.stderr[-3000:]
    result = json.loads(results[0].removeprefix("RESULT "))
    assert result["chunks"] > 240  # long notes make two chunks or more
    return int(result["growth"])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_distinct_batch_shapes_do_not_grow_memory(tiny_model_dir: Path, tmp_path: Path) -> None:
    docs = _corpus(tmp_path / "docs")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOTAE_", "ONEDNN_"))}
    env = {k: v for k, v in env.items() if not k.startswith("MALLOC_")}
    # as before the fix: oneDNN's default cache, malloc's threshold slid to its 32 MiB ceiling
    unbounded = _growth(tiny_model_dir, tmp_path / "unbounded", docs,
                        {**env, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024",
                         "MALLOC_MMAP_THRESHOLD_": str(32 << 20)})
    bounded = _growth(tiny_model_dir, tmp_path / "bounded", docs, env)
    # the measurement sees the growth (seen: 12-23 MiB unbounded, 7-8 MiB bounded: the tiny
    # model's tokenizer, trained per session, changes how many shapes the corpus makes)
    assert unbounded > 8 << 20, unbounded
    assert bounded < 0.8 * unbounded, (bounded, unbounded)
