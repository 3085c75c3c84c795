"""Running the app: HTTP mode behind waitress (a production WSGI server: threaded, binds where
told, stoppable — unlike Bolt's development `App.start()`), or Socket Mode."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from slack_bolt import App

from bot.inbound import SlackRequests

logger = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"

Health = Callable[[], dict[str, Any]]
StartResponse = Callable[..., Any]


def make_wsgi_app(app: App, health: Health, signing_secret: str | None = None
                  ) -> Callable[[dict, StartResponse], Iterable[bytes]]:
    """`signing_secret` (the app's): see `SlackRequests`."""
    slack = SlackRequests(app, EVENTS_PATH, signing_secret)

    def wsgi(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        if path == EVENTS_PATH and method == "POST":
            return slack(environ, start_response)
        if path == HEALTH_PATH and method == "GET":
            try:
                payload, status = {"ok": True, **health()}, "200 OK"
            except Exception as error:  # health must answer, even when the index is broken
                payload, status = {"ok": False, "error": str(error)}, "503 Service Unavailable"
            body = json.dumps(payload, ensure_ascii=False).encode()
            start_response(status, [("Content-Type", "application/json"),
                                    ("Content-Length", str(len(body)))])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]

    return wsgi


class HttpServer:
    """waitress on host:port; `port=0` picks a free one (see `.port`)."""

    def __init__(self, app: App, health: Health, host: str, port: int, threads: int, *,
                 signing_secret: str | None = None) -> None:
        from waitress.server import create_server

        self._server = create_server(make_wsgi_app(app, health, signing_secret), host=host,
                                     port=port, threads=threads, ident="kotae")
        self.host = host
        self.port = int(self._server.effective_port)  # type: ignore[union-attr]
        self._thread: threading.Thread | None = None
        self._stopping = False

    def serve_forever(self) -> None:
        logger.info("listening on http://%s:%d%s", self.host, self.port, EVENTS_PATH)
        try:
            self._server.run()
        except OSError:
            if not self._stopping:  # closing the socket under a running loop ends it this way
                raise

    def start(self) -> HttpServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True,
                                        name="kotae-http")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._server.close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def socket_mode_handler(app: App, app_token: str) -> Any:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    return SocketModeHandler(app, app_token=app_token)
