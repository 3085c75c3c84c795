"""Slack's hard limits on what we post (https://docs.slack.dev/reference/block-kit).

Slack counts characters in UTF-16 code units (see `text.slack_len`); a payload over any of these
is refused by `chat.postMessage` with `invalid_blocks`, or its `text` silently truncated.
"""

SECTION_TEXT_LIMIT = 3_000  # characters in a section block's text object
MAX_BLOCKS_PER_MESSAGE = 50
MAX_BODY_BLOCKS_PER_MESSAGE = 45  # ours: leaves room for the notice, sources and buttons
MESSAGE_TEXT_LIMIT = 40_000  # Slack truncates the top-level `text` beyond this
MAX_CONTEXT_ELEMENTS = 10
BUTTON_TEXT_LIMIT = 75
# We send mrkdwn `section` blocks, not `markdown` blocks: we have to escape and split the text
# ourselves anyway, and `markdown` blocks share this cap across the whole payload.
MARKDOWN_BLOCK_LIMIT = 12_000
