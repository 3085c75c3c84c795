"""Access control over the served index: the row ids an audience may retrieve.

The access file is re-read when its modification time or size changes (checked at most once
per `check_interval_s`, 1 s by default), so an edit applies to the next question without a
restart and without re-embedding: visibility is computed from each chunk's source path, which
the index already stores. A file that no longer parses stops every restricted answer (fail
closed) until it is fixed; it never falls back to "everything".
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.access.audience import Audience, Visibility, may_read, visibility
from retrieval.access.config import AccessConfig, AccessInvalid, load_access_config
from retrieval.stores.base import ChunkReader, FileRecord

logger = logging.getLogger(__name__)

ChannelResolver = Callable[[str], str | None]  # "#name" -> channel id, None when unknown
_ROW_CACHE = 64  # visibilities remembered per served version


@dataclass
class _Assignment:
    """Which sets each indexed source is in, for one (store, access file) pair."""

    store: ChunkReader
    config: AccessConfig
    sets_by_source: dict[str, frozenset[str]]
    rows: OrderedDict[Visibility, np.ndarray]


class AccessControl:
    """`path` None: access control is off and everything is visible everywhere."""

    def __init__(self, path: Path | None, *, check_interval_s: float = 1.0) -> None:
        self.path = path
        self._check_interval_s = check_interval_s
        self._lock = threading.RLock()
        self._config: AccessConfig | None = None
        self._stamp: tuple[int, int] | None = None
        self._checked_at = -float("inf")
        self._resolve: ChannelResolver | None = None
        self._assignment: _Assignment | None = None

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def bind_channel_names(self, resolve: ChannelResolver) -> None:
        """Where `#channel-name`s are turned into ids (the Slack bot); without it (the CLI)
        a name matches only the same name given as `--as-channel`."""
        with self._lock:
            self._resolve = resolve
            self._stamp = None  # resolve on the next read

    def config(self) -> AccessConfig:
        """The current configuration; raises AccessInvalid (every time) while it is broken."""
        assert self.path is not None, "access control is off"
        with self._lock:
            now = time.monotonic()
            if self._config is not None and now - self._checked_at < self._check_interval_s:
                return self._config
            self._checked_at = now
            stamp = _stamp(self.path)
            if self._config is not None and stamp == self._stamp:
                return self._config
            self._config, self._stamp = None, stamp  # a failure below leaves nothing usable
            config = self._resolved(load_access_config(self.path))
            self._config = config
            logger.info("access file %s: %d sets, default %s", self.path, len(config.sets),
                        config.default)
            return config

    def visible_rows(self, store: ChunkReader, audience: Audience | None) -> np.ndarray | None:
        """Ascending row ids `audience` may retrieve from `store`; None when it may retrieve
        everything. Raises AccessInvalid for a broken access file, and ValueError when access
        control is on and no audience was given (a caller that forgot must not see all)."""
        if not self.enabled:
            return None
        if audience is None:
            raise ValueError("KOTAE_ACCESS_FILE is set: every search needs an audience "
                             "(Audience.operator() for everything)")
        config = self.config()
        if audience.kind == "operator":
            return None
        seen = visibility(config, audience)
        with self._lock:
            assignment = self._assign(store, config)
            rows = assignment.rows.get(seen)
            if rows is None:
                sources = [source for source, sets in assignment.sets_by_source.items()
                           if may_read(seen, sets)]
                rows = store.rows_of(sources)
                assignment.rows[seen] = rows
                while len(assignment.rows) > _ROW_CACHE:
                    assignment.rows.popitem(last=False)
            else:
                assignment.rows.move_to_end(seen)
            return rows

    def may_name(self, source: str, audience: Audience) -> bool:
        """Whether `audience` may see that `source` exists (its name in a reindex summary, say).
        A file that no longer parses names nothing: fail closed."""
        if not self.enabled:
            return True
        try:
            config = self.config()
        except AccessInvalid:
            return False
        return may_read(visibility(config, audience), config.sets_of(source))

    def check(self, store: ChunkReader | None) -> AccessConfig | None:
        """Read the file now (start-up, reindex) and, with an index, check every set holds
        an indexed file; raises AccessInvalid. None when access control is off."""
        if not self.enabled:
            return None
        config = self.config()
        if store is not None and store.count:
            with self._lock:
                self._assign(store, config)
        return config

    def summary(self, files: dict[str, FileRecord]) -> dict[str, Any]:
        """For status: the file, the default, and files and chunks of each set (and of the
        sources in no set). Never raises: a broken file is reported as `error`."""
        if not self.enabled:
            return {"enabled": False}
        try:
            config = self.config()
        except AccessInvalid as error:
            return {"enabled": True, "file": str(self.path), "error": str(error)}
        counts = {s.name: [0, 0] for s in config.sets}
        unassigned = [0, 0]
        for source, record in files.items():
            sets = config.sets_of(source)
            for name in sets:
                counts[name][0] += 1
                counts[name][1] += record.chunk_count
            if not sets:
                unassigned[0] += 1
                unassigned[1] += record.chunk_count
        summary: dict[str, Any] = {
            "enabled": True, "file": str(self.path), "default": config.default,
            "sets": [{"name": name, "files": f, "chunks": c} for name, (f, c) in counts.items()],
            "unassigned": {"files": unassigned[0], "chunks": unassigned[1]}}
        empty = [s for s in config.sets if files and counts[s.name][0] == 0]
        if empty:  # what a question would fail on (see `_assign`), said before one is asked
            summary["error"] = (f"{config.where(empty[0])}: its paths match none of the "
                                f"{len(files)} indexed files")
        return summary

    def _assign(self, store: ChunkReader, config: AccessConfig) -> _Assignment:
        current = self._assignment
        if current is not None and current.store is store and current.config is config:
            return current
        sources = list(store.files())
        sets_by_source = {source: config.sets_of(source) for source in sources}
        held = set().union(*sets_by_source.values()) if sets_by_source else set()
        for access_set in config.sets:
            if access_set.name not in held:
                raise AccessInvalid(
                    f"{config.where(access_set)}: its paths match none of the "
                    f"{len(sources)} indexed files ({', '.join(access_set.patterns)}); a "
                    "mistyped path would leave those documents under the default")
        self._assignment = _Assignment(store, config, sets_by_source, OrderedDict())
        return self._assignment

    def _resolved(self, config: AccessConfig) -> AccessConfig:
        if self._resolve is None:
            return config
        sets = []
        for access_set in config.sets:
            channels = set()
            for channel in access_set.channels:
                if not channel.startswith("#"):
                    channels.add(channel)
                    continue
                found = self._resolve(channel[1:])
                if found is None:
                    raise AccessInvalid(f"{config.where(access_set)}: no channel named "
                                        f"{channel} that kotae can see (use its id, C…)")
                channels.add(found)
            sets.append(replace(access_set, channels=frozenset(channels)))
        return replace(config, sets=tuple(sets))


def _stamp(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError as error:
        raise AccessInvalid(f"KOTAE_ACCESS_FILE={path}: cannot be read "
                            f"({error.strerror or error})") from None
    return stat.st_mtime_ns, stat.st_size
