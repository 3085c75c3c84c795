"""Turn an `Answer` into Slack messages.

Three jobs, one module each, plus the pieces they share:

* `mrkdwn` (with `inline` and `table`): the model writes CommonMark, Slack reads mrkdwn; parsed
  with markdown-it-py and escaped, so nothing posts `<!channel>`, and with zero-width spaces so
  Japanese emphasis works.
* `split`: Block Kit has hard limits (`limits`); long text is cut at paragraph, line and sentence
  boundaries without breaking fences, links, entities or surrogate pairs.
* `blocks` (slack_sdk's block models), `sources` and `messages`: Block Kit assembly of an answer,
  its sources and feedback buttons, and of an apology; `progress` for the streaming preview.
* `text` (escaping, Slack's character count) and `fences` (code-fence state per line) are shared.

Callers import from `bot.render`; the names below are the package's API.
"""

from bot.render.blocks import (
    FEEDBACK_BLOCK_ID,
    FEEDBACK_DOWN_ACTION_ID,
    FEEDBACK_UP_ACTION_ID,
    Block,
)
from bot.render.fences import FENCE
from bot.render.limits import (
    BUTTON_TEXT_LIMIT,
    MARKDOWN_BLOCK_LIMIT,
    MAX_BLOCKS_PER_MESSAGE,
    MAX_BODY_BLOCKS_PER_MESSAGE,
    MAX_CONTEXT_ELEMENTS,
    MESSAGE_TEXT_LIMIT,
    SECTION_TEXT_LIMIT,
)
from bot.render.messages import SlackMessage, render_answer, render_apology
from bot.render.mrkdwn import markdown_to_mrkdwn
from bot.render.progress import PROGRESS_TEXT_LIMIT, render_progress
from bot.render.sources import SNIPPET_CHARS, TITLE_CHARS
from bot.render.split import split_mrkdwn
from bot.render.text import ELLIPSIS, ZWSP, escape_mrkdwn, slack_date

__all__ = [
    "BUTTON_TEXT_LIMIT",
    "ELLIPSIS",
    "FEEDBACK_BLOCK_ID",
    "FEEDBACK_DOWN_ACTION_ID",
    "FEEDBACK_UP_ACTION_ID",
    "FENCE",
    "MARKDOWN_BLOCK_LIMIT",
    "MAX_BLOCKS_PER_MESSAGE",
    "MAX_BODY_BLOCKS_PER_MESSAGE",
    "MAX_CONTEXT_ELEMENTS",
    "MESSAGE_TEXT_LIMIT",
    "PROGRESS_TEXT_LIMIT",
    "SECTION_TEXT_LIMIT",
    "SNIPPET_CHARS",
    "TITLE_CHARS",
    "ZWSP",
    "Block",
    "SlackMessage",
    "escape_mrkdwn",
    "markdown_to_mrkdwn",
    "render_answer",
    "render_apology",
    "render_progress",
    "slack_date",
    "split_mrkdwn",
]
