"""Checks shared by the rendering tests (bot/render/).

Slack is not reachable from unit tests, so the block checks below encode the Block Kit limits
Slack enforces (section text <= 3,000 characters, <= 50 blocks, button text <= 75, ...): a payload
that fails them here would be rejected by `chat.postMessage` with `invalid_blocks`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from bot.render import SlackMessage
from retrieval.types import Answer, Citation

ZWSP = "\u200b"
FENCE_LINE = re.compile(r"(?:> ?)*```")
# A link we generate: <http(s)/mailto URL> or <URL|label>; nothing else may use < or >.
SLACK_LINK = re.compile(r"<(?:https?://|mailto:)[^<>|\s]+(?:\|[^<>]*)?>")


# --- helpers ---


def slack_len(text: str) -> int:
    """Slack counts UTF-16 code units; an emoji outside the BMP is two."""
    return len(text.encode("utf-16-le")) // 2


def citation(number: int, **overrides: Any) -> Citation:
    fields: dict[str, Any] = {
        "number": number,
        "title": f"Doc {number}",
        "heading_path": [],
        "source": f"docs/doc{number}.md",
        "chunk_id": f"c{number}",
        "score": 0.5,
        "snippet": f"snippet {number}",
    }
    fields.update(overrides)
    return Citation(**fields)


def answer(text: str = "An answer [1].", **overrides: Any) -> Answer:
    fields: dict[str, Any] = {
        "answer_id": "ans-42",
        "question": "q?",
        "text": text,
        "citations": [citation(1)],
    }
    fields.update(overrides)
    return Answer(**fields)


def text_objects(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for block in blocks:
        if "text" in block:
            found.append(block["text"])
        for element in block.get("elements", []):
            found.append(element["text"] if element.get("type") == "button" else element)
    return found


def all_texts(messages: list[SlackMessage]) -> list[str]:
    return [m.text for m in messages] + [
        obj["text"] for m in messages for obj in text_objects(m.blocks)
    ]


def check_text_object(obj: dict[str, Any], *, kinds: tuple[str, ...], limit: int) -> None:
    assert obj["type"] in kinds
    assert set(obj) <= {"type", "text", "emoji", "verbatim"}
    assert isinstance(obj["text"], str)
    assert 1 <= slack_len(obj["text"]) <= limit
    if obj["type"] == "plain_text":
        assert "verbatim" not in obj
    else:
        assert "emoji" not in obj
        # Text from the model or documents must not be auto-parsed into mentions.
        assert obj.get("verbatim") is True


def check_block(block: dict[str, Any]) -> None:
    kind = block["type"]
    assert len(block.get("block_id", "")) <= 255
    if kind == "section":
        assert set(block) <= {"type", "text", "block_id"}
        check_text_object(block["text"], kinds=("mrkdwn",), limit=3000)
    elif kind == "divider":
        assert set(block) <= {"type", "block_id"}
    elif kind == "context":
        assert 1 <= len(block["elements"]) <= 10
        for element in block["elements"]:
            check_text_object(element, kinds=("mrkdwn", "plain_text"), limit=3000)
    elif kind == "actions":
        assert 1 <= len(block["elements"]) <= 25
        for button in block["elements"]:
            assert button["type"] == "button"
            assert 1 <= len(button["action_id"]) <= 255
            assert len(button["value"]) <= 2000
            assert len(button.get("accessibility_label", "")) <= 75
            check_text_object(button["text"], kinds=("plain_text",), limit=75)
    else:
        pytest.fail(f"unexpected block type {kind!r}")


def check_message(message: SlackMessage) -> None:
    assert isinstance(message, SlackMessage)
    json.dumps({"text": message.text, "blocks": message.blocks})  # must be JSON-serialisable
    assert 1 <= slack_len(message.text) <= 40_000
    assert 1 <= len(message.blocks) <= 50
    block_ids = [b["block_id"] for b in message.blocks if "block_id" in b]
    assert len(block_ids) == len(set(block_ids))
    for block in message.blocks:
        check_block(block)


def check_safe(text: str) -> None:
    """Every < > left in mrkdwn is a link we generated: no <!channel>, <@U..>, <#C..>."""
    without_links = SLACK_LINK.sub("", text)
    without_quotes = re.sub(r"^(?:> ?)+", "", without_links, flags=re.MULTILINE)
    assert "<" not in without_quotes and ">" not in without_quotes, text


def sections(messages: list[SlackMessage]) -> list[str]:
    return [b["text"]["text"] for m in messages for b in m.blocks if b["type"] == "section"]


def body_sections(messages: list[SlackMessage]) -> list[str]:
    """Section texts before the sources divider."""
    out: list[str] = []
    for message in messages:
        for block in message.blocks:
            if block["type"] == "divider":
                return out
            if block["type"] == "section":
                out.append(block["text"]["text"])
    return out


def fence_lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if FENCE_LINE.fullmatch(line)]


def actions_blocks(messages: list[SlackMessage]) -> list[tuple[int, dict[str, Any]]]:
    return [(i, b) for i, m in enumerate(messages) for b in m.blocks if b["type"] == "actions"]
