"""What every fake server shares: one daemon thread serving on an ephemeral 127.0.0.1 port,
`start()` / `stop()` / `port`, and `with Fake() as fake:`, which always stops it."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

logger = logging.getLogger(__name__)


class BackgroundServer:
    """A server object run by `serve_forever` in a daemon thread.

    Subclasses build the (already bound) server in `_new_server()`; `_serve_forever` and
    `_shut_down` default to the `serve_forever()` / `shutdown()` pair that both `socketserver`
    and `websockets.sync.server` offer. `start()` is idempotent and a stopped fake can start
    again (on a new port). Hook names avoid the fakes' own attributes (`_open`, `_threads`).
    """

    thread_name = "fake-server"

    def __init__(self) -> None:
        self._server: Any = None
        self._serving_thread: threading.Thread | None = None

    def _new_server(self) -> Any:
        """A new server, bound and listening, not yet serving."""
        raise NotImplementedError

    def _serve_forever(self, server: Any) -> None:
        server.serve_forever()

    def _shut_down(self, server: Any) -> None:
        """Stop serving and release the socket; the serving thread ends soon after."""
        server.shutdown()

    def start(self) -> Self:
        if self._server is None:
            self._server = self._new_server()
            self._serving_thread = threading.Thread(
                target=self._serve_forever, args=(self._server,), name=self.thread_name,
                daemon=True)
            self._serving_thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._shut_down(self._server)
        if self._serving_thread is not None:
            self._serving_thread.join(timeout=5)
        self._server = None
        self._serving_thread = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._server.socket.getsockname()[1])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class FakeHTTPServer(ThreadingHTTPServer):
    """A stdlib HTTP server on an ephemeral 127.0.0.1 port whose handlers reach their fake as
    `self.server.fake`; a client hanging up mid-reply is logged, not printed as a traceback."""

    daemon_threads = True

    def __init__(self, fake: Any, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.fake = fake

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("%s: error while serving %s", type(self.fake).__name__, client_address,
                     exc_info=True)


class BackgroundHTTPServer(BackgroundServer):
    """A `BackgroundServer` over a `FakeHTTPServer`: polls for shutdown every 50 ms, and closes
    its listening socket on stop."""

    def _serve_forever(self, server: Any) -> None:
        server.serve_forever(poll_interval=0.05)

    def _shut_down(self, server: Any) -> None:
        server.shutdown()
        server.server_close()
