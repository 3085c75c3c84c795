"""A fake Hugging Face Hub on 127.0.0.1, for `snapshot_download` / `hf_hub_download`.

Why: the hub is unreachable from tests, and patching `huggingface_hub` would hide exactly what
can break in `retrieval.embeddings._download` (which files are asked for, in how many calls, what
a missing file or repository looks like). Point the real client here with `HF_ENDPOINT` (read at
import time: run the download in a subprocess) and it speaks the wire protocol of
huggingface_hub 2.x:

- `GET /api/models/{repo}[/revision/{rev}]`: model info, with `sha` (the commit) and `siblings`;
- `GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=&expand=`: the file listing
  (`type`, `path`, `size`, `oid`, `lfs`), paginated with a `Link: <...>; rel="next"` header;
- `HEAD`/`GET /{repo}/resolve/{rev}/{file}`: a plain file is served here (`ETag` = its git blob
  id, `X-Repo-Commit`, `Content-Length`); an LFS file (weights, heads) answers `302` to a CDN on
  another origin (`localhost` instead of `127.0.0.1`) carrying `X-Linked-Etag` (its sha256) and
  `X-Linked-Size`, as the real hub does, so the client stops at the redirect and downloads from
  the `Location`;
- errors carry the `X-Error-Code` the client maps to its exceptions (`RepoNotFound` with 401,
  `RevisionNotFound`, `EntryNotFound`).

No `X-Xet-Hash` header and no `xetHash` in the listing: the client takes the plain HTTP path
even with `hf_xet` installed. Every request is recorded (`requests`, `requested_files`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.fakes.lifecycle import BackgroundHTTPServer, FakeHTTPServer

logger = logging.getLogger(__name__)

DEFAULT_BRANCH = "main"
# Suffixes a hub repository's .gitattributes sends to LFS (the ones that matter for bge-m3).
LFS_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".model", ".onnx", ".h5",
                          ".msgpack", ".ckpt"})
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_CDN = re.compile(r"^/cdn/(?P<repo>[^/]+/[^/]+)/(?P<commit>[0-9a-f]{40})/(?P<file>.+)$")
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?P<rest>/.*)?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def git_blob_id(content: bytes) -> str:
    """The git object id of a file: what the hub lists as `oid` and sends as a plain file's ETag."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class RepoFile:
    """One file of a fake repository, with the ids the hub derives from its content."""

    path: str
    content: bytes

    @property
    def lfs(self) -> bool:
        return Path(self.path).suffix in LFS_SUFFIXES

    @property
    def blob_id(self) -> str:
        """For an LFS file git stores a pointer, so the blob id is the pointer's."""
        return git_blob_id(self.lfs_pointer if self.lfs else self.content)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def lfs_pointer(self) -> bytes:
        return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
                f"size {len(self.content)}\n").encode()

    def tree_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": self.blob_id, "size": len(self.content),
                                 "path": self.path}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.content),
                            "pointerSize": len(self.lfs_pointer)}
        return entry


@dataclass
class Repo:
    """A model repository at one commit on its `main` branch."""

    repo_id: str
    files: dict[str, RepoFile]
    commit: str = ""

    def __post_init__(self) -> None:
        if not self.commit:
            digest = hashlib.sha1(self.repo_id.encode())
            for path in sorted(self.files):
                digest.update(f"{path}\0{self.files[path].blob_id}\0".encode())
            self.commit = digest.hexdigest()


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it. `filename` is the repository file it asked for
    (through `/resolve` or the CDN), None for API calls."""

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    repo_id: str | None = None
    filename: str | None = None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("fake hub: " + format, *args)

    def do_GET(self) -> None:
        self._handle(head=False)

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def _handle(self, *, head: bool) -> None:
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query, keep_blank_values=True)
        fake: FakeHuggingFaceHub = self.server.fake
        if path == "/api/agent-harnesses":  # huggingface_hub's best-effort agent detection
            fake.record(RecordedRequest(self.command, path, query))
            self._json(200, {"standardEnvVars": [], "harnesses": {}}, head=head)
        elif match := _API.match(path):
            fake.record(RecordedRequest(self.command, path, query, match["repo"]))
            self._api(fake, match["repo"], match["rest"] or "", query, head=head)
        elif match := _RESOLVE.match(path):
            fake.record(RecordedRequest(self.command, path, query, match["repo"], match["file"]))
            self._resolve(fake, match["repo"], match["rev"], match["file"], head=head)
        elif match := _CDN.match(path):
            fake.record(RecordedRequest(self.command, path, query, match["repo"], match["file"]))
            self._cdn(fake, match["repo"], match["commit"], match["file"], head=head)
        else:
            fake.record(RecordedRequest(self.command, path, query))
            self._send(404, b"Not Found", {"Content-Type": "text/plain"}, head=head)

    # --- /api/models/... ------------------------------------------------------------------------

    def _api(self, fake: FakeHuggingFaceHub, repo_id: str, rest: str,
             query: dict[str, list[str]], *, head: bool) -> None:
        repo = fake.repo(repo_id)
        if repo is None:
            self._repo_not_found(head=head)
            return
        if rest in {"", "/"} or rest.startswith("/revision/"):
            revision = rest[len("/revision/"):] if rest.startswith("/revision/") else DEFAULT_BRANCH
            if not self._check_revision(repo, revision, head=head):
                return
            self._json(200, _model_info(repo), head=head)
            return
        if rest.startswith("/tree/"):
            revision, _, folder = rest[len("/tree/"):].partition("/")
            if not self._check_revision(repo, revision, head=head):
                return
            recursive = query.get("recursive", ["false"])[-1].lower() == "true"
            entries = _tree(repo, folder.strip("/"), recursive=recursive)
            if folder and not entries:
                self._error(404, "EntryNotFound", f"{folder} does not exist on \"{revision}\"",
                            {"X-Repo-Commit": repo.commit}, head=head)
                return
            cursor = int(query.get("cursor", ["0"])[-1] or 0)
            page = entries[cursor:cursor + fake.tree_page_size]
            extra: dict[str, str] = {}
            if cursor + fake.tree_page_size < len(entries):
                params = "&".join(f"{key}={quote(values[-1])}" for key, values in query.items()
                                  if key != "cursor")
                next_url = (f"{fake.endpoint}/api/models/{repo_id}/tree/{revision}"
                            f"{'/' + folder if folder else ''}?{params}&cursor="
                            f"{cursor + fake.tree_page_size}")
                extra["Link"] = f'<{next_url}>; rel="next"'
            self._json(200, page, extra, head=head)
            return
        self._send(404, b"Not Found", {"Content-Type": "text/plain"}, head=head)

    # --- /{repo}/resolve/{rev}/{file} and the CDN ----------------------------------------------

    def _resolve(self, fake: FakeHuggingFaceHub, repo_id: str, revision: str, filename: str,
                 *, head: bool) -> None:
        repo = fake.repo(repo_id)
        if repo is None:
            self._repo_not_found(head=head)
            return
        if not self._check_revision(repo, revision, head=head):
            return
        commit_header = {"X-Repo-Commit": repo.commit}
        file = repo.files.get(filename)
        if file is None:
            self._error(404, "EntryNotFound", "Entry not found", commit_header, head=head)
            return
        if not file.lfs:
            self._serve(file.content, f'"{file.blob_id}"', commit_header, head=head)
            return
        location = f"{fake.cdn_endpoint}/cdn/{repo_id}/{repo.commit}/{quote(filename)}"
        self._send(302, b"", {**commit_header, "Location": location,
                              "ETag": f'"{file.blob_id}"', "X-Linked-Etag": f'"{file.sha256}"',
                              "X-Linked-Size": str(len(file.content)),
                              "Content-Type": "text/plain; charset=utf-8"}, head=head)

    def _cdn(self, fake: FakeHuggingFaceHub, repo_id: str, commit: str, filename: str,
             *, head: bool) -> None:
        repo = fake.repo(repo_id)
        file = repo.files.get(filename) if repo is not None and repo.commit == commit else None
        if file is None:
            self._send(403, b"<Error><Code>AccessDenied</Code></Error>",
                       {"Content-Type": "application/xml"}, head=head)
            return
        self._serve(file.content, f'"{file.sha256}"', {
            "Content-Disposition": f'inline; filename*=UTF-8\'\'{quote(Path(filename).name)}; '
                                   f'filename="{Path(filename).name}";'}, head=head)

    def _serve(self, content: bytes, etag: str, extra: Mapping[str, str], *, head: bool) -> None:
        """The file's bytes, honouring `Range: bytes=N-[M]` (the client resumes with it)."""
        headers = {**extra, "ETag": etag, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "") or "")
        if wanted:
            start = int(wanted[1])
            end = min(int(wanted[2]) if wanted[2] else len(content) - 1, len(content) - 1)
            if start >= len(content):
                self._send(416, b"", {"Content-Range": f"bytes */{len(content)}"}, head=head)
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            self._send(206, content[start:end + 1], headers, head=head)
            return
        self._send(200, content, headers, head=head)

    # --- errors and plumbing ---------------------------------------------------------------------

    def _check_revision(self, repo: Repo, revision: str, *, head: bool) -> bool:
        if revision in {DEFAULT_BRANCH, repo.commit}:
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", {}, head=head)
        return False

    def _repo_not_found(self, *, head: bool) -> None:
        # The hub answers 401 for a repository that does not exist (or is private) when the
        # request carries no token.
        self._error(401, "RepoNotFound", "Repository not found", {}, head=head)

    def _error(self, status: int, code: str, message: str, extra: Mapping[str, str], *,
               head: bool) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(status, body, {**extra, "Content-Type": "application/json; charset=utf-8",
                                  "X-Error-Code": code, "X-Error-Message": message}, head=head)

    def _json(self, status: int, payload: Any, extra: Mapping[str, str] | None = None, *,
              head: bool) -> None:
        self._send(status, json.dumps(payload).encode(),
                   {**(extra or {}), "Content-Type": "application/json; charset=utf-8"}, head=head)

    def _send(self, status: int, body: bytes, headers: Mapping[str, str], *, head: bool) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


def _model_info(repo: Repo) -> dict[str, Any]:
    return {
        "_id": repo.commit[:24], "id": repo.repo_id, "modelId": repo.repo_id,
        "author": repo.repo_id.split("/")[0], "sha": repo.commit, "private": False,
        "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
        "library_name": "sentence-transformers", "lastModified": "2024-07-03T14:50:10.000Z",
        "createdAt": "2024-01-27T17:07:29.000Z",
        "siblings": [{"rfilename": path} for path in sorted(repo.files)],
    }


def _tree(repo: Repo, folder: str, *, recursive: bool) -> list[dict[str, Any]]:
    """Entries under `folder` ("" for the root): files and folders, as the hub lists them."""
    prefix = f"{folder}/" if folder else ""
    files: list[dict[str, Any]] = []
    folders: set[str] = set()
    for path in sorted(repo.files):
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix):].split("/")
        for depth in range(1, len(parts)):
            if recursive or depth == 1:
                folders.add(prefix + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            files.append(repo.files[path].tree_entry())
    folder_entries = [{"type": "directory", "oid": hashlib.sha1(name.encode()).hexdigest(),
                       "size": 0, "path": name} for name in sorted(folders)]
    return folder_entries + files


class FakeHuggingFaceHub(BackgroundHTTPServer):
    """The hub on an ephemeral 127.0.0.1 port: `add_repo` / `add_folder`, then set
    `HF_ENDPOINT=fake.endpoint` in the environment of the process that downloads."""

    thread_name = "fake-hf-hub"

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._repos: dict[str, Repo] = {}
        self._requests: list[RecordedRequest] = []
        self.tree_page_size = 1000  # the hub's page size for a tree listing without expand

    def _new_server(self) -> FakeHTTPServer:
        return FakeHTTPServer(self, _Handler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn_endpoint(self) -> str:
        """Another origin (same socket): the client must not follow HEAD redirects onto it."""
        return f"http://localhost:{self.port}"

    def add_repo(self, repo_id: str, files: Mapping[str, bytes]) -> Repo:
        repo = Repo(repo_id, {path: RepoFile(path, content) for path, content in files.items()})
        with self._lock:
            self._repos[repo_id] = repo
        return repo

    def add_folder(self, repo_id: str, folder: Path, *, exclude: Iterable[str] = (),
                   extra: Mapping[str, bytes] | None = None) -> Repo:
        """A repository holding the files of `folder` (recursively) except `exclude`d paths,
        plus `extra` files."""
        skipped = set(exclude)
        files = {path.relative_to(folder).as_posix(): path.read_bytes()
                 for path in sorted(folder.rglob("*")) if path.is_file()}
        files = {path: content for path, content in files.items() if path not in skipped}
        return self.add_repo(repo_id, {**files, **(extra or {})})

    def repo(self, repo_id: str) -> Repo | None:
        with self._lock:
            return self._repos.get(repo_id)

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requested_files(self, repo_id: str) -> set[str]:
        """Repository files asked for by HEAD or GET, on `/resolve` or the CDN."""
        return {r.filename for r in self.requests if r.repo_id == repo_id and r.filename}

    def downloaded_files(self, repo_id: str) -> set[str]:
        """Files fetched with GET (on `/resolve` or the CDN), not only asked about with HEAD."""
        return {r.filename for r in self.requests
                if r.repo_id == repo_id and r.filename and r.method == "GET"}
