"""A fake OpenAI-compatible chat completions server on 127.0.0.1.

Why: the real API is unreachable from tests, and mocking the `openai` or LangChain client would
hide exactly the bugs we care about (wrong base_url, missing key, stream parsing, timeouts,
error statuses). This server speaks the real wire format — `chat.completion` JSON, SSE
`chat.completion.chunk` streams ending in `data: [DONE]`, and OpenAI's error envelope — so the
unmodified clients run against it.

Scripting, in order of precedence: replies queued with `push()` (one per request, FIFO), then
the `responder` callable, then the default echo answer.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.lifecycle import BackgroundHTTPServer, FakeHTTPServer

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"
CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})

# The (type, code) pairs the real API puts in its error envelope for each status.
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", None),
}

# ASCII runs stay whole (English streams word by word); every other non-space character is its
# own piece (Japanese streams character by character). Leading whitespace rides with its piece.
_PIECE = re.compile(r"\s*[!-~]+|\s*[^\s!-~]|\s+\Z")


@dataclass(frozen=True)
class Reply:
    """What the fake answers to one request.

    `status` >= 400 sends an OpenAI error body instead of a completion (with `retry-after: 0`
    on 429 so clients that do retry stay fast). `delay_s` sleeps before any byte is sent, for
    client timeout tests; `chunk_delay_s` sleeps between streamed chunks. `fail_after_chunks`
    drops a stream's connection after that many content chunks (before the finish chunk at the
    latest), as a dying upstream does.
    """

    text: str = ""
    status: int = 200
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    error_message: str = ""
    error_type: str | None = None
    error_code: str | None = None
    finish_reason: str = "stop"
    fail_after_chunks: int | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it; header names are lower-cased.

    `headers` is left out of repr so an assertion failure never prints the Authorization value.
    """

    method: str
    path: str
    headers: dict[str, str] = field(repr=False)
    json: dict[str, Any] | None

    @property
    def api_key(self) -> str | None:
        """The bearer token the client sent, for asserting that a key was configured."""
        auth = self.headers.get("authorization", "")
        return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.json or {}).get("messages", []))


Responder = Callable[[dict[str, Any]], Reply]


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def echo_responder(request_json: dict[str, Any]) -> Reply:
    """Default answer: deterministic, and shows which question reached the model."""
    user_messages = [m for m in request_json.get("messages", []) if m.get("role") == "user"]
    question = message_text(user_messages[-1]) if user_messages else ""
    return Reply(text=f"Echo: {question}")


def split_pieces(text: str) -> list[str]:
    """Split an answer into stream pieces; `"".join(split_pieces(t)) == t` always holds."""
    return _PIECE.findall(text)


def _count_tokens(text: str) -> int:
    """A stand-in tokenizer: deterministic and roughly proportional to length."""
    return len(split_pieces(text))


class _Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # small SSE writes must not wait ~40 ms for delayed ACKs
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib writes to stderr; the request line holds no secret, headers are not logged.
        logger.debug("fake openai: " + format, *args)

    def do_GET(self) -> None:
        self._record(None)
        self._send_error(Reply(status=404, error_message=f"Unknown request URL: GET {self.path}"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self._record(body if isinstance(body, dict) else None)
        fake = self.server.fake

        path = self.path.split("?", 1)[0]
        if path not in CHAT_PATHS:
            self._send_error(Reply(status=404, error_message=f"Unknown request URL: POST {path}"))
            return
        if not isinstance(body, dict):
            self._send_error(
                Reply(status=400, error_message="We could not parse the JSON body of your request.")
            )
            return
        if (
            fake.api_key is not None
            and self.headers.get("Authorization") != f"Bearer {fake.api_key}"
        ):
            self._send_error(Reply(status=401, error_message="Incorrect API key provided."))
            return

        reply = fake.next_reply(body)
        if reply.delay_s and fake.stopping.wait(reply.delay_s):
            return
        if reply.status >= 400:
            self._send_error(reply)
        elif body.get("stream"):
            self._send_stream(body, reply)
        else:
            self._send_completion(body, reply)

    def _record(self, body: dict[str, Any] | None) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.server.fake.record(RecordedRequest(self.command, self.path, headers, body))

    def _send_json(self, status: int, payload: dict[str, Any], extra: dict[str, str]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, reply: Reply) -> None:
        kind, code = _ERROR_KINDS.get(reply.status, ("server_error", None))
        message = reply.error_message or _phrase(reply.status)
        error = {
            "message": message,
            "type": reply.error_type or kind,
            "param": None,
            "code": reply.error_code if reply.error_code is not None else code,
        }
        extra = {"retry-after": "0"} if reply.status == 429 else {}
        self._send_json(reply.status, {"error": error}, extra)

    def _send_completion(self, request: dict[str, Any], reply: Reply) -> None:
        payload = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model") or DEFAULT_MODEL,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": _usage(request, reply.text),
        }
        self._send_json(200, payload, {})

    def _send_stream(self, request: dict[str, Any], reply: Reply) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        self.end_headers()
        fake = self.server.fake
        try:
            for index, event in enumerate(_stream_events(request, reply)):
                # index 0 is the role chunk; content chunks are 1..n.
                if reply.fail_after_chunks is not None and index > reply.fail_after_chunks:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if index and reply.chunk_delay_s and fake.stopping.wait(reply.chunk_delay_s):
                    return
                self._write_chunk(event.encode("utf-8"))
            self._write_chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout, or a cancelled stream): nothing left to tell it.
            logger.debug("fake openai: client closed the stream early")
            self.close_connection = True

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode("ascii") + data + b"\r\n")
        self.wfile.flush()


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _usage(request: dict[str, Any], answer: str) -> dict[str, int]:
    prompt = sum(_count_tokens(message_text(m)) for m in request.get("messages", []))
    completion = _count_tokens(answer)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _stream_events(request: dict[str, Any], reply: Reply) -> Iterator[str]:
    """SSE events exactly as the API sends them: role, content pieces, finish, usage, [DONE]."""
    include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": request.get("model") or DEFAULT_MODEL,
        "system_fingerprint": "fp_fake",
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        payload = {**base, "choices": [choice]}
        if include_usage:
            payload["usage"] = None
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in split_pieces(reply.text):
        yield chunk({"content": piece})
    yield chunk({}, reply.finish_reason)
    if include_usage:
        usage = {**base, "choices": [], "usage": _usage(request, reply.text)}
        yield f"data: {json.dumps(usage, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"


class _Server(FakeHTTPServer):
    """Tracks open connections, so `stop()` can drop keep-alive ones (see close_open_sockets)."""

    def __init__(self, fake: FakeOpenAIServer) -> None:
        super().__init__(fake, _Handler)
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_open_sockets(self) -> None:
        """Drop keep-alive connections so no handler thread outlives the fake."""
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                logger.debug("fake openai: socket already closed")


class FakeOpenAIServer(BackgroundHTTPServer):
    """An OpenAI-compatible `/v1/chat/completions` endpoint on an ephemeral 127.0.0.1 port.

    Use as a context manager, or call `start()`/`stop()`. If `api_key` is given, requests that
    do not carry `Authorization: Bearer <api_key>` get the real 401 `invalid_api_key` error.
    """

    thread_name = "fake-openai"

    def __init__(self, responder: Responder | None = None, *, api_key: str | None = None) -> None:
        super().__init__()
        self.responder: Responder = responder or echo_responder
        self.api_key = api_key
        self.stopping = threading.Event()
        self._lock = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._queue: deque[Reply] = deque()

    # --- lifecycle -------------------------------------------------------------------------

    def _new_server(self) -> _Server:
        self.stopping.clear()
        return _Server(self)

    def _shut_down(self, server: _Server) -> None:
        self.stopping.set()  # wakes handlers sleeping in delay_s / chunk_delay_s
        server.shutdown()
        server.close_open_sockets()
        server.server_close()

    @property
    def base_url(self) -> str:
        """What to pass as `base_url` to `openai.OpenAI` or `ChatOpenAI`."""
        return f"http://127.0.0.1:{self.port}/v1"

    # --- scripting -------------------------------------------------------------------------

    def push(self, *replies: Reply) -> None:
        """Queue replies for the next requests; they win over `responder` until used up."""
        with self._lock:
            self._queue.extend(replies)

    def next_reply(self, request_json: dict[str, Any]) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        return self.responder(request_json)

    # --- inspection ------------------------------------------------------------------------

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, count: int = 1, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until `count` requests arrived (the app calls the model from its own threads)."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._requests) >= count, timeout):
                raise AssertionError(
                    f"expected {count} request(s) to the fake OpenAI server within {timeout}s, "
                    f"got {len(self._requests)}"
                )
            return list(self._requests)
