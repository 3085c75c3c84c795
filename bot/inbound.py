"""What an HTTP request must be before Bolt reads it.

Bolt parses the body while it builds its request — before the signature is checked — and
reads a few fields of the payload without checking their type (the event, the actions). A
body that is not a Slack payload therefore raised inside Bolt and came back as HTTP 500 with
a traceback, which Slack retries. Here such a body is answered once, cleanly: 401 when it is
not signed with our secret (as Bolt answers any unsigned request), 400 when it is.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.adapter.wsgi.http_request import WsgiHttpRequest
from slack_bolt.request import BoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.signature import SignatureVerifier

logger = logging.getLogger(__name__)


def unsigned() -> BoltResponse:
    """What Bolt answers to a request not signed with our secret."""
    return BoltResponse(status=401, body={"error": "invalid request"})


def not_slack() -> BoltResponse:
    return BoltResponse(status=400, body={"error": "not a Slack request"})


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: str


class _Action(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    action_id: str


class _Payload(BaseModel):
    """The fields Bolt reads without looking at their type, with the type it assumes."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: str | None = None
    event: _Event | None = None
    actions: list[_Action] | None = Field(None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _present_means_not_null(cls, data: Any) -> Any:
        for name in ("event", "actions"):
            if isinstance(data, dict) and name in data and data[name] is None:
                raise ValueError(f"{name} is null")
        return data

    @model_validator(mode="after")
    def _actions_of_block_actions(self) -> _Payload:
        if self.type == "block_actions" and not self.actions:
            raise ValueError("block_actions without actions")
        return self


class SlackRequests(SlackRequestHandler):
    """Bolt's WSGI adapter, handing Bolt only what it can read. `signing_secret` tells an
    unsigned non-payload (401) from a signed one (400, logged); without it, both are 400."""

    def __init__(self, app: App, path: str, signing_secret: str | None) -> None:
        super().__init__(app, path)
        self._verifier = SignatureVerifier(signing_secret) if signing_secret else None

    def dispatch(self, request: WsgiHttpRequest) -> BoltResponse:
        raw = _read_body(request)
        headers = request.get_headers()
        if not _timestamp_is_a_number(headers):
            return unsigned()  # Bolt's own check would raise on it
        try:
            bolt_request = BoltRequest(body=raw.decode("utf-8"), query=request.query_string,
                                       headers=headers)
            problem = _shape_problem(bolt_request.body)
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as error:
            # json and UnicodeDecodeError are ValueErrors; the others come from Bolt reading
            # a payload of the wrong shape (a list, a number where it expects an object)
            bolt_request, problem = None, type(error).__name__
        if bolt_request is not None and problem is None:
            return self.app.dispatch(bolt_request)
        if self._verifier is not None and not self._signed(raw, headers):
            return unsigned()
        logger.warning("refused a %s request that is not a Slack payload (%s, %d bytes)",
                       "signed" if self._verifier else "possibly unsigned", problem, len(raw))
        return not_slack()

    def _signed(self, raw: bytes, headers: dict[str, Any]) -> bool:
        assert self._verifier is not None
        try:
            return self._verifier.is_valid(raw, headers.get("x-slack-request-timestamp"),
                                           headers.get("x-slack-signature"))
        except UnicodeDecodeError:  # slack_sdk decodes the body to sign it
            return False


def _shape_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return f"a JSON {type(body).__name__}, not an object"
    try:
        _Payload.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        return f"{'.'.join(map(str, first['loc'])) or 'payload'}: {first['msg']}"
    return None


def _read_body(request: WsgiHttpRequest) -> bytes:
    stream = request.environ.get("wsgi.input")
    length = int(request.environ.get("CONTENT_LENGTH") or 0)
    return stream.read(length) if stream is not None and length > 0 else b""


def _timestamp_is_a_number(headers: dict[str, Any]) -> bool:
    timestamp = headers.get("x-slack-request-timestamp")
    if timestamp is None:
        return True  # unsigned: Bolt answers 401
    try:
        int(timestamp)
    except ValueError:
        return False
    return True
