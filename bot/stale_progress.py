"""Reindex progress messages that outlive their reindex.

A Slack reindex posts one channel message and edits it until the summary replaces it. When
the process running it dies (kill -9, out of memory, a deploy), nothing would ever edit it
again, and the channel would read "embedding 120/400 chunks" for good. So each such message
is noted (channel, ts, who started it, a heartbeat) where every bot process finds it: in Redis
with KOTAE_REDIS_URL (every replica), else in a file in the index folder (the same bot after a
restart). A process that finds a note whose heartbeat stopped edits the message to say the
reindex stopped and removes the note; of several replicas, the one whose HDEL removed it
edits.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.periodic import Periodic
from bot.render import slack_date
from retrieval.errors import KotaeError
from retrieval.redis_state import RedisLink

logger = logging.getLogger(__name__)

NOTES_FILE = "reindex-progress.json"
T = TypeVar("T")


@dataclass(frozen=True)
class ProgressNote:
    channel: str
    ts: str
    user: str
    started_at: float
    beat_at: float


class ProgressNotes(Protocol):
    def put(self, note: ProgressNote) -> None: ...
    def all(self) -> list[ProgressNote]: ...
    def claim(self, ts: str) -> bool:
        """Remove the note; True for the one caller that removed it (the sweeper marks the
        message only then; the heartbeat removing its own note ignores it)."""
        ...


def _parse(raw: str | bytes) -> ProgressNote | None:
    try:
        data = json.loads(raw)
        return ProgressNote(channel=str(data["channel"]), ts=str(data["ts"]),
                            user=str(data["user"]), started_at=float(data["started_at"]),
                            beat_at=float(data["beat_at"]))
    except (ValueError, KeyError, TypeError):
        return None


class RedisProgressNotes:
    """One hash shared by every replica: field = message ts, value = the note as JSON."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.key = link.key("reindex-progress")

    def put(self, note: ProgressNote) -> None:
        self.link.call(lambda r: r.hset(self.key, note.ts, json.dumps(asdict(note))))

    def all(self) -> list[ProgressNote]:
        raw = self.link.call(lambda r: r.hgetall(self.key))
        return [note for note in map(_parse, raw.values()) if note is not None]

    def claim(self, ts: str) -> bool:
        return bool(self.link.call(lambda r: r.hdel(self.key, ts)))


class FileProgressNotes:
    """A JSON file in the index folder, for one bot process (no Redis): rewritten whole,
    atomically; a damaged file reads as no notes."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / NOTES_FILE
        self._lock = threading.Lock()

    def put(self, note: ProgressNote) -> None:
        with self._lock:
            notes = self._read()
            notes[note.ts] = note
            self._write(notes)

    def all(self) -> list[ProgressNote]:
        with self._lock:
            return list(self._read().values())

    def claim(self, ts: str) -> bool:
        with self._lock:
            notes = self._read()
            if notes.pop(ts, None) is None:
                return False
            self._write(notes)
            return True

    def _read(self) -> dict[str, ProgressNote]:
        try:
            items = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            logger.warning("ignoring the unreadable %s: %s", self.path, error)
            return {}
        notes = [_parse(json.dumps(item)) for item in items] if isinstance(items, list) else []
        return {note.ts: note for note in notes if note is not None}

    def _write(self, notes: dict[str, ProgressNote]) -> None:
        if not notes:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps([asdict(note) for note in notes.values()]),
                             encoding="utf-8")
        os.replace(temporary, self.path)


class Heartbeat:
    """Keeps one progress message's note alive while its reindex runs (a thread beats every
    `every_s`, whatever the indexer is doing); `stop` removes the note. Best effort: a note
    that cannot be written only means nobody can mark the message stopped later."""

    def __init__(self, notes: ProgressNotes, note: ProgressNote, every_s: float) -> None:
        self.notes, self.note = notes, note
        self._task = Periodic(self._beat, every_s, name="kotae-reindex-heartbeat",
                              failure="reindex heartbeat failed")

    def start(self) -> Heartbeat:
        self._safely(self.notes.put, self.note)
        self._task.start()
        return self

    def stop(self) -> None:
        self._task.stop()
        self._safely(self.notes.claim, self.note.ts)

    def _beat(self) -> None:
        self.note = ProgressNote(**{**asdict(self.note), "beat_at": time.time()})
        self._safely(self.notes.put, self.note)

    @staticmethod
    def _safely(action: Callable[[T], object], argument: T) -> None:
        try:
            action(argument)
        except (KotaeError, OSError) as error:
            logger.warning("reindex progress note not kept: %s", error)


def stopped_text(note: ProgressNote) -> str:
    """The message's last words."""
    started = slack_date(note.started_at)
    return (f":warning: The reindex <@{note.user}> started at {started} stopped before it "
            "finished: the kotae process running it went away (a restart, a crash or out of "
            "memory). The index serves the last version that was finished. Run "
            "`/kotae reindex` again: it resumes from the embeddings already computed.")


class StaleProgressSweeper:
    """Marks stopped the progress messages whose heartbeat is older than `stale_after_s`:
    once at start, then every half of that. Replicas compare their clocks here, so they need
    to agree (NTP) to well within `stale_after_s`. A reindex wrongly taken for stopped (its
    process frozen that long) puts its note back at its next beat, and its next progress
    edit and the summary replace the text."""

    def __init__(self, notes: ProgressNotes, client: WebClient, stale_after_s: float) -> None:
        self.notes, self.client, self.stale_after_s = notes, client, stale_after_s
        self._task = Periodic(self.sweep, stale_after_s / 2, name="kotae-stale-progress",
                              failure="checking for stopped reindexes failed", now=True)

    def start(self) -> StaleProgressSweeper:
        self._task.start()
        return self

    def stop(self) -> None:
        self._task.stop()

    def sweep(self) -> int:
        """Messages marked stopped now."""
        try:
            notes = self.notes.all()
        except (KotaeError, OSError) as error:
            logger.info("cannot check for stopped reindexes: %s", error)
            return 0
        marked = 0
        for note in notes:
            if time.time() - note.beat_at <= self.stale_after_s:
                continue
            try:
                if not self.notes.claim(note.ts):
                    continue  # another replica is marking it
            except (KotaeError, OSError) as error:
                logger.info("cannot check for stopped reindexes: %s", error)
                return marked
            logger.warning("the reindex %s started at %s stopped without a summary; marking "
                           "its message in %s", note.user,
                           time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(note.started_at)),
                           note.channel)
            try:
                self.client.chat_update(channel=note.channel, ts=note.ts, text=stopped_text(note))
                marked += 1
            except SlackApiError as error:
                logger.info("could not mark the stopped reindex's message: %s",
                            error.response.get("error"))
        return marked
