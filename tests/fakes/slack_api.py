"""A fake Slack Web API on 127.0.0.1, for `slack_sdk.WebClient(base_url=fake.base_url)`.

Why: Slack is unreachable from tests, and the bot must be exercised through the real
`slack_sdk`/Bolt clients. The fake accepts what WebClient sends (POST form, JSON or multipart
bodies, GET query strings, `Authorization: Bearer ...`), records every call, and answers with
payloads shaped like Slack's. It keeps a small message store so that what the bot posts shows
up in `conversations.replies`, as it would in a real thread.

Slack reports API errors as HTTP 200 with `{"ok": false, "error": ...}`; `fail()` does the same.
"""

from __future__ import annotations

import base64
import dataclasses
import email.parser
import email.policy
import itertools
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.lifecycle import BackgroundHTTPServer, FakeHTTPServer

logger = logging.getLogger(__name__)

BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
TEAM_ID = "T1"
BOT_NAME = "kotae"

# The method name under which POSTs to a `response_url()` are recorded.
RESPONSE_URL = "response_url"
# ... and posts beyond Slack's limit of RESPONSE_URL_USES per URL, answered 404 `used_url`.
RESPONSE_URL_REFUSED = "response_url_refused"
RESPONSE_URL_USES = 5
# A `fail()` status: the connection is closed without an answer, as a network failure does.
DROP_CONNECTION = 0


@dataclass(frozen=True)
class SlackCall:
    """One Web API call as received. Form values stay strings, as on the wire.

    `headers` (lower-cased names) is left out of repr so assertion output never shows a token.
    """

    method: str
    params: dict[str, Any]
    headers: dict[str, str] = field(repr=False)
    received_at: float = field(default_factory=time.monotonic, repr=False, compare=False)

    @property
    def token(self) -> str | None:
        """The token used: the bearer header, or a `token` param as older clients send it."""
        auth = self.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            return auth[len("Bearer ") :]
        token = self.params.get("token")
        return str(token) if token is not None else None

    @property
    def text(self) -> str | None:
        value = self.params.get("text")
        return None if value is None else str(value)

    @property
    def blocks(self) -> list[dict[str, Any]] | None:
        """Blocks decoded whether they came as JSON (list) or as a form field (JSON string)."""
        return _json_value(self.params.get("blocks"))


@dataclass(frozen=True)
class _Failure:
    error: str
    status: int
    remaining: int | None  # None: until cleared
    retry_after: int = 0
    when: Callable[[SlackCall], bool] | None = None  # None: every call of the method


def _json_value(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("fake slack: " + format, *args)

    def do_GET(self) -> None:
        self._handle(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._handle(self.rfile.read(length) if length else b"")

    def _handle(self, raw: bytes) -> None:
        url = urlsplit(self.path)
        params: dict[str, Any] = _flatten(parse_qs(url.query, keep_blank_values=True))
        params.update(_parse_body(self.headers.get("Content-Type", ""), raw))
        headers = {name.lower(): value for name, value in self.headers.items()}
        fake = self.server.fake

        if url.path.startswith("/api/"):
            method = url.path[len("/api/") :].strip("/")
            status, payload, extra = fake.handle(SlackCall(method, params, headers))
            if status == DROP_CONNECTION:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            content_type = "application/json; charset=utf-8"
        elif url.path.startswith("/response_url/"):
            if fake.use_response_url(url.path):
                fake.record(SlackCall(RESPONSE_URL, params, headers))
                status, body = 200, b"ok"
            else:
                fake.record(SlackCall(RESPONSE_URL_REFUSED, params, headers))
                status, body = 404, b"used_url"
            extra, content_type = {}, "text/html"
        else:
            status, body, extra, content_type = 404, b"Not Found", {}, "text/plain"

        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _flatten(query: dict[str, list[str]]) -> dict[str, Any]:
    return {key: values[-1] for key, values in query.items()}


def _parse_body(content_type: str, raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/json":
        parsed = json.loads(raw)
        return parsed if isinstance(parsed, dict) else {}
    if kind == "multipart/form-data":
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
        )
        fields: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            is_file = part.get_filename() is not None
            fields[str(name)] = payload if is_file else payload.decode("utf-8")
        return fields
    return _flatten(parse_qs(raw.decode("utf-8"), keep_blank_values=True))


MethodHandler = Callable[[SlackCall], dict[str, Any]]


class FakeSlackAPI(BackgroundHTTPServer):
    """Slack's Web API on an ephemeral 127.0.0.1 port; context manager or `start()`/`stop()`."""

    thread_name = "fake-slack-api"

    def __init__(self) -> None:
        super().__init__()
        self.socket_mode_url: str | None = None
        self._lock = threading.Condition()
        self._calls: list[SlackCall] = []
        self._failures: dict[str, _Failure] = {}
        self._threads: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._users: dict[str, dict[str, Any]] = {}
        # membership, for access control: channel id -> (name, members), group id -> users
        self._channels: dict[str, tuple[str, list[str]]] = {}
        self._usergroups: dict[str, list[str]] = {}
        self._stopped_streams: set[tuple[str, str]] = set()
        self._response_url_uses: dict[str, int] = {}
        # The most conversations.replies returns per page whatever `limit` asks: 1,000 for most
        # apps, 15 for commercially distributed non-Marketplace apps (since 2025).
        self.replies_page_max = 1000
        self._ts_counter = itertools.count(1)
        self._handlers: dict[str, MethodHandler] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.delete": self._delete,
            "chat.postEphemeral": lambda call: {"ok": True, "message_ts": self._next_ts()},
            "chat.startStream": self._start_stream,
            "chat.appendStream": self._append_stream,
            "chat.stopStream": self._stop_stream,
            "conversations.replies": self._replies,
            "users.info": self._users_info,
            "conversations.list": self._conversations_list,
            "conversations.members": self._conversations_members,
            "usergroups.users.list": self._usergroup_users,
            "apps.connections.open": self._connections_open,
        }

    # --- lifecycle -------------------------------------------------------------------------

    def _new_server(self) -> FakeHTTPServer:
        return FakeHTTPServer(self, _Handler)

    @property
    def base_url(self) -> str:
        """For `WebClient(base_url=...)`; ends with "/api/" as slack_sdk requires."""
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self, name: str = "1") -> str:
        """A URL to use as a slash command's `response_url`; POSTs to it are recorded as calls
        of method `RESPONSE_URL` ("response_url") with the JSON body as params. Like Slack, it
        takes RESPONSE_URL_USES posts; later ones get 404 and are recorded as
        `RESPONSE_URL_REFUSED`."""
        return f"http://127.0.0.1:{self.port}/response_url/{name}"

    def use_response_url(self, path: str) -> bool:
        """Count one use of a response URL; False once it is used up."""
        with self._lock:
            used = self._response_url_uses.get(path, 0)
            if used >= RESPONSE_URL_USES:
                return False
            self._response_url_uses[path] = used + 1
            return True

    # --- scripting -------------------------------------------------------------------------

    def set_thread(self, channel: str, thread_ts: str, messages: list[dict[str, Any]]) -> None:
        """What `conversations.replies(channel, ts=thread_ts)` returns; messages without a `ts`
        get one, and each gets `thread_ts` as Slack sets it."""
        with self._lock:
            stored = []
            for message in messages:
                item = {"type": "message", **message}
                item.setdefault("ts", thread_ts if not stored else self._next_ts())
                item.setdefault("thread_ts", thread_ts)
                stored.append(item)
            self._threads[(channel, thread_ts)] = stored

    def set_user(self, user_id: str, is_admin: bool = False, is_owner: bool = False) -> None:
        """Users not set here exist too, as regular (non-admin) members."""
        with self._lock:
            self._users[user_id] = _user(user_id, is_admin=is_admin, is_owner=is_owner)

    def set_channel(self, channel_id: str, name: str, members: list[str]) -> None:
        """A channel `conversations.list` names and `conversations.members` lists."""
        with self._lock:
            self._channels[channel_id] = (name, list(members))

    def set_usergroup(self, group_id: str, users: list[str]) -> None:
        """What `usergroups.users.list(usergroup=group_id)` returns."""
        with self._lock:
            self._usergroups[group_id] = list(users)

    def fail(
        self,
        method: str,
        error: str = "not_allowed_token_type",
        *,
        times: int | None = None,
        status: int = 200,
        retry_after: int = 0,
        when: Callable[[SlackCall], bool] | None = None,
    ) -> None:
        """Make `method` answer `{"ok": false, "error": error}` — for `times` calls, or until
        `clear_failures()`. `status=429` answers like Slack's rate limiter, with a
        `Retry-After: <retry_after>` header; `status=DROP_CONNECTION` closes the connection
        without any answer (slack_sdk retries that once by itself). `when` limits the failure
        to the calls it accepts (e.g. only those carrying blocks); other calls succeed and do
        not count."""
        with self._lock:
            self._failures[method] = _Failure(error, status, times, retry_after, when)

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    # --- inspection ------------------------------------------------------------------------

    @property
    def all_calls(self) -> list[SlackCall]:
        with self._lock:
            return list(self._calls)

    def calls(self, method: str) -> list[SlackCall]:
        with self._lock:
            return [call for call in self._calls if call.method == method]

    def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[SlackCall]:
        """Block until `count` calls of `method` arrived; the bot answers from worker threads."""
        with self._lock:
            arrived = self._lock.wait_for(lambda: len(self._calls_of(method)) >= count, timeout)
            if not arrived:
                seen = sorted({call.method for call in self._calls})
                raise AssertionError(
                    f"expected {count} call(s) of {method} within {timeout}s, "
                    f"got {len(self._calls_of(method))}; methods called: {seen}"
                )
            return self._calls_of(method)

    def thread_messages(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """The thread as the fake now holds it, including what the bot posted or streamed."""
        with self._lock:
            return [dict(message) for message in self._threads.get((channel, thread_ts), [])]

    # --- request handling ------------------------------------------------------------------

    def record(self, call: SlackCall) -> None:
        with self._lock:
            self._calls.append(call)
            self._lock.notify_all()

    def handle(self, call: SlackCall) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Record the call and compute (HTTP status, JSON payload, extra headers)."""
        self.record(call)
        with self._lock:
            if call.token is None:
                return 200, {"ok": False, "error": "not_authed"}, {}
            failure = self._failures.get(call.method)
            if failure is not None and (failure.when is None or failure.when(call)):
                if failure.remaining is not None:
                    left = failure.remaining - 1
                    if left > 0:
                        self._failures[call.method] = dataclasses.replace(failure,
                                                                          remaining=left)
                    else:
                        del self._failures[call.method]
                extra = ({"Retry-After": str(failure.retry_after)} if failure.status == 429
                         else {})
                return failure.status, {"ok": False, "error": failure.error}, extra
            handler = self._handlers.get(call.method)
            payload = handler(call) if handler else {"ok": True}
        return 200, payload, {}

    def _calls_of(self, method: str) -> list[SlackCall]:
        return [call for call in self._calls if call.method == method]

    def _next_ts(self) -> str:
        micros = next(self._ts_counter) * 100
        return f"{1_700_000_000 + micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _find(self, channel: str, ts: str) -> dict[str, Any] | None:
        for (thread_channel, _), messages in self._threads.items():
            if thread_channel != channel:
                continue
            for message in messages:
                if message.get("ts") == ts:
                    return message
        return None

    def _store(self, channel: str, message: dict[str, Any]) -> None:
        thread_ts = message.get("thread_ts") or message["ts"]
        self._threads.setdefault((channel, thread_ts), []).append(message)

    def _bot_message(self, call: SlackCall, ts: str, text: str) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": "A1",
            "team": TEAM_ID,
            "text": text,
            "ts": ts,
        }
        blocks = call.blocks
        if blocks is not None:
            message["blocks"] = blocks
        thread_ts = call.params.get("thread_ts")
        if thread_ts:
            message["thread_ts"] = str(thread_ts)
        return message

    def _auth_test(self, call: SlackCall) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://kotae-test.slack.com/",
            "team": "kotae-test",
            "user": BOT_NAME,
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _post_message(self, call: SlackCall) -> dict[str, Any]:
        channel = str(call.params.get("channel", ""))
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not any(call.params.get(k) for k in ("text", "blocks", "attachments", "markdown_text")):
            return {"ok": False, "error": "no_text"}
        text = call.params.get("text") or call.params.get("markdown_text") or ""
        message = self._bot_message(call, self._next_ts(), str(text))
        self._store(channel, message)
        return {"ok": True, "channel": channel, "ts": message["ts"], "message": dict(message)}

    def _update(self, call: SlackCall) -> dict[str, Any]:
        channel, ts = str(call.params.get("channel", "")), str(call.params.get("ts", ""))
        message = self._find(channel, ts)
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        if "text" in call.params:
            message["text"] = str(call.params["text"])
        if call.blocks is not None:
            message["blocks"] = call.blocks
        return {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "text": message["text"],
            "message": dict(message),
        }

    def _delete(self, call: SlackCall) -> dict[str, Any]:
        channel, ts = str(call.params.get("channel", "")), str(call.params.get("ts", ""))
        for (thread_channel, _), messages in self._threads.items():
            if thread_channel == channel:
                messages[:] = [m for m in messages if m.get("ts") != ts]
        return {"ok": True, "channel": channel, "ts": ts}

    def _start_stream(self, call: SlackCall) -> dict[str, Any]:
        channel = str(call.params.get("channel", ""))
        if not call.params.get("thread_ts"):
            return {"ok": False, "error": "invalid_arguments"}
        message = self._bot_message(call, self._next_ts(), _streamed_text(call))
        self._store(channel, message)
        return {"ok": True, "channel": channel, "ts": message["ts"]}

    def _append_stream(self, call: SlackCall) -> dict[str, Any]:
        channel, ts = str(call.params.get("channel", "")), str(call.params.get("ts", ""))
        message = self._find(channel, ts)
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        if (channel, ts) in self._stopped_streams:
            return {"ok": False, "error": "message_not_in_streaming_state"}
        message["text"] += _streamed_text(call)
        return {"ok": True, "channel": channel, "ts": ts}

    def _stop_stream(self, call: SlackCall) -> dict[str, Any]:
        result = self._append_stream(call)
        if not result["ok"]:
            return result
        self._stopped_streams.add((result["channel"], result["ts"]))
        message = self._find(result["channel"], result["ts"])
        if message is not None and call.blocks:
            # Slack renders stopStream's blocks under the streamed text; they do not replace it.
            streamed = {"type": "markdown", "text": message["text"]}
            message["blocks"] = [*message.get("blocks", [streamed]), *call.blocks]
        return {**result, "message": dict(message or {})}

    def _replies(self, call: SlackCall) -> dict[str, Any]:
        """Oldest first, `limit` per page (Slack's default page is 1,000), continued with the
        opaque `cursor` from `response_metadata.next_cursor` while `has_more`."""
        key = (str(call.params.get("channel", "")), str(call.params.get("ts", "")))
        if key not in self._threads:
            return {"ok": False, "error": "thread_not_found"}
        try:
            limit = min(int(call.params.get("limit") or 1000), self.replies_page_max)
            start = int(base64.b64decode(str(call.params.get("cursor") or "")).decode() or 0)
        except ValueError:
            return {"ok": False, "error": "invalid_cursor"}
        thread = self._threads[key]
        end = start + max(limit, 1)
        has_more = end < len(thread)
        next_cursor = base64.b64encode(str(end).encode()).decode() if has_more else ""
        return {
            "ok": True,
            "messages": [dict(message) for message in thread[start:end]],
            "has_more": has_more,
            "response_metadata": {"next_cursor": next_cursor},
        }

    def _users_info(self, call: SlackCall) -> dict[str, Any]:
        user_id = str(call.params.get("user", ""))
        if not user_id:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": dict(self._users.get(user_id) or _user(user_id))}

    def _conversations_list(self, call: SlackCall) -> dict[str, Any]:
        """One channel a page (so clients must follow `next_cursor`), ids in order set."""
        channels = list(self._channels.items())
        try:
            start = int(base64.b64decode(str(call.params.get("cursor") or "")).decode() or 0)
        except ValueError:
            return {"ok": False, "error": "invalid_cursor"}
        page = channels[start:start + 1]
        more = start + 1 < len(channels)
        return {"ok": True,
                "channels": [{"id": cid, "name": name, "is_channel": True}
                             for cid, (name, _members) in page],
                "response_metadata": {"next_cursor": base64.b64encode(
                    str(start + 1).encode()).decode() if more else ""}}

    def _conversations_members(self, call: SlackCall) -> dict[str, Any]:
        channel = self._channels.get(str(call.params.get("channel", "")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "members": list(channel[1]),
                "response_metadata": {"next_cursor": ""}}

    def _usergroup_users(self, call: SlackCall) -> dict[str, Any]:
        users = self._usergroups.get(str(call.params.get("usergroup", "")))
        if users is None:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(users)}

    def _connections_open(self, call: SlackCall) -> dict[str, Any]:
        if not (call.token or "").startswith("xapp-"):
            return {"ok": False, "error": "not_allowed_token_type"}
        if self.socket_mode_url is None:
            return {"ok": False, "error": "fake_socket_mode_url_not_set"}
        return {"ok": True, "url": self.socket_mode_url}


def _streamed_text(call: SlackCall) -> str:
    """Text a stream call adds: `markdown_text` plus its `markdown_text` chunks, in order."""
    text = str(call.params.get("markdown_text") or "")
    chunks = _json_value(call.params.get("chunks")) or []
    for chunk in chunks if isinstance(chunks, list) else []:
        if isinstance(chunk, dict) and chunk.get("type") == "markdown_text":
            text += str(chunk.get("text", ""))
    return text


def _user(user_id: str, *, is_admin: bool = False, is_owner: bool = False) -> dict[str, Any]:
    return {
        "id": user_id,
        "team_id": TEAM_ID,
        "name": user_id.lower(),
        "real_name": f"User {user_id}",
        "deleted": False,
        "is_bot": False,
        "is_admin": is_admin,
        "is_owner": is_owner,
        "is_primary_owner": False,
        "is_restricted": False,
        "tz": "Asia/Tokyo",
        "profile": {"display_name": user_id.lower(), "real_name": f"User {user_id}"},
    }
