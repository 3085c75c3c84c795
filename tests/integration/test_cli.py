"""The `kotae` command as a user runs it: a subprocess with settings in the environment."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.openai_server import FakeOpenAIServer, Reply
from tests.helpers import kotae_cli_env


def kotae(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kotae", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture
def env(tmp_path: Path, tiny_model_dir: Path) -> dict[str, str]:
    return kotae_cli_env(tmp_path, tiny_model_dir)


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
    first_source = re.search(r'<source id="1" [^>]*path="([^"]*)">\n(.*?)\n</source>', prompt,
                             re.DOTALL)
    assert first_source and answer["citations"][0]["source"] == first_source.group(1)
    shown = " ".join(html.unescape(first_source.group(2)).split())
    assert answer["citations"][0]["snippet"].removesuffix("…") in shown  # its own text

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


def test_search_prints_document_text_as_data_not_markup(env: dict[str, str],
                                                        tmp_path: Path) -> None:
    docs = tmp_path / "brackets"
    docs.mkdir()
    (docs / "config.md").write_text(
        "# Config in [/etc/app]\n\nSet arr[i] to [bold]x and read [link](http://x) first.\n",
        encoding="utf-8")
    assert kotae("index", str(docs), env=env).returncode == 0
    found = kotae("search", "config arr", "-k", "1", env=env)
    assert found.returncode == 0, found.stderr
    assert "Traceback" not in found.stderr
    for text in ("[/etc/app]", "arr[i]", "[bold]x", "[link](http://x)"):
        assert text in found.stdout


@pytest.mark.parametrize(("name", "value"), [
    ("KOTAE_HYBRID_WEIGHTS", "oops"), ("KOTAE_HYBRID_WEIGHTS", "[1,2]"),
    ("KOTAE_CHUNK_SIZE", "abc"), ("KOTAE_FAISS_DEVICE", "gpu")])
def test_a_bad_setting_is_one_line_naming_it_with_exit_code_2(
        env: dict[str, str], name: str, value: str) -> None:
    for command in (["status"], ["search", "x"], ["index"]):
        result = kotae(*command, env={**env, name: value})
        assert result.returncode == 2, (command, result.stderr)
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and name in lines[0], result.stderr


def test_bad_arguments_are_usage_errors(env: dict[str, str], sample_docs: Path) -> None:
    assert kotae("index", str(sample_docs), env=env).returncode == 0
    for args in (["search", "経費", "-k", "0"], ["search", "経費", "-k", "-3"],
                 ["search", "  "], ["ask", ""], ["search", "x", "--mode", "fast"]):
        result = kotae(*args, env=env)
        assert result.returncode == 2, (args, result.stdout)
        assert "Traceback" not in result.stderr and not result.stdout
    three = json.loads(kotae("search", "経費", "-k", "3", "--json", env=env).stdout)
    assert len(three["hits"]) == 3


def test_ask_and_search_without_an_index_both_fail_with_exit_1(env: dict[str, str]) -> None:
    for command in ("ask", "search"):
        result = kotae(command, "経費精算の締め切りは？", env=env)
        assert result.returncode == 1 and "kotae index" in result.stderr, command


def test_a_mistyped_folder_leaves_the_index_serving(env: dict[str, str],
                                                    sample_docs: Path) -> None:
    built = json.loads(kotae("index", str(sample_docs), "--json", env=env).stdout)
    typo = kotae("index", str(sample_docs) + "s", env=env)
    assert typo.returncode == 1 and "no such file or folder" in typo.stderr
    assert "Traceback" not in typo.stderr
    status = json.loads(kotae("status", "--json", env=env).stdout)
    assert status["index_version"] == built["version"]
    assert status["chunks"] == built["chunks_total"]


def test_index_summary_reports_every_input_once(env: dict[str, str], sample_docs: Path,
                                                tmp_path: Path) -> None:
    (sample_docs / "empty.md").write_text("", encoding="utf-8")
    result = kotae("index", str(sample_docs), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("empty.md") == 1, result.stderr
    assert re.search(r"files: 11 added, 0 updated, 0 unchanged, 0 removed, 1 failed · \d+ "
                     r"chunks · \d+\.\ds · switched to v", result.stdout), result.stdout
    again = kotae("index", str(sample_docs), env=env)
    assert "nothing changed" in again.stdout and again.stderr.count("empty.md") == 1


def test_status_names_the_devices_in_use_and_loads_no_model(env: dict[str, str]) -> None:
    env = {**env, "KOTAE_EMBEDDING_DEVICE": "auto", "KOTAE_FAISS_DEVICE": "auto"}
    result = kotae("status", "--json", env=env)
    status = json.loads(result.stdout)
    assert status["embedding_device"] == "cpu" and status["faiss_device"] == "cpu"
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from kotae.cli import app; sys.argv=['kotae', "
         "'status']\ntry: app()\nexcept SystemExit: pass\nprint('torch' in sys.modules, "
         "'FlagEmbedding' in sys.modules, 'faiss' in sys.modules)"],
        env=env, capture_output=True, text=True, timeout=60, check=True)
    assert probe.stdout.strip().splitlines()[-1] == "False False False"


def test_a_file_name_with_a_newline_stays_on_one_source_line(env: dict[str, str],
                                                             tmp_path: Path) -> None:
    docs = tmp_path / "odd"
    docs.mkdir()
    (docs / "bad\nname.md").write_text("# Odd\n\nThe coffee machine is descaled weekly.\n",
                                       encoding="utf-8")
    assert kotae("index", str(docs), env=env).returncode == 0
    result = kotae("ask", "coffee machine", env=env)
    assert result.returncode == 0, result.stderr
    source_lines = [line for line in result.stdout.splitlines() if "name.md" in line]
    assert source_lines and all("bad\\nname.md" in line for line in source_lines)


def test_ctrl_c_while_indexing_says_the_index_was_left_as_it_was(
        env: dict[str, str], sample_docs: Path, tmp_path: Path) -> None:
    import signal
    import time

    assert kotae("index", str(sample_docs), env=env).returncode == 0
    for copy in range(8):  # enough to embed that the signal lands mid-build
        shutil.copytree(sample_docs, sample_docs / f"copy{copy}", ignore=shutil.ignore_patterns(
            "copy*"))
    versions = Path(env["KOTAE_INDEX_DIR"]) / "versions"
    process = subprocess.Popen([sys.executable, "-m", "kotae", "index", str(sample_docs)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 60
    while not list(versions.glob(".building-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _out, errors = process.communicate(timeout=60)
    assert process.returncode == 130, errors
    assert "interrupted: nothing was changed; the index still serves v" in errors
    assert "Traceback" not in errors
