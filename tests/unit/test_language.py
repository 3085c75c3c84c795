"""Which language a question is in (retrieval/language.py): it picks the answer language and
the fixed phrases (no match, model unavailable, …)."""

from __future__ import annotations

import pytest

from retrieval.language import LANGUAGE_NAMES, MESSAGES, detect_language, message


@pytest.mark.parametrize(("text", "language"), [
    ("経費精算の締め切りはいつですか？", "ja"),       # kana and kanji
    ("締め切りは？", "ja"),
    ("ひらがなだけ", "ja"),
    ("カタカナ", "ja"),
    ("ｶﾀｶﾅ", "ja"),                                # half-width katakana
    ("Slack の API トークンはどこ？", "ja"),          # English words, but kana decides
    ("経費精算締切", "ja"),                          # kanji only
    ("VPN接続方法", "ja"),                           # kanji with a short acronym
    ("When is the on-call handoff?", "en"),
    ("What does 経費 mean?", "en"),                  # kanji inside an English question
    ("", "en"),
    ("42?", "en"),
])
def test_detect_language(text: str, language: str) -> None:
    assert detect_language(text) == language


def test_every_detected_language_has_a_name_and_every_phrase() -> None:
    for language in ("ja", "en"):
        assert language in LANGUAGE_NAMES
        assert all(language in phrases for phrases in MESSAGES.values())


def test_an_unknown_language_falls_back_to_english() -> None:
    assert message("no_match", "fr") == MESSAGES["no_match"]["en"]
    assert message("no_match", "ja") == MESSAGES["no_match"]["ja"]
