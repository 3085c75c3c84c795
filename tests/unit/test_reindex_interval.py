"""KOTAE_REINDEX_INTERVAL: durations as people write them; anything else named and refused."""

from __future__ import annotations

import pytest

from retrieval.errors import SettingsInvalid
from retrieval.settings import Settings, load_settings, parse_interval


@pytest.mark.parametrize(("text", "seconds"), [
    ("1h", 3600), ("30m", 1800), ("1h30m", 5400), ("90s", 90), ("45", 45), ("2d", 172800),
    (" 1H 30M ", 5400), ("0.5h", 1800)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["soon", "1x", "h", "-1h"])
def test_other_text_is_refused_naming_the_variable(text: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOTAE_REINDEX_INTERVAL", text)
    with pytest.raises(SettingsInvalid, match="KOTAE_REINDEX_INTERVAL"):
        load_settings(Settings)


def test_unset_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KOTAE_REINDEX_INTERVAL", raising=False)
    assert Settings(_env_file=None).reindex_interval is None  # type: ignore[call-arg]
    monkeypatch.setenv("KOTAE_REINDEX_INTERVAL", "1h")
    assert Settings(_env_file=None).reindex_interval == 3600  # type: ignore[call-arg]
