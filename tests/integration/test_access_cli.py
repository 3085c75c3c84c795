"""`kotae search` / `kotae ask` with an access file: the operator sees everything; --as-channel
and --as-user show exactly what a channel or a user would get (memberships from Slack when a
bot token is set)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.access_corpus import (
    HR_CHANNEL,
    HR_GROUP,
    HR_USER,
    MARKER,
    PUBLIC_CHANNEL,
    access_toml,
    write_corpus,
)
from tests.fakes.slack_api import FakeSlackAPI

QUESTION = "salary band bonus level for the Monday on-call handoff and expenses?"


def kotae(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kotae", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture
def env(tmp_path: Path, tiny_model_dir: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("KOTAE_", "OPENAI_", "SLACK_"))}
    docs = write_corpus(tmp_path)
    (tmp_path / "access.toml").write_text(access_toml(), encoding="utf-8")
    values = {**clean, "KOTAE_EMBEDDING_MODEL": str(tiny_model_dir),
              "KOTAE_EMBEDDING_DEVICE": "cpu", "KOTAE_INDEX_DIR": str(tmp_path / "index"),
              "KOTAE_CHUNK_SIZE": "200", "KOTAE_CHUNK_OVERLAP": "20", "HF_HUB_OFFLINE": "1",
              "KOTAE_RETRIEVAL_MODE": "sparse", "KOTAE_DOCS_DIR": str(docs),
              "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    indexed = kotae("index", env=values)
    assert indexed.returncode == 0, indexed.stderr
    return {**values, "KOTAE_ACCESS_FILE": str(tmp_path / "access.toml")}


def search(env: dict[str, str], *flags: str) -> tuple[str, str]:
    found = kotae("search", QUESTION, "-k", "16", "--json", *flags, env=env)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["hits"]
    return found.stdout.lower(), found.stderr


def test_the_operator_sees_everything_and_a_channel_only_its_sets(env: dict[str, str]) -> None:
    assert MARKER.lower() in search(env)[0]
    assert MARKER.lower() not in search(env, "--as-channel", PUBLIC_CHANNEL)[0]
    assert MARKER.lower() in search(env, "--as-channel", HR_CHANNEL)[0]


def test_as_user_without_slack_uses_the_grants_by_id_and_says_so(env: dict[str, str]) -> None:
    found, notes = search(env, "--as-user", HR_USER)
    assert MARKER.lower() in found and "SLACK_BOT_TOKEN is not set" in notes
    assert MARKER.lower() not in search(env, "--as-user", "U0OUTSIDE")[0]


def test_as_user_with_slack_checks_user_groups_and_channels(
        env: dict[str, str], fake_slack: FakeSlackAPI) -> None:
    fake_slack.set_usergroup(HR_GROUP, ["U0GROUPIE"])
    fake_slack.set_channel(HR_CHANNEL, "hr-team", ["U0MEMBER1"])
    slack = {**env, "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_API_URL": fake_slack.base_url}
    assert MARKER.lower() in search(slack, "--as-user", "U0GROUPIE")[0]
    assert MARKER.lower() in search(slack, "--as-user", "U0MEMBER1")[0]
    assert MARKER.lower() not in search(slack, "--as-user", "U0OUTSIDE")[0]
    assert fake_slack.calls("usergroups.users.list")
    assert fake_slack.calls("conversations.members")


def test_ask_as_a_channel_gives_its_retrieval_only_answer(env: dict[str, str]) -> None:
    public = kotae("ask", QUESTION, "--as-channel", PUBLIC_CHANNEL, "--json", env=env)
    assert public.returncode == 0, public.stderr
    answer = json.loads(public.stdout)
    assert answer["kind"] == "retrieval_only" and answer["citations"]
    assert MARKER.lower() not in public.stdout.lower()
    hr = kotae("ask", QUESTION, "--as-channel", HR_CHANNEL, "--json", env=env)
    assert MARKER.lower() in hr.stdout.lower()


def test_a_broken_access_file_and_conflicting_flags_are_errors(env: dict[str, str],
                                                              tmp_path: Path) -> None:
    both = kotae("search", QUESTION, "--as-channel", HR_CHANNEL, "--as-user", HR_USER, env=env)
    assert both.returncode == 2 and "not both" in both.stderr
    (tmp_path / "access.toml").write_text('default = "somebody"\n', encoding="utf-8")
    broken = kotae("search", QUESTION, "--as-channel", HR_CHANNEL, env=env)
    assert broken.returncode == 1
    assert "access.toml" in broken.stderr and "default" in broken.stderr
    assert "Traceback" not in broken.stderr
