"""Which language a question is in: decides the answer language and the fixed phrases."""

from __future__ import annotations

import re

_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HAN = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")
# A word of running English, not an acronym: "VPN接続方法" is a Japanese question.
_ENGLISH_WORD = re.compile(r"[A-Za-z]*[a-z][A-Za-z]*")


def detect_language(text: str) -> str:
    """'ja' when the text has kana, or Han characters without English words (acronyms such as
    VPN or PDF do not count); else 'en'."""
    if _KANA.search(text):
        return "ja"
    if _HAN.search(text) and not any(len(word) >= 3 for word in _ENGLISH_WORD.findall(text)):
        return "ja"
    return "en"


LANGUAGE_NAMES = {"ja": "Japanese (日本語)", "en": "English"}

MESSAGES = {
    "no_match": {
        "en": "I couldn't find anything about that in the indexed documents.",
        "ja": "インデックス済みの資料には、その質問に関係する内容が見つかりませんでした。",
    },
    "llm_unavailable": {
        "en": "The language model was unavailable, so here are the most relevant passages instead.",
        "ja": "言語モデルが利用できなかったため、代わりに最も関連する箇所を示します。",
    },
    "no_llm": {
        "en": "No language model is configured (OPENAI_API_KEY is not set): retrieval only.",
        "ja": "言語モデルが設定されていません（OPENAI_API_KEY 未設定）。検索結果のみを示します。",
    },
}


def message(key: str, language: str) -> str:
    return MESSAGES[key].get(language, MESSAGES[key]["en"])
