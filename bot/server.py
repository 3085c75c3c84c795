"""Running the bot: `run_bot` picks Socket Mode (with an app token) or HTTP mode behind waitress
(a production WSGI server: threaded, binds where told, stoppable — unlike Bolt's development
`App.start()`), and serves until Ctrl-C."""

from __future__ import annotations

import functools
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from slack_bolt import App
from slack_sdk import WebClient

from bot.app import create_app, startup_client
from bot.errors import SLACK_CALL_ERRORS, CannotListen, SlackUnavailable
from bot.inbound import SlackRequests
from bot.settings import BotSettings
from bot.stale_progress import StaleProgressSweeper
from retrieval.errors import KotaeError

if TYPE_CHECKING:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from bot.context import BotContext
    from bot.reindex import ScheduledRefresh
    from retrieval.service import KotaeService

logger = logging.getLogger(__name__)

HEALTH_KEYS = ("index_version", "chunks", "documents", "embedding_device", "retrieval_mode")

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

        try:
            self._server = create_server(make_wsgi_app(app, health, signing_secret), host=host,
                                         port=port, threads=threads, ident="kotae")
        except OSError as error:  # the port is taken, the address is not this machine's
            raise CannotListen(f"cannot listen on http://{host}:{port}: {error}; set "
                               f"KOTAE_HOST/KOTAE_PORT to an address that is free here"
                               ) from error
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


def socket_mode_handler(app: App, app_token: str) -> SocketModeHandler:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    return SocketModeHandler(app, app_token=app_token)


def run_bot(settings: BotSettings, service: KotaeService, *,
            announce: Callable[[str], object] = logger.info) -> None:
    """`kotae serve` once its settings are checked (a bot token, and an app token or a
    signing secret): serve Slack until Ctrl-C, in Socket Mode when there is an app token,
    else over HTTP on host:port with /healthz. `announce` tells the operator where the bot
    is reachable (the CLI prints it).

    Raises, before serving, a KotaeError that says what to fix: SlackUnavailable (Slack
    cannot be reached, or refuses a token), CannotListen (HTTP mode: the port),
    PromptInvalid (a broken KOTAE_PROMPTS_DIR), or RedisUnavailable (KOTAE_REDIS_URL set and
    Redis not answering: replicas must not start without the state they share).
    """
    service.check_answer_setup()  # a broken custom prompt stops here, not at a question
    app, ctx = create_app(settings, service)  # Slack unreachable, or the token refused: stop
    threading.Thread(target=warm_up, args=(service,), daemon=True, name="kotae-warm-up").start()
    if ctx.reindex.notes is not None:  # a reindex whose process died: its message says so
        StaleProgressSweeper(ctx.reindex.notes, app.client,
                             settings.reindex_stale_after_s).start()
    refresh = None
    if settings.reindex_interval:  # through the index lock: one replica refreshes at a time
        from bot.reindex import ScheduledRefresh

        refresh = ScheduledRefresh(service.reindex, settings.reindex_interval, app.client,
                                   settings.admin_channel, access=service.access,
                                   check_access=service.check_access).start()
    if threading.current_thread() is threading.main_thread():
        # a service manager (docker stop, systemd, Kubernetes) stops it with SIGTERM: the
        # same clean stop as Ctrl-C, rather than dying with answers half written
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    if settings.slack_app_token is not None:
        _serve_socket_mode(app, settings.slack_app_token.get_secret_value(),
                           settings.slack_api_url, announce)
    else:
        secret = settings.slack_signing_secret
        server = HttpServer(app, functools.partial(health_report, service), settings.host,
                            settings.port, settings.http_threads,
                            signing_secret=secret.get_secret_value() if secret else None)
        announce(f"kotae: listening on http://{settings.host}:{server.port}{EVENTS_PATH}")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            server.stop()
    try:
        drain(ctx, settings.shutdown_grace_s, announce, refresh)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now
        announce("kotae: stopped without waiting")


def drain(ctx: BotContext, grace_s: float, announce: Callable[[str], object],
          refresh: ScheduledRefresh | None = None) -> None:
    """After the last event was taken: answers in flight get up to `grace_s` to finish (the
    rest get an apology in place of their answer, the queued ones are told to ask again), a
    running reindex stops and its message says so, a scheduled refresh stops (nothing
    published, its lock released). Then `kotae serve` returns and exits."""
    answering = ctx.answerer.queue.busy
    reindexing = ctx.reindex.running is not None
    if answering or reindexing:
        waits = [f"{answering} answer(s)"] * bool(answering) + ["a reindex"] * reindexing
        announce(f"kotae: stopping; waiting up to {grace_s:g}s for {' and '.join(waits)}")
    deadline = time.monotonic() + grace_s

    def stop_indexing() -> None:
        if refresh is not None:
            refresh.stop(0)  # at once: a round under way ends at its next batch
        ctx.reindex.drain(grace_s)
        if refresh is not None:  # then wait for that round
            refresh.stop(max(0.0, deadline - time.monotonic()))

    reindex = threading.Thread(target=stop_indexing, daemon=True, name="kotae-stop-indexing")
    reindex.start()
    cut_short = ctx.answerer.drain(grace_s)
    reindex.join(max(0.0, deadline - time.monotonic()) + 5)  # +5: its own last message
    if cut_short:
        announce(f"kotae: {cut_short} answer(s) did not finish in time; their askers were "
                 "told to ask again")
    announce("kotae: stopped")


def _serve_socket_mode(app: App, app_token: str, api_url: str,
                       announce: Callable[[str], object]) -> None:
    announce("kotae: connecting to Slack in Socket Mode")
    check_app_token(app.client, app_token, api_url)
    handler = socket_mode_handler(app, app_token)
    try:
        handler.connect()
    except SLACK_CALL_ERRORS as error:
        raise SlackUnavailable.from_error(error, api_url, "SLACK_APP_TOKEN") from error
    try:
        threading.Event().wait()  # the handler's threads answer; this one waits for Ctrl-C
    except KeyboardInterrupt:
        handler.close()


def check_app_token(client: WebClient, app_token: str, api_url: str) -> None:
    """Ask Slack for a Socket Mode URL once, so that a refused SLACK_APP_TOKEN (or no route to
    Slack) is one line here rather than the handler's log and traceback."""
    try:
        startup_client(client).apps_connections_open(app_token=app_token)
    except SLACK_CALL_ERRORS as error:
        raise SlackUnavailable.from_error(error, api_url, "SLACK_APP_TOKEN") from error


def health_report(service: KotaeService) -> dict[str, Any]:
    """What /healthz shows besides `ok`."""
    status = service.status()
    return {key: status[key] for key in HEALTH_KEYS}


def warm_up(service: KotaeService) -> None:
    """Load the model and the index before the first question (the answer chain is already
    built: `run_bot` checks it before starting); a failure is logged, and answered in Slack."""
    try:
        _ = service.embeddings.flag_model
        service.index.store()
    except KotaeError as error:
        logger.error("%s", error)
