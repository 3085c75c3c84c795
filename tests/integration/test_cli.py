"""The `kotae` command as a user runs it: a subprocess with settings in the environment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.openai_server import FakeOpenAIServer, Reply


def kotae(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kotae", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture
def env(tmp_path: Path, tiny_model_dir: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("KOTAE_", "OPENAI_", "SLACK_"))}
    return {**clean, "KOTAE_EMBEDDING_MODEL": str(tiny_model_dir),
            "KOTAE_EMBEDDING_DEVICE": "cpu", "KOTAE_INDEX_DIR": str(tmp_path / "index"),
            "KOTAE_CHUNK_SIZE": "200", "KOTAE_CHUNK_OVERLAP": "20", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def test_index_then_search_all_modes_as_json(env: dict[str, str], sample_docs: Path) -> None:
    indexed = kotae("index", str(sample_docs), "--json", env=env)
    assert indexed.returncode == 0, indexed.stderr
    summary = json.loads(indexed.stdout)
    assert len(summary["added"]) == 11 and summary["switched"] and not summary["failed"]

    found = kotae("search", "経費精算の締め切り", "--mode", "all", "-k", "3", "--json", env=env)
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    assert result["mode"] == "all" and len(result["hits"]) == 3
    for hit in result["hits"]:
        assert hit["text"] and hit["metadata"]["source"].startswith(str(sample_docs.resolve()))
        assert hit["colbert"] is not None
        expected = (0.4 * hit["dense"] + 0.2 * hit["sparse"] + 0.4 * hit["colbert"]) / 1.0
        assert hit["score"] == pytest.approx(expected, abs=1e-6)

    again = kotae("index", str(sample_docs), "--json", env=env)
    assert json.loads(again.stdout)["chunks_embedded"] == 0


def test_index_without_weights_fails_fast_naming_the_setting(env: dict[str, str]) -> None:
    env = {**env, "KOTAE_EMBEDDING_MODEL": "BAAI/bge-m3",
           "HF_HOME": str(Path(env["KOTAE_INDEX_DIR"]).parent / "hf")}
    result = kotae("index", env=env, timeout=60)
    assert result.returncode == 1
    assert "KOTAE_EMBEDDING_MODEL" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_search_before_indexing_says_how_to_build(env: dict[str, str]) -> None:
    result = kotae("search", "anything", env=env)
    assert result.returncode == 1 and "kotae index" in result.stderr
    assert "Traceback" not in result.stderr


def test_ask_answers_with_citations_from_the_fake_server(
        env: dict[str, str], fake_openai: FakeOpenAIServer, sample_docs: Path) -> None:
    assert kotae("index", str(sample_docs), env=env).returncode == 0
    env = {**env, "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake_openai.base_url,
           "KOTAE_RETRIEVAL_MODE": "sparse"}
    fake_openai.push(Reply(text="毎月25日です [1]。"), Reply(text="Every Monday at 10:00 JST [2]."))

    japanese = kotae("ask", "経費精算の締め切りはいつですか？", "--json", env=env)
    assert japanese.returncode == 0, japanese.stderr
    answer = json.loads(japanese.stdout)
    assert answer["answer"] == "毎月25日です [1]。" and answer["kind"] == "answer"
    # [1] is the source the model was shown as number 1
    prompt = fake_openai.requests[0].messages[0]["content"]
    first_source = re.search(r'<source id="1" [^>]*path="([^"]*)"', prompt)
    assert first_source and answer["citations"][0]["source"] == first_source.group(1)
    assert "経費精算" in answer["citations"][0]["snippet"]

    english = kotae("ask", "When is the on-call handoff?", env=env)
    assert english.returncode == 0, english.stderr
    # the final text replaces the streamed one: the model's [2] is shown as [1]
    assert "Every Monday at 10:00 JST [1]." in english.stdout and "JST [2]" not in english.stdout
    second = re.search(r'<source id="2" [^>]*path="([^"]*)"',
                       fake_openai.requests[1].messages[0]["content"])
    assert second and "[1] " in english.stdout and second.group(1) in english.stdout
    assert fake_openai.requests[0].api_key == "sk-test"
    assert "sk-test" not in english.stdout + english.stderr


def test_ask_without_key_gives_retrieval_only(env: dict[str, str], sample_docs: Path) -> None:
    assert kotae("index", str(sample_docs), env=env).returncode == 0
    result = kotae("ask", "When is the on-call handoff?", env=env)
    assert result.returncode == 0
    assert "OPENAI_API_KEY" in result.stderr and "Related sources" in result.stdout
    assert "[1]" in result.stdout and "[3]" in result.stdout
