"""deploy/ cannot run here (no Docker engine), so what can drift is checked: every setting the
compose file and its env example give is one kotae reads, with a value it accepts; nginx
points at the replicas that exist; the image holds every package the project installs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.settings import BotSettings
from tests.unit.test_settings import env_name

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KNOWN = {env_name(name, field) for name, field in BotSettings.model_fields.items()}


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _kotae_services() -> dict[str, dict[str, Any]]:
    return {name: service for name, service in _compose()["services"].items()
            if service.get("image") == "kotae:latest"}


def test_two_replicas_share_one_store_and_one_redis() -> None:
    replicas = _kotae_services()
    assert len(replicas) >= 2
    environments = [service["environment"] for service in replicas.values()]
    assert all(env == environments[0] for env in environments)
    assert environments[0]["KOTAE_STORE"] == "milvus"
    assert environments[0]["KOTAE_REDIS_URL"].startswith("redis://redis:")
    assert environments[0]["KOTAE_MILVUS_URI"].startswith("http://milvus:")


def test_every_setting_given_is_one_kotae_reads_with_a_value_it_accepts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    environment = next(iter(_kotae_services().values()))["environment"]
    example = dict(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=(.*?)\s*(?:#.*)?$",
                              (DEPLOY / "kotae.env.example").read_text(), flags=re.M))
    unknown = {name for name in [*environment, *example] if name not in KNOWN}
    assert unknown == set()
    for name, value in environment.items():
        monkeypatch.setenv(name, str(value))
    settings = BotSettings(_env_file=None)  # type: ignore[call-arg]
    assert settings.store == "milvus" and settings.milvus_index_type == "HNSW"


def test_nginx_spreads_over_the_replicas_that_exist() -> None:
    upstreams = set(re.findall(r"server\s+([\w-]+):3000",
                               (DEPLOY / "nginx.conf").read_text()))
    assert upstreams == set(_kotae_services())


def test_the_image_holds_every_package_the_project_installs() -> None:
    pyproject = (DEPLOY.parent / "pyproject.toml").read_text()
    include = re.search(r"^include = \[(.*)\]", pyproject, flags=re.M)
    assert include is not None
    packages = {name.strip(' "*') for name in include.group(1).split(",")}
    copied = set(re.findall(r"^COPY (\w+) \1$", (DEPLOY / "Dockerfile").read_text(), flags=re.M))
    assert packages <= copied


def test_docker_waits_longer_than_the_bot_drains() -> None:
    for service in _kotae_services().values():
        grace = float(service["environment"]["KOTAE_SHUTDOWN_GRACE_S"])
        stop = service["stop_grace_period"]
        assert stop.endswith("s") and float(stop[:-1]) > grace
