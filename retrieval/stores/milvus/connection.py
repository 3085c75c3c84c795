"""Reaching Milvus: where (KOTAE_MILVUS_URI and friends), one client, errors in our words.

A URI that is a file path ending in `.db` runs Milvus Lite inside this process (pymilvus starts
its server on a local socket); `http://host:19530` reaches Milvus standalone or a cluster, and
`milvus_lite.server.Server(db, address="127.0.0.1:PORT")` serves a Lite file the same way. The
code path after connecting is identical: only the URI and the index type differ.

Every call goes through `Milvus`, which bounds it with a timeout (pymilvus otherwise retries an
unreachable server for minutes) and turns a `MilvusException` into a `MilvusError` naming
KOTAE_MILVUS_URI, said once at the edge like every other KotaeError. pymilvus' own logger is
quieted: it logs each failed call with a traceback, which the CLI must not print.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from retrieval.errors import KotaeError

if TYPE_CHECKING:
    from pymilvus import MilvusClient

    from retrieval.settings import Settings

logger = logging.getLogger(__name__)

SETTING = "KOTAE_MILVUS_URI"
SERVER_SCHEMES = ("http://", "https://", "tcp://", "unix:")
CALL_TIMEOUT_S = 60.0  # per write, retries included: an outage fails a call, never hangs it
READ_TIMEOUT_S = 10.0  # per read: a question waits this long at most before its apology
CONNECT_TIMEOUT_S = 10.0
LITE_INDEX_TYPES = ("FLAT", "IVF_FLAT", "AUTOINDEX")  # "local mode only support ..."
_LITE_NAME = re.compile(r"^[a-zA-Z0-9.\-_]{1,36}$")  # what milvus_lite.server accepts


class MilvusError(KotaeError):
    """Milvus refused or failed a call; the message names KOTAE_MILVUS_URI."""

    for_users = ("the document index is not answering right now. Please try again in a "
                 "minute (the details are in the bot's log).")


class MilvusUnavailable(MilvusError):
    """Milvus cannot be reached (or a Milvus Lite file cannot be opened)."""


class MilvusIncompatible(MilvusError):
    """The collections hold vectors of another model or dimension: never mixed."""


@dataclass(frozen=True)
class MilvusConfig:
    uri: str
    token: str | None
    db: str
    prefix: str
    index_type: str

    @classmethod
    def from_settings(cls, settings: Settings) -> MilvusConfig:
        uri = settings.milvus_uri or str(settings.index_dir / "milvus.db")
        token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
        return cls(uri=uri, token=token, db=settings.milvus_db,
                   prefix=settings.milvus_collection, index_type=settings.milvus_index_type)

    @property
    def lite(self) -> bool:
        return not self.uri.startswith(SERVER_SCHEMES)

    @property
    def shown_uri(self) -> str:
        """The URI without credentials (a `user:password@` in it is never shown)."""
        if self.lite:
            return self.uri
        parsed = urlparse(self.uri)
        if parsed.password is None and parsed.username is None:
            return self.uri
        return parsed._replace(netloc=parsed.hostname + (f":{parsed.port}" if parsed.port
                                                         else "")).geturl()

    @property
    def location(self) -> str:
        """The same string on every replica of one deployment (the Redis lock's key)."""
        return f"milvus {self.shown_uri} db={self.db} collection={self.prefix}"

    def lock_dir(self, index_dir: Path) -> Path:
        """Where the indexer's file lock lives: beside a Lite file, else under the local index
        folder (several machines share the lock only through Redis, KOTAE_REDIS_URL)."""
        if self.lite:
            path = Path(self.uri).expanduser()
            return path.parent / f".{path.name}.kotae-lock"
        return Path(index_dir) / "milvus-lock"


def _quiet_pymilvus() -> None:
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)


def _reason(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error)
    return " ".join(str(message).split())[:300]


def connect(config: MilvusConfig) -> MilvusClient:
    """A client, or MilvusUnavailable naming KOTAE_MILVUS_URI (one line, nothing leaked)."""
    try:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException
    except ImportError:
        raise MilvusUnavailable("KOTAE_STORE=milvus needs pymilvus and milvus-lite: pip "
                                "install 'kotae[scale]'") from None

    _quiet_pymilvus()
    if config.lite:
        path = Path(config.uri).expanduser()
        if path.suffix != ".db" or not _LITE_NAME.match(path.name):
            raise MilvusUnavailable(
                f"{SETTING}={config.uri}: a Milvus Lite file needs a name ending in .db, of at "
                "most 36 letters, digits, '.', '-' or '_' (or use http://host:19530 for a "
                "Milvus server)")
        if config.index_type not in LITE_INDEX_TYPES:
            raise MilvusUnavailable(
                f"KOTAE_MILVUS_INDEX_TYPE={config.index_type} needs Milvus standalone or a "
                f"cluster; Milvus Lite ({SETTING}={config.uri}) takes "
                f"{', '.join(LITE_INDEX_TYPES)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        uri = str(path)
    else:
        uri = config.uri
    try:
        return MilvusClient(uri=uri, token=config.token or "",
                            db_name="" if config.db == "default" else config.db,
                            timeout=CONNECT_TIMEOUT_S)
    except (MilvusException, OSError) as error:
        if config.lite:
            raise MilvusUnavailable(
                f"Milvus Lite cannot open {SETTING}={config.uri}: {_reason(error)} (a Lite "
                "file is opened by one process at a time; for several, serve it with Milvus "
                "standalone and set an http:// URI)") from None
        raise MilvusUnavailable(f"Milvus is unreachable at {SETTING}={config.shown_uri}: "
                                f"{_reason(error)}") from None


class Milvus:
    """The calls kotae makes, each with a timeout and our error (see the module docstring)."""

    def __init__(self, config: MilvusConfig, client: MilvusClient | None = None, *,
                 timeout_s: float = CALL_TIMEOUT_S,
                 read_timeout_s: float = READ_TIMEOUT_S) -> None:
        self.config = config
        self.client = client if client is not None else connect(config)
        self.timeout_s = timeout_s
        self.read_timeout_s = read_timeout_s

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        from pymilvus.exceptions import MilvusException

        try:
            yield
        except MilvusException as error:
            raise MilvusError(f"Milvus at {SETTING}={self.config.shown_uri} failed {doing}: "
                              f"{_reason(error)}") from None

    def name(self, kind: str) -> str:
        return f"{self.config.prefix}_{kind}"

    def has(self, kind: str) -> bool:
        with self._errors("listing collections"):
            return bool(self.client.has_collection(self.name(kind), timeout=self.read_timeout_s))

    def create(self, kind: str, schema: Any, index_params: Any) -> None:
        with self._errors(f"creating {self.name(kind)}"):
            self.client.create_collection(self.name(kind), schema=schema,
                                          index_params=index_params,
                                          consistency_level="Strong", timeout=self.timeout_s)

    def load(self, kind: str) -> None:
        with self._errors(f"loading {self.name(kind)}"):
            self.client.load_collection(self.name(kind), timeout=self.timeout_s)

    def drop(self, kind: str) -> None:
        with self._errors(f"dropping {self.name(kind)}"):
            self.client.drop_collection(self.name(kind), timeout=self.timeout_s)

    def insert(self, kind: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            with self._errors(f"inserting into {self.name(kind)}"):
                self.client.insert(self.name(kind), rows, timeout=self.timeout_s)

    def upsert(self, kind: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            with self._errors(f"writing {self.name(kind)}"):
                self.client.upsert(self.name(kind), rows, timeout=self.timeout_s)

    def delete(self, kind: str, *, ids: list[Any] | None = None, where: str | None = None) -> None:
        if ids is not None and not ids:
            return
        with self._errors(f"deleting from {self.name(kind)}"):
            if ids is not None:
                self.client.delete(self.name(kind), ids=ids, timeout=self.timeout_s)
            else:
                self.client.delete(self.name(kind), filter=where, timeout=self.timeout_s)

    def get(self, kind: str, ids: list[Any], fields: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        with self._errors(f"reading {self.name(kind)}"):
            return list(self.client.get(self.name(kind), ids=ids, output_fields=fields,
                                        timeout=self.read_timeout_s))

    def query(self, kind: str, where: str, fields: list[str], *,
              limit: int | None = None) -> list[dict[str, Any]]:
        """Rows matching `where`: all of them (an iterator past Milvus' 16,384-row window,
        which a plain query silently truncates at), or the first `limit`."""
        with self._errors(f"reading {self.name(kind)}"):
            if limit is not None:
                return list(self.client.query(self.name(kind), filter=where,
                                              output_fields=fields, limit=limit,
                                              timeout=self.read_timeout_s))
            found: list[dict[str, Any]] = []
            iterator = self.client.query_iterator(self.name(kind), batch_size=4096,
                                                  filter=where, output_fields=fields,
                                                  timeout=self.read_timeout_s)
            try:
                while batch := iterator.next():
                    found.extend(batch)
            finally:
                iterator.close()
            return found

    def count(self, kind: str, where: str) -> int:
        with self._errors(f"counting {self.name(kind)}"):
            found = self.client.query(self.name(kind), filter=where,
                                      output_fields=["count(*)"], timeout=self.read_timeout_s)
        return int(found[0]["count(*)"]) if found else 0

    def search(self, kind: str, data: list[Any], field: str, limit: int, where: str,
               params: dict[str, Any], fields: list[str]) -> list[list[dict[str, Any]]]:
        with self._errors(f"searching {self.name(kind)}"):
            return [list(hits) for hits in self.client.search(
                self.name(kind), data=data, anns_field=field, limit=limit, filter=where,
                search_params=params, output_fields=fields, timeout=self.read_timeout_s)]

    def flush(self, kind: str) -> None:
        with self._errors(f"flushing {self.name(kind)}"):
            self.client.flush(self.name(kind), timeout=self.timeout_s)
