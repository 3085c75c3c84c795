"""Build and send Slack-signed HTTP requests to an app under test.

Why: the app must verify Slack's signature on every request, so tests send exactly what Slack
sends — the `v0` HMAC-SHA256 signature over `v0:{timestamp}:{raw body}` — over real HTTP.
Retries are Slack's `X-Slack-Retry-Num` / `X-Slack-Retry-Reason` headers: see `retry_headers`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode

DEFAULT_AUTHORIZATIONS: tuple[dict[str, Any], ...] = (
    {
        "enterprise_id": None,
        "team_id": "T1",
        "user_id": "UBOT",
        "is_bot": True,
        "is_enterprise_install": False,
    },
)
DEFAULT_RESPONSE_URL = "https://hooks.slack.com/commands/T1/1/fake-response-url"

# Proxies from the environment must never see requests to 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def sign(signing_secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """The two headers Slack adds; `timestamp` defaults to now (pass an old one to test replay
    protection)."""
    ts = int(time.time()) if timestamp is None else timestamp
    base = f"v0:{ts}:{body}".encode()
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={digest}"}


def retry_headers(retry_num: int, reason: str = "http_timeout") -> dict[str, str]:
    """Headers Slack adds when it redelivers an event the app did not ack in time."""
    return {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": reason}


def event_body(
    event: dict[str, Any],
    event_id: str,
    team_id: str = "T1",
    api_app_id: str = "A1",
    authorizations: list[dict[str, Any]] | None = None,
) -> str:
    """An Events API `event_callback` body, as JSON text (sign exactly this string)."""
    event_time = int(float(event.get("event_ts") or event.get("ts") or time.time()))
    payload = {
        "token": "legacy-verification-token",
        "team_id": team_id,
        "context_team_id": team_id,
        "api_app_id": api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": event_time,
        "authorizations": (
            authorizations
            if authorizations is not None
            else [dict(a) for a in DEFAULT_AUTHORIZATIONS]
        ),
        "is_ext_shared_channel": False,
        "event_context": f"4-fake-{event_id}",
    }
    return json.dumps(payload, ensure_ascii=False)


def url_verification_body(challenge: str) -> str:
    """The handshake Slack sends when the Request URL is configured."""
    return json.dumps(
        {"token": "legacy-verification-token", "challenge": challenge, "type": "url_verification"}
    )


def slash_body(
    command: str = "/kotae",
    text: str = "",
    user_id: str = "U1",
    channel_id: str = "C1",
    response_url: str = DEFAULT_RESPONSE_URL,
    team_id: str = "T1",
    trigger_id: str = "1.2.fake-trigger",
) -> str:
    """A slash command body, form-urlencoded (content type `application/x-www-form-urlencoded`).
    Point `response_url` at `FakeSlackAPI.response_url()` to capture `respond()` calls."""
    return urlencode(
        {
            "token": "legacy-verification-token",
            "team_id": team_id,
            "team_domain": "kotae-test",
            "channel_id": channel_id,
            "channel_name": "general",
            "user_id": user_id,
            "user_name": user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": "A1",
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id,
        }
    )


def action_body(payload: dict[str, Any]) -> str:
    """An interactivity body (block_actions, view_submission): `payload=<json>` form-encoded."""
    return urlencode({"payload": json.dumps(payload, ensure_ascii=False)})


def post_signed(
    url: str,
    body: str,
    secret: str,
    content_type: str = "application/json",
    extra_headers: dict[str, str] | None = None,
    timestamp: int | None = None,
    timeout: float = 10.0,
) -> tuple[int, str, float]:
    """POST `body` signed with `secret`; returns (HTTP status, response text, elapsed seconds).

    Non-2xx statuses are returned, not raised, so tests can assert a 401 for a bad signature.
    Elapsed time lets tests check the app acks within Slack's 3-second limit.
    """
    headers = {"Content-Type": content_type, **sign(secret, body, timestamp)}
    headers.update(extra_headers or {})
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    started = time.monotonic()
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            text = response.read().decode("utf-8", errors="replace")
            status = int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            text = error.read().decode("utf-8", errors="replace")
        status = int(error.code)
    return status, text, time.monotonic() - started
