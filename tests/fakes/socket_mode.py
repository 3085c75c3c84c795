"""A fake Slack Socket Mode websocket endpoint on 127.0.0.1.

Why: Socket Mode is how the bot runs without a public URL, and its contract is easy to break —
every envelope must be acked with its `envelope_id` within 3 seconds, and redeliveries carry
`retry_attempt`/`retry_reason`. This server speaks the real protocol (`hello`, envelopes,
`disconnect`) so `slack_sdk`'s and Bolt's own Socket Mode clients run against it unchanged.

Give `url` to `FakeSlackAPI.socket_mode_url`: the client gets it from `apps.connections.open`.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any, Literal

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from tests.fakes.lifecycle import BackgroundServer

logger = logging.getLogger(__name__)

EnvelopeType = Literal["events_api", "slash_commands", "interactive"]


class FakeSocketModeServer(BackgroundServer):
    """Slack's Socket Mode server side; context manager or `start()`/`stop()`."""

    thread_name = "fake-socket-mode"

    def __init__(self, app_id: str = "A1") -> None:
        super().__init__()
        self.app_id = app_id
        self._lock = threading.Condition()
        self._open: list[ServerConnection] = []
        self._retiring: list[ServerConnection] = []
        self._connection_count = 0
        self._received: list[dict[str, Any]] = []
        self._acks: dict[str, dict[str, Any]] = {}

    # --- lifecycle -------------------------------------------------------------------------

    def _new_server(self) -> Server:
        # No server pings (the client pings us) and a short close timeout keep teardown fast.
        return serve(self._handle, "127.0.0.1", 0, ping_interval=None, close_timeout=0.5)

    @property
    def url(self) -> str:
        """A `ws://` URL shaped like the `wss://wss-primary.slack.com/link/?ticket=...` Slack
        issues; slack_sdk's built-in client uses plain TCP for any port other than 443."""
        return f"ws://127.0.0.1:{self.port}/link/?ticket=fake-ticket&app_id={self.app_id}"

    # --- connection handling ---------------------------------------------------------------

    def _handle(self, connection: ServerConnection) -> None:
        hello = {
            "type": "hello",
            "num_connections": 1,
            "debug_info": {
                "host": "applink-fake",
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": self.app_id},
        }
        connection.send(json.dumps(hello))
        with self._lock:
            self._open.append(connection)
            self._connection_count += 1
            retiring, self._retiring = self._retiring, []
            self._lock.notify_all()
        for old in retiring:
            # Slack closes a connection it sent `disconnect` on once the client has a new one.
            threading.Thread(target=old.close, name="fake-socket-mode-retire", daemon=True).start()
        try:
            for raw in connection:
                self._on_message(raw)
        except ConnectionClosed:
            logger.debug("fake socket mode: client connection closed")
        finally:
            with self._lock:
                self._open.remove(connection)
                self._lock.notify_all()

    def _on_message(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            logger.debug("fake socket mode: ignoring non-JSON frame")
            return
        if not isinstance(message, dict):
            return
        with self._lock:
            self._received.append(message)
            envelope_id = message.get("envelope_id")
            if isinstance(envelope_id, str):
                self._acks[envelope_id] = message
            self._lock.notify_all()

    # --- driving the client ----------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        """How many connections were opened so far (reconnects count)."""
        with self._lock:
            return self._connection_count

    def wait_for_connection(self, count: int = 1, timeout: float = 5.0) -> None:
        """Block until the `count`-th connection has been greeted with `hello`."""
        with self._lock:
            if not self._lock.wait_for(
                lambda: self._connection_count >= count and bool(self._open), timeout
            ):
                raise AssertionError(
                    f"expected {count} Socket Mode connection(s) within {timeout}s, "
                    f"got {self._connection_count}"
                )

    def send_envelope(
        self,
        type: EnvelopeType,
        payload: dict[str, Any],
        envelope_id: str | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
        accepts_response_payload: bool | None = None,
        timeout: float = 5.0,
    ) -> str:
        """Push an envelope to the newest open connection (waiting for one) and return its id.

        As Slack does, `accepts_response_payload` defaults to True except for `events_api`.
        """
        envelope_id = envelope_id or str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": type,
            "payload": payload,
            "accepts_response_payload": (
                type != "events_api"
                if accepts_response_payload is None
                else accepts_response_payload
            ),
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason,
        }
        self._send(envelope, timeout)
        return envelope_id

    def send_disconnect(self, reason: str = "refresh_requested", timeout: float = 5.0) -> None:
        """Ask the client to reconnect, as Slack does every few hours; the old connection is
        closed as soon as the client opens a new one."""
        connection = self._send(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}},
            timeout,
        )
        with self._lock:
            self._retiring.append(connection)

    def close_connections(self) -> None:
        """Close every open connection from the server side (code 1001, going away).

        Also the quick way to tear down slack_sdk's built-in client: its `close()` otherwise
        waits for a blocked socket read to time out (about 3 s). Turn its auto-reconnect off
        first (`client.auto_reconnect_enabled = False`) unless a reconnect is what you test.
        """
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            connection.close()

    def _send(self, message: dict[str, Any], timeout: float) -> ServerConnection:
        with self._lock:
            if not self._lock.wait_for(lambda: bool(self._open), timeout):
                raise AssertionError(f"no Socket Mode client connected within {timeout}s")
            connection = self._open[-1]
        connection.send(json.dumps(message, ensure_ascii=False))
        return connection

    # --- inspection ------------------------------------------------------------------------

    @property
    def received(self) -> list[dict[str, Any]]:
        """Every JSON message the client sent, oldest first."""
        with self._lock:
            return list(self._received)

    def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The client's ack for `envelope_id` (with its `payload`, if it sent one)."""
        with self._lock:
            if not self._lock.wait_for(lambda: envelope_id in self._acks, timeout):
                raise AssertionError(f"envelope {envelope_id} was not acked within {timeout}s")
            return dict(self._acks[envelope_id])

    def acked(self, envelope_id: str) -> bool:
        with self._lock:
            return envelope_id in self._acks
