"""Admin-only reindex from Slack: one at a time, progress updated in place, a summary at the end;
and the scheduled refresh of `kotae serve` (KOTAE_REINDEX_INTERVAL).

The bot keeps answering from the served index meanwhile; the new version is switched in
atomically by the indexer and picked up by the running retriever. Both go through the index
lock, so of several replicas refreshing on a schedule only one runs at a time; the others skip.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.periodic import Periodic
from bot.render import escape_mrkdwn, slack_date
from bot.stale_progress import Heartbeat, ProgressNote, ProgressNotes
from retrieval.access import AccessControl, AccessInvalid, Audience
from retrieval.errors import IndexLocked, KotaeError
from retrieval.indexer import IndexProgress, IndexSummary

logger = logging.getLogger(__name__)

Respond = Callable[..., object]  # Bolt's respond(): ephemeral by default
Reindex = Callable[..., IndexSummary]  # KotaeService.reindex


STOPPED_BY_SHUTDOWN = (":warning: This reindex stopped before it finished: kotae was shut down "
                       "(a deploy or a restart). The index serves the last version that was "
                       "finished. Run `/kotae reindex` again: it resumes from the embeddings "
                       "already computed.")


class ReindexStopped(Exception):
    """Raised from the progress callback when the bot stops: the indexer discards the build
    (the served version stays; the embedding cache keeps every finished batch)."""


@dataclass
class RunningReindex:
    user: str
    full: bool
    started_at: float = field(default_factory=time.time)
    progress: IndexProgress | None = None
    board: ProgressBoard | None = None  # where it reports, once it holds the lock
    heartbeat: Heartbeat | None = None
    done: threading.Event = field(default_factory=threading.Event)


def describe(progress: IndexProgress | None) -> str:
    if progress is None or progress.phase == "scanning":
        return "scanning files…"
    if progress.phase == "embedding":
        eta = f", about {progress.eta_s:.0f}s left" if progress.eta_s is not None else ""
        return (f"embedding {progress.chunks_done}/{progress.chunks_total} chunks "
                f"({progress.files_done}/{progress.files_total} files{eta})")
    return f"{progress.phase}…"


def _name(source: str) -> str:
    """A file's name as mrkdwn text: a name is data (`<!channel>.md` must not ping)."""
    return escape_mrkdwn(source.rsplit("/", 1)[-1].replace("`", "'"))


def summary_text(summary: IndexSummary, title: str = "Reindex",
                 may_name: Callable[[str], bool] = lambda _source: True) -> str:
    """The summary as posted. Files the channel may not see (access control) are counted,
    never named: a file name can say what a restricted document is about."""
    lines = [
        f":white_check_mark: {title} finished in {summary.seconds:.1f}s — files: "
        f"added {len(summary.added)}, updated {len(summary.updated)}, removed "
        f"{len(summary.removed)}, unchanged {len(summary.unchanged)}, failed "
        f"{len(summary.failed)}; {summary.chunks_total} chunks.",
        f"Now serving index version `{summary.version}`." if summary.switched
        else "Nothing changed; the index stays as it was.",
    ]
    if summary.chunks_embedded:
        lines.append(f"Chunks: embedded {summary.chunks_encoded}, reused {summary.chunks_reused} "
                     "from the embedding cache.")
    failed = [(s, r) for s, r in summary.failed if may_name(s)]
    warned = [(s, w) for s, w in summary.warnings if may_name(s)]
    for source, reason in failed[:10]:
        lines.append(f"• skipped `{_name(source)}`: {escape_mrkdwn(reason)}")
    if len(failed) > 10:
        lines.append(f"• … and {len(failed) - 10} more")
    for source, warning in warned[:5]:
        lines.append(f"• indexed `{_name(source)}` with a warning: {escape_mrkdwn(warning)}")
    if len(warned) > 5:
        lines.append(f"• … and {len(warned) - 5} more warnings")
    unnamed = len(summary.failed) - len(failed) + len(summary.warnings) - len(warned)
    if unnamed:
        lines.append(f"• {unnamed} more skipped or warned files are not named here: this "
                     "channel may not see them (`kotae index` shows them to the operator)")
    return "\n".join(lines)


def names_for(access: AccessControl | None, channel: str | None) -> Callable[[str], bool]:
    """Which file names a summary posted in `channel` may show (all, without access control)."""
    if access is None or not access.enabled:
        return lambda _source: True
    if channel is None:
        return lambda _source: False
    audience = Audience.in_channel(channel)
    return lambda source: access.may_name(source, audience)


def access_note(check_access: Callable[[], None] | None) -> str | None:
    """After a reindex: an access file whose sets no longer match the index stops restricted
    answers, so the admin hears it now rather than from the next asker. No details here (they
    can name restricted paths): `/kotae status` shows them to admins."""
    if check_access is None:
        return None
    try:
        check_access()
    except AccessInvalid:
        return (":warning: The access file does not fit the new index, so restricted answers "
                "are stopped until it is fixed; `/kotae status` says why.")
    return None


class ReindexCoordinator:
    def __init__(self, client: WebClient, reindex: Reindex, admin_user_ids: list[str],
                 workspace_admins_are_admins: bool, update_interval_s: float = 1.0,
                 progress_client: WebClient | None = None, access: AccessControl | None = None,
                 check_access: Callable[[], None] | None = None,
                 notes: ProgressNotes | None = None, heartbeat_s: float = 10.0) -> None:
        self.client = client
        self.notes, self._heartbeat_s = notes, heartbeat_s  # see bot.stale_progress
        self._access, self._check_access = access, check_access
        self.progress_client = progress_client or client  # progress edits: never wait out a 429
        self._reindex = reindex
        self._admins = set(admin_user_ids)
        self._workspace_admins = workspace_admins_are_admins
        self._interval = update_interval_s
        self._lock = threading.Lock()
        self.running: RunningReindex | None = None
        self._stopping = threading.Event()

    def is_admin(self, user: str) -> bool:
        if user in self._admins:
            return True
        if not self._workspace_admins:
            return False
        try:
            info = self.client.users_info(user=user)["user"]
        except SlackApiError as error:
            logger.warning("users.info failed for %s: %s", user, error.response.get("error"))
            return False
        return bool(info.get("is_admin") or info.get("is_owner"))

    def request(self, user: str, channel: str, full: bool, respond: Respond) -> None:
        """Called from a Bolt listener after ack(): checks run off the listener thread, on a
        daemon thread (a reindex must not hold up the bot's exit; `drain` ends it)."""
        threading.Thread(target=self._request, args=(user, channel, full, respond),
                         name="reindex", daemon=True).start()

    def drain(self, timeout_s: float) -> bool:
        """The bot is stopping: a running reindex stops at its next progress report, and
        its message says so; if it has not stopped within `timeout_s`, the message is
        finished here (the process exits under it). True when a reindex was running."""
        self._stopping.set()
        running = self.running
        if running is None:
            return False
        if not running.done.wait(timeout_s):
            if running.board is not None:
                running.board.finish(STOPPED_BY_SHUTDOWN)
            if running.heartbeat is not None:
                running.heartbeat.stop()
        return True

    def _request(self, user: str, channel: str, full: bool, respond: Respond) -> None:
        try:
            self._handle(user, channel, full, respond)
        except Exception:  # runs on an executor: nothing else would ever see this
            logger.exception("reindex request from %s failed", user)

    def _handle(self, user: str, channel: str, full: bool, respond: Respond) -> None:
        if self._stopping.is_set():
            respond(text=":warning: kotae is restarting; run the reindex again in a minute.")
            return
        if not self.is_admin(user):
            logger.warning("reindex refused for non-admin user %s in %s", user, channel)
            respond(text=":no_entry: Only kotae admins can rebuild the index. "
                         "Ask an admin (listed in KOTAE_ADMIN_USER_IDS).")
            return
        with self._lock:
            running = self.running
            if running is None:
                self.running = RunningReindex(user=user, full=full)
        if running is not None:
            respond(text=f":hourglass: A reindex started by <@{running.user}> at "
                         f"{slack_date(running.started_at)} "
                         f"is still running: {describe(running.progress)}")
            return
        try:
            self._run(user, channel, full, respond)
        finally:
            with self._lock:
                mine, self.running = self.running, None
            if mine is not None:
                mine.done.set()  # `drain` waits on it

    def _run(self, user: str, channel: str, full: bool, respond: Respond) -> None:
        logger.info("reindex (full=%s) started by %s", full, user)
        header = f":arrows_counterclockwise: <@{user}> started a {'full ' if full else ''}reindex"
        # The public message goes up only once the indexer holds the lock (its first progress
        # report): when another indexer (e.g. `kotae index` from the CLI) holds it, the admin
        # is told privately who does, and the channel hears nothing.
        board = ProgressBoard(self.client, channel, respond, self.progress_client)
        running = self.running
        if running is not None:
            running.board = board
        last_update = 0.0
        heartbeat: Heartbeat | None = None

        def on_progress(progress: IndexProgress) -> None:
            nonlocal last_update, heartbeat
            if self._stopping.is_set():
                raise ReindexStopped
            if running is not None:
                running.progress = progress
            try:
                if not board.started:
                    board.start(header + "…")
                    last_update = time.monotonic()
                    if board.ts is not None and self.notes is not None:
                        now = time.time()
                        heartbeat = Heartbeat(self.notes, ProgressNote(
                            channel=channel, ts=board.ts, user=user, started_at=now,
                            beat_at=now), self._heartbeat_s).start()
                        if running is not None:
                            running.heartbeat = heartbeat
                elif time.monotonic() - last_update >= self._interval:
                    last_update = time.monotonic()
                    board.progress(f"{header}: {describe(progress)}")
            except Exception:  # progress is best effort; the reindex itself goes on
                logger.exception("reindex progress update failed")

        try:
            board.finish(self._outcome(user, channel, full, on_progress))
        finally:
            if heartbeat is not None:
                heartbeat.stop()

    def _outcome(self, user: str, channel: str, full: bool,
                 on_progress: Callable[[IndexProgress], None]) -> str:
        """The reindex's summary, or why there is none."""
        try:
            summary = self._reindex(full=full, holder=f"Slack user {user}", progress=on_progress)
        except ReindexStopped:
            logger.info("reindex by %s stopped: the bot is stopping", user)
            return STOPPED_BY_SHUTDOWN
        except IndexLocked as error:
            return f":hourglass: {error}"
        except KotaeError as error:
            return f":warning: Reindex failed: {error}"
        except Exception:
            logger.exception("reindex failed")
            return (":warning: Reindex failed on my side; the previous index is still "
                    "being served. Details are in the bot's log.")
        text = summary_text(summary, may_name=names_for(self._access, channel))
        note = access_note(self._check_access)
        return text + (f"\n{note}" if note else "")


class ProgressBoard:
    """Where a reindex reports: a channel message updated in place, or — where the bot cannot
    post — the slash command's response URL.

    Slack accepts at most RESPONSE_URL_USES posts to one response URL (within 30 minutes), so
    progress there is sparse and one use is always kept for the summary. Progress edits go
    through `progress_client`, which skips a rate-limited edit instead of holding up the
    indexer for Retry-After.
    """

    RESPONSE_URL_USES = 5
    RESPONSE_URL_GAP_S = 30.0  # between progress posts through the response URL

    def __init__(self, client: WebClient, channel: str, respond: Respond,
                 progress_client: WebClient | None = None) -> None:
        self.client, self.channel, self.respond = client, channel, respond
        self.progress_client = progress_client or client
        self.ts: str | None = None
        self.started = False
        self.finished = False  # after the summary (or the shutdown notice), nothing more
        self._responses = 0
        self._last_response = 0.0

    def start(self, text: str) -> None:
        self.started = True
        try:
            self.ts = self.client.chat_postMessage(channel=self.channel, text=text)["ts"]
        except SlackApiError as error:
            logger.info("cannot post progress in %s (%s); using the response URL", self.channel,
                        error.response.get("error"))
            self._respond(text)

    def progress(self, text: str) -> None:
        """Best effort: a refused edit of the channel message is skipped (the summary still
        follows), and so is a post when the response URL has no use to spare."""
        if self.finished:
            return
        if self.ts is not None:
            self._update(text, self.progress_client)
            return
        spare = self._responses < self.RESPONSE_URL_USES - 1
        if spare and time.monotonic() - self._last_response >= self.RESPONSE_URL_GAP_S:
            self._respond(text)

    def finish(self, text: str) -> None:
        """Always delivered: the summary (or why there is none); once."""
        if self.finished:
            return
        self.finished = True
        if self.ts is not None and self._update(text, self.client):
            return
        if self._responses >= self.RESPONSE_URL_USES:
            logger.warning("reindex summary could not be delivered: %s", text)
            return
        self._respond(text)

    def _update(self, text: str, client: WebClient) -> bool:
        try:
            client.chat_update(channel=self.channel, ts=self.ts, text=text)
            return True
        except SlackApiError as error:
            logger.info("progress update failed: %s", error.response.get("error"))
            return False

    def _respond(self, text: str) -> None:
        self._responses += 1
        self._last_response = time.monotonic()
        self.respond(text=text, replace_original=self._responses > 1)


class ScheduledRefresh:
    """`kotae serve` refreshing the index every `interval_s` (KOTAE_REINDEX_INTERVAL).

    A refresh is an ordinary incremental reindex: nothing changed means nothing published and
    little more than hashing the files. Another indexer holding the lock (a replica's refresh,
    an admin's `/kotae reindex`, `kotae index`) means this round is skipped. The summary goes to
    the log, and to `channel` (KOTAE_ADMIN_CHANNEL) when a new version was published (or the
    refresh failed).
    """

    HOLDER = "scheduled refresh"

    def __init__(self, reindex: Reindex, interval_s: float, client: WebClient | None = None,
                 channel: str | None = None, access: AccessControl | None = None,
                 check_access: Callable[[], None] | None = None) -> None:
        self._reindex = reindex
        self._access, self._check_access = access, check_access
        self.interval_s = interval_s
        self._client, self._channel = client, channel
        self._task = Periodic(self.run_once, interval_s, name="kotae-scheduled-refresh",
                              failure="scheduled refresh failed; the previous index is still "
                                      "served")

    def start(self) -> ScheduledRefresh:
        self._task.start()
        logger.info("refreshing the index every %.0fs", self.interval_s)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """No more rounds; one under way stops at its next batch (nothing published, the
        lock released, finished batches kept in the cache). Waits up to `timeout_s`."""
        self._task.stop(timeout_s)

    def _check_stop(self, _progress: IndexProgress) -> None:
        if self._task.stopping:
            raise ReindexStopped

    def run_once(self) -> IndexSummary | None:
        """One refresh; None when it was skipped, stopped or failed (said in the log)."""
        try:
            summary = self._reindex(holder=self.HOLDER, progress=self._check_stop)
        except ReindexStopped:
            logger.info("scheduled refresh stopped: the bot is stopping; nothing published")
            return None
        except IndexLocked as error:
            logger.info("scheduled refresh skipped: %s", error)
            return None
        except KotaeError as error:
            logger.warning("scheduled refresh failed: %s", error)
            self._post(f":warning: Scheduled refresh failed: {escape_mrkdwn(str(error))}")
            return None
        logger.info("scheduled refresh: %s", log_line(summary))
        note = access_note(self._check_access) if summary.switched else None
        if note:
            logger.warning("after the scheduled refresh the access file does not fit the index")
        if summary.switched:  # a file that fails again every round is not news every round
            text = summary_text(summary, title="Scheduled refresh",
                                may_name=names_for(self._access, self._channel))
            self._post(text + (f"\n{note}" if note else ""))
        return summary

    def _post(self, text: str) -> None:
        if self._client is None or not self._channel:
            return
        try:
            self._client.chat_postMessage(channel=self._channel, text=text)
        except SlackApiError as error:
            logger.warning("cannot post the refresh summary in %s: %s", self._channel,
                           error.response.get("error"))


def log_line(summary: IndexSummary) -> str:
    """The summary on one line, for the log."""
    state = (f"now serving {summary.version}" if summary.switched
             else "nothing changed, nothing published")
    return (f"added {len(summary.added)}, updated {len(summary.updated)}, removed "
            f"{len(summary.removed)}, unchanged {len(summary.unchanged)}, failed "
            f"{len(summary.failed)}; chunks embedded {summary.chunks_encoded}, reused "
            f"{summary.chunks_reused}, {summary.chunks_total} in all; "
            f"{summary.seconds:.1f}s; {state}")
