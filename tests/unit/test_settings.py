"""Settings: one object reads the environment; .env.example documents every setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.settings import BotSettings

ROOT = Path(__file__).resolve().parents[2]


def env_name(name: str, field) -> str:  # type: ignore[no-untyped-def]
    alias = field.validation_alias
    if alias is not None:
        return alias.choices[0]
    return f"KOTAE_{name.upper()}"


def test_env_example_documents_every_setting() -> None:
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(),
                                flags=re.M))
    expected = {env_name(name, field) for name, field in BotSettings.model_fields.items()}
    assert expected - documented == set()
    assert documented - expected == set()


def test_env_example_loads_as_the_defaults(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for name, field in BotSettings.model_fields.items():
        monkeypatch.delenv(env_name(name, field), raising=False)
    loaded = BotSettings(_env_file=ROOT / ".env.example")  # type: ignore[call-arg]
    defaults = BotSettings(_env_file=None)  # type: ignore[call-arg]
    assert loaded.model_dump() == defaults.model_dump()


def test_standard_names_and_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-from-env")
    monkeypatch.setenv("KOTAE_ADMIN_USER_IDS", "U1, U2")
    monkeypatch.setenv("KOTAE_HYBRID_WEIGHTS", "[0.5, 0.5, 0]")
    monkeypatch.setenv("KOTAE_SLASH_COMMAND", "ask")
    settings = BotSettings(_env_file=None)  # type: ignore[call-arg]
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-from-env"
    assert "sk-from-env" not in repr(settings) and "xoxb-from-env" not in repr(settings)
    assert settings.admin_user_ids == ["U1", "U2"]
    assert settings.hybrid_weights == [0.5, 0.5, 0.0]
    assert settings.slash_command == "/ask"


def test_bad_weights_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOTAE_HYBRID_WEIGHTS", "[1, 2]")
    with pytest.raises(ValueError, match="KOTAE_HYBRID_WEIGHTS"):
        BotSettings(_env_file=None)  # type: ignore[call-arg]


def test_manifest_matches_the_default_slash_command() -> None:
    import json

    manifest = json.loads((ROOT / "manifest.json").read_text())
    commands = [c["command"] for c in manifest["features"]["slash_commands"]]
    assert commands == [BotSettings.model_fields["slash_command"].default]
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"app_mention", "message.im"} <= events
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"app_mentions:read", "chat:write", "commands", "im:history",
            "users:read", "reactions:write"} <= scopes
