"""KOTAE_EMBEDDING_MODEL=BAAI/bge-m3 downloads the checkpoint from a (fake) Hugging Face hub.

Each download runs kotae's real code path in a subprocess: huggingface_hub reads HF_ENDPOINT
when it is imported, and the cache must be a fresh HF_HOME per test. The fake hub serves the
tiny bge-m3 checkpoint over the hub's real wire protocol (tests/fakes/hf_hub.py), so these tests
see which files `retrieval.embeddings._download` asks for, not what it meant to ask for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrieval.embeddings import BGEM3Embeddings
from tests.fakes.hf_hub import FakeHuggingFaceHub

REPO_ID = "BAAI/bge-m3"
QUERY = "経費精算の締め切りはいつですか？ expense deadline"
ROOT = Path(__file__).resolve().parents[2]
# Files of the real repository that the download must not fetch.
_REPO_EXTRAS = {"README.md": b"---\nlicense: mit\n---\n# bge-m3\n",
                ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}

# Builds the embeddings the way the bot does (everything but the name and device from the
# environment) and prints the query's dense vector.
_EMBED = f"""
import json
from retrieval.embeddings import BGEM3Embeddings
model = BGEM3Embeddings(model_name_or_path="BAAI/bge-m3", device="cpu")
print(json.dumps(model.embed_query({QUERY!r})))
"""


@pytest.fixture
def hub() -> Iterator[FakeHuggingFaceHub]:
    with FakeHuggingFaceHub() as fake:
        yield fake


@pytest.fixture
def hub_env(tmp_path: Path, hub: FakeHuggingFaceHub) -> dict[str, str]:
    """The environment of a first start: the fake as the hub, an empty cache, online."""
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith(("KOTAE_", "HF_", "HUGGINGFACE_", "OPENAI_", "SLACK_"))}
    return {**clean, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf-home"),
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
            "KOTAE_EMBEDDING_MODEL": REPO_ID, "KOTAE_EMBEDDING_DEVICE": "cpu",
            "KOTAE_QUERY_MAX_TOKENS": "64", "KOTAE_INDEX_DIR": str(tmp_path / "index"),
            "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def bin_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny checkpoint with its weights as `pytorch_model.bin` instead of safetensors: the
    same tensors under the same names, pickled by torch as transformers' .bin files are."""
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("tiny-bge-m3-bin")
    for path in tiny_model_dir.iterdir():
        if path.is_file() and path.name != "model.safetensors":
            shutil.copy2(path, folder / path.name)
    torch.save(load_file(tiny_model_dir / "model.safetensors"), folder / "pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def reference_dense(embeddings: BGEM3Embeddings) -> list[float]:
    """The query's vector from the local folder, loaded in this process."""
    return embeddings.embed_query(QUERY)


def _embed(env: dict[str, str]) -> list[float]:
    result = subprocess.run([sys.executable, "-c", _EMBED], env=env, capture_output=True,
                            text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _snapshot(env: dict[str, str]) -> Path:
    """The one snapshot folder the download left in the cache."""
    (folder,) = (Path(env["HF_HOME"]) / "hub" / "models--BAAI--bge-m3" / "snapshots").iterdir()
    return folder


def _kotae_index(env: dict[str, str], docs: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kotae", "index", str(docs)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "expenses.md").write_text("# Expenses\n\nReceipts are due on the 25th.\n")
    return folder


def test_safetensors_repo_downloads_safetensors_only_and_embeds(
        hub: FakeHuggingFaceHub, hub_env: dict[str, str], tiny_model_dir: Path,
        bin_checkpoint: Path, reference_dense: list[float]) -> None:
    # The repository ships both formats, as BAAI/bge-m3 does today.
    hub.add_folder(REPO_ID, tiny_model_dir, extra={
        **_REPO_EXTRAS, "pytorch_model.bin": (bin_checkpoint / "pytorch_model.bin").read_bytes()})

    dense = _embed(hub_env)

    assert "pytorch_model.bin" not in hub.requested_files(REPO_ID)
    assert "README.md" not in hub.requested_files(REPO_ID)
    assert {"config.json", "model.safetensors", "tokenizer.json", "colbert_linear.pt",
            "sparse_linear.pt"} <= hub.downloaded_files(REPO_ID)
    folder = _snapshot(hub_env)
    assert not (folder / "pytorch_model.bin").exists()
    assert (folder / "model.safetensors").read_bytes() == (
        tiny_model_dir / "model.safetensors").read_bytes()
    assert dense == pytest.approx(reference_dense, abs=1e-5)


def test_bin_only_repo_downloads_the_bin_and_embeds_the_same(
        hub: FakeHuggingFaceHub, hub_env: dict[str, str], bin_checkpoint: Path,
        reference_dense: list[float]) -> None:
    hub.add_folder(REPO_ID, bin_checkpoint, extra=_REPO_EXTRAS)

    dense = _embed(hub_env)

    weights_fetched = [request for request in hub.requests
                       if request.filename == "pytorch_model.bin" and request.method == "GET"]
    assert len(weights_fetched) == 1  # once, by the second snapshot_download
    assert "README.md" not in hub.requested_files(REPO_ID)
    folder = _snapshot(hub_env)
    assert (folder / "pytorch_model.bin").is_file()
    assert not list(folder.glob("*.safetensors"))
    # Same tensors as the safetensors checkpoint, so the same vector.
    assert dense == pytest.approx(reference_dense, abs=1e-5)


def test_repo_without_weights_is_a_clear_model_unavailable(
        hub: FakeHuggingFaceHub, hub_env: dict[str, str], tiny_model_dir: Path,
        docs: Path) -> None:
    hub.add_folder(REPO_ID, tiny_model_dir, exclude={"model.safetensors"}, extra=_REPO_EXTRAS)

    result = _kotae_index(hub_env, docs)

    assert result.returncode == 1, result.stderr
    assert "KOTAE_EMBEDDING_MODEL=BAAI/bge-m3" in result.stderr
    assert "model weights" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    # It did ask the hub, both times: for the safetensors set, then for pytorch_model.bin.
    assert "config.json" in hub.downloaded_files(REPO_ID)
    assert len([r for r in hub.requests if r.path == f"/api/models/{REPO_ID}/revision/main"]) == 2


def test_repo_the_hub_does_not_have_is_a_clear_model_unavailable(
        hub: FakeHuggingFaceHub, hub_env: dict[str, str], docs: Path) -> None:
    result = _kotae_index(hub_env, docs)

    assert result.returncode == 1, result.stderr
    assert "KOTAE_EMBEDDING_MODEL" in result.stderr and "'BAAI/bge-m3'" in result.stderr
    assert "RepositoryNotFoundError" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert hub.requested_files(REPO_ID) == set()


def test_downloaded_model_loads_again_with_the_hub_offline(
        hub: FakeHuggingFaceHub, hub_env: dict[str, str], tiny_model_dir: Path,
        reference_dense: list[float]) -> None:
    hub.add_folder(REPO_ID, tiny_model_dir, extra=_REPO_EXTRAS)
    assert _embed(hub_env) == pytest.approx(reference_dense, abs=1e-5)
    hub.stop()

    offline = {**hub_env, "HF_HUB_OFFLINE": "1"}
    assert _embed(offline) == pytest.approx(reference_dense, abs=1e-5)


def test_second_start_does_not_ask_the_hub(
        hub: FakeHuggingFaceHub, hub_env: dict[str, str], bin_checkpoint: Path,
        reference_dense: list[float]) -> None:
    hub.add_folder(REPO_ID, bin_checkpoint, extra=_REPO_EXTRAS)
    assert _embed(hub_env) == pytest.approx(reference_dense, abs=1e-5)
    first_start = len(hub.requests)

    assert _embed(hub_env) == pytest.approx(reference_dense, abs=1e-5)

    assert hub.requests[first_start:] == []
