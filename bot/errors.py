"""The bot's own domain errors, and the one place an error becomes words for a Slack user."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError

from retrieval.errors import KotaeError

GENERIC_FAILURE = "something went wrong on my side. Please try again in a moment."

# What a Slack Web API call raises: Slack's refusal, or the network (slack_sdk lets urllib's
# errors through once its own connection retry is spent).
SLACK_CALL_ERRORS = (SlackApiError, OSError)

_TOKEN_HINTS = {
    "SLACK_BOT_TOKEN": "xoxb-…, from OAuth & Permissions",
    "SLACK_APP_TOKEN": "xapp-…, an app-level token with connections:write",
}


class SlackUnavailable(KotaeError):
    """The bot cannot start: Slack cannot be reached, or refuses one of its tokens."""

    @classmethod
    def from_error(cls, error: OSError | SlackApiError, api_url: str,
                   token_name: str = "SLACK_BOT_TOKEN") -> SlackUnavailable:
        """`error` as slack_sdk raised it: urllib's (the network, after slack_sdk's own
        retry) or Slack's answer (`invalid_auth`, `not_authed`, an HTTP error status)."""
        if isinstance(error, SlackApiError):
            status = error.response.status_code
            code = _one_line(str(error.response.get("error") or ""))
            if status == 200:
                return cls(f"Slack at {api_url} refused {token_name} ({code}); check the "
                           f"token ({_TOKEN_HINTS[token_name]}) or SLACK_API_URL")
            reason: object = f"HTTP {status}" + (f" ({code})" if code else "")
        else:
            reason = getattr(error, "reason", None) or error
        return cls(f"cannot reach Slack at {api_url}: {reason}; check the network/proxy or "
                   f"SLACK_API_URL")


class CannotListen(KotaeError):
    """HTTP mode: the configured host and port cannot be bound."""


def _one_line(text: str, limit: int = 200) -> str:
    """A Web API error code, or the start of a page that was not Slack's answer."""
    return " ".join(text.split())[:limit]


def failure_reason(error: Exception) -> str:
    """What a user is told about a failure: a domain error explains itself; anything else is
    our problem, and its details belong in the log, not in Slack."""
    if not isinstance(error, KotaeError):
        return GENERIC_FAILURE
    return error.for_users or str(error)
