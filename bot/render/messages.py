"""An `Answer` (or a failure) -> the Slack messages that carry it.

An answer is a notice, the answer text and a trailer of sources and feedback buttons; when Block
Kit's per-message limits demand it, it continues in further messages, the trailer in the last.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.render.blocks import Block, context, divider, feedback_actions, section
from bot.render.limits import (
    MAX_BLOCKS_PER_MESSAGE,
    MAX_BODY_BLOCKS_PER_MESSAGE,
    MESSAGE_TEXT_LIMIT,
    SECTION_TEXT_LIMIT,
)
from bot.render.mrkdwn import markdown_to_mrkdwn
from bot.render.sources import sources_mrkdwn
from bot.render.split import split_mrkdwn
from bot.render.text import ELLIPSIS, escape_mrkdwn, single_line, slack_len, truncate_plain
from retrieval.types import Answer


@dataclass(frozen=True)
class SlackMessage:
    """One `chat.postMessage` worth of content: fallback `text` plus Block Kit `blocks`.

    `trailer` is the part of `blocks` that is not the answer text (notice, sources, feedback
    buttons): what a reply streamed as raw text still needs when its stream is stopped.
    """

    text: str
    blocks: list[Block]
    trailer: list[Block] = field(default_factory=list)


def render_answer(answer: Answer, *, feedback: bool = True) -> list[SlackMessage]:
    """Render an answer as one message, or several when Slack's block limits demand it.

    The feedback buttons go in the last message so they sit under the whole answer.
    """
    head = [context(_warning(answer.notice))] if answer.notice else []
    body = _sections(markdown_to_mrkdwn(answer.text))

    tail: list[Block] = []
    full_answer = answer.kind in ("answer", "retrieval_only")
    if full_answer and answer.citations:
        with_snippets = answer.kind == "retrieval_only"
        tail.append(divider())
        tail.extend(_sections(sources_mrkdwn(answer.citations, with_snippets=with_snippets)))
    if feedback and full_answer:
        tail.append(feedback_actions(answer.answer_id))

    body_texts = {id(block): block["text"]["text"] for block in body}
    return [_message(blocks, body_texts) for blocks in _pack(head, body, tail)]


def render_apology(reason: str) -> SlackMessage:
    """A short apology, wherever it goes (thread, response URL): the bot must never go silent
    on a failure. `reason` is shown as plain text."""
    text = _warning(reason, lead="Sorry — I couldn't answer that: ")
    return SlackMessage(text=text, blocks=[section(text)])


def _warning(plain: str, *, lead: str = "") -> str:
    """A :warning: line for plain text (a notice, a failure reason): escaped, on one line, and
    short enough for one section or context element."""
    head = f":warning: {escape_mrkdwn(lead)}"
    body = single_line(plain)
    if slack_len(head) + slack_len(escape_mrkdwn(body)) <= SECTION_TEXT_LIMIT:
        return head + escape_mrkdwn(body)
    # cut the plain text, then escape it: a cut after escaping could split `&amp;`
    kept = truncate_plain(body, SECTION_TEXT_LIMIT - slack_len(head)).removesuffix(ELLIPSIS)
    while slack_len(head) + slack_len(escape_mrkdwn(kept)) + 1 > SECTION_TEXT_LIMIT:
        kept = kept[: max(len(kept) - 64, 0)]  # entities made it longer: cut a little more
    return head + escape_mrkdwn(kept) + ELLIPSIS


def _sections(mrkdwn: str) -> list[Block]:
    return [section(piece) for piece in split_mrkdwn(mrkdwn)]


def _pack(head: list[Block], body: list[Block], tail: list[Block]) -> list[list[Block]]:
    """Distribute blocks over messages: at most MAX_BODY_BLOCKS_PER_MESSAGE body blocks each,
    the notice first, and sources plus buttons after the last body block when they fit."""
    messages: list[list[Block]] = []
    current = _fill(messages, list(head), body, MAX_BODY_BLOCKS_PER_MESSAGE)
    if len(current) + len(tail) > MAX_BLOCKS_PER_MESSAGE:
        messages.append(current)
        current = []
    current = _fill(messages, current, tail, MAX_BLOCKS_PER_MESSAGE)
    messages.append(current)
    return [blocks for blocks in messages if blocks] or [[]]


def _fill(
    messages: list[list[Block]], current: list[Block], blocks: list[Block], per_message: int
) -> list[Block]:
    """Add `blocks` to the open message `current`, moving on to a new message (and appending the
    full one to `messages`) every `per_message` blocks; returns the message left open."""
    for index in range(0, len(blocks), per_message):
        if index:
            messages.append(current)
            current = []
        current.extend(blocks[index : index + per_message])
    return current


def _message(blocks: list[Block], body_texts: dict[int, str]) -> SlackMessage:
    """Fallback text (notifications, screen readers): the part of the answer this message holds;
    for a message holding only sources, the sources."""
    texts = [body_texts[id(b)] for b in blocks if id(b) in body_texts]
    texts = texts or [b["text"]["text"] for b in blocks if b["type"] == "section"]
    texts = texts or [e["text"] for b in blocks if b["type"] == "context" for e in b["elements"]]
    text = "\n\n".join(texts) or ELLIPSIS
    if slack_len(text) > MESSAGE_TEXT_LIMIT:
        text = split_mrkdwn(text, MESSAGE_TEXT_LIMIT - 1)[0] + ELLIPSIS
    trailer = [block for block in blocks if id(block) not in body_texts]
    return SlackMessage(text=text, blocks=blocks, trailer=trailer)
