"""The benchmark scripts still run against the code they measure (tiny sizes, nothing written).

Timings are never asserted here; these only catch a benchmark that broke when the product
changed under it (a renamed helper, a changed default), before someone needs its numbers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

CASES = {
    "gpu": (["bench.gpu", "--cpu-dry-run"], "dry run finished"),
    "retrieval": (["bench.retrieval", "--quick", "--only", "search,memory,reindex",
                   "--sizes", "500", "--search-queries", "10", "--reindex-rounds", "1",
                   "--corpus-copies", "1", "--no-write"], "unchanged / full"),
    "chain": (["bench.chain", "--runs", "2", "--no-write"], "time to first token"),
    "startup": (["bench.startup", "--runs", "1", "--no-write"], "kotae search"),
    "slack": (["bench.slack", "--mentions", "4", "--commands", "1", "--llm-delay", "0.1",
               "--no-write"], "slash command ack"),
    "access": (["bench.access", "--quick", "--no-write"], "filtered / unfiltered p50"),
    "scale": (["bench.scale", "--quick", "--no-before", "--no-write", "--cache", "{tmp}/scale"],
              "| 3,000 | segments + IVF |"),
    "indexing": (["bench.indexing", "--quick", "--only", "throughput,edit,kill,memory,refresh",
                  "--check", "5", "--no-write"], "bit-identical to the chunk encoded alone"),
    "replicas": (["bench.replicas", "--mentions", "3", "--llm-delay", "0.1", "--no-write"],
                 "questions answered more than once"),
    "milvus": (["bench.milvus", "--quick", "--no-write"], "same top-k as local"),
    "sparse_head": (["bench.sparse_head", "--quick", "--shapes", "48x30", "--no-write"],
                    "| 48 × 30 | 0 / 0 |"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_benchmark_runs(name: str, tmp_path: Path) -> None:
    args, expected = CASES[name]
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
           "HOME": str(tmp_path)}
    results_file = REPO_ROOT / "bench" / "RESULTS.md"
    before = results_file.read_bytes()
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert expected in result.stdout
    assert results_file.read_bytes() == before  # --no-write
