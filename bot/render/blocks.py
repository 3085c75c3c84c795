"""The Block Kit blocks we send, built with slack_sdk's block models.

The models check Slack's per-block limits (section text, context elements, button text and
value) when turned into dicts, so a limit we failed to enforce stops here with a
`SlackObjectFormationError` naming the field, not at Slack as a bare `invalid_blocks`. They count
code points where Slack counts UTF-16 units, so the callers still cut text to the limits
themselves (`text.slack_len`); the models are the backstop. Blocks leave this module as plain
dicts: that is what `chat.postMessage` takes and what the rest of the bot reads.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from bot.render.limits import BUTTON_TEXT_LIMIT, SECTION_TEXT_LIMIT
from bot.render.text import truncate_plain

Block = dict[str, Any]

FEEDBACK_BLOCK_ID = "kotae_feedback"
FEEDBACK_UP_ACTION_ID = "kotae_feedback_up"
FEEDBACK_DOWN_ACTION_ID = "kotae_feedback_down"


def section(mrkdwn: str) -> Block:
    """A section holding mrkdwn already cut to SECTION_TEXT_LIMIT (see `split.split_mrkdwn`)."""
    return SectionBlock(text=_mrkdwn(mrkdwn)).to_dict()


def context(mrkdwn: str) -> Block:
    """A context line (small grey text), cut to fit."""
    return ContextBlock(elements=[_mrkdwn(truncate_plain(mrkdwn, SECTION_TEXT_LIMIT))]).to_dict()


def divider() -> Block:
    return DividerBlock().to_dict()


def feedback_actions(answer_id: str) -> Block:
    """👍 / 👎 under an answer; both carry the answer id, which the action handler records."""
    return ActionsBlock(
        block_id=FEEDBACK_BLOCK_ID,
        elements=[
            _button(FEEDBACK_UP_ACTION_ID, "👍", answer_id, "This answer was helpful"),
            _button(FEEDBACK_DOWN_ACTION_ID, "👎", answer_id, "This answer was not helpful"),
        ],
    ).to_dict()


def _mrkdwn(text: str) -> MarkdownTextObject:
    # verbatim: Slack must not auto-parse "@channel" or channel names in text we did not write.
    return MarkdownTextObject(text=text, verbatim=True)


def _button(action_id: str, label: str, value: str, accessibility_label: str) -> ButtonElement:
    return ButtonElement(
        action_id=action_id,
        text=PlainTextObject(text=label[:BUTTON_TEXT_LIMIT], emoji=True),
        value=value,
        accessibility_label=accessibility_label[:BUTTON_TEXT_LIMIT],
    )
