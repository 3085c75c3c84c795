"""Which files a run reads: the supported files under the given paths, and every given or found
input that will not be read, with the reason.

Symlinks, files and folders alike, are followed when their target lies inside one of the given
paths (the "roots"), and cited under the link's path, the path a reader finds it at inside the
root. A symlink whose target lies outside every root is not followed but reported as skipped:
the roots say what may be indexed, and a link must not widen that silently. A folder link to a
folder above it (a loop) is not followed again. When a file is reached both through a link and
directly, it is kept once, under its real path.

Hidden names (a leading dot) are skipped below a root, silently, like unsupported files found
inside a folder: a docs folder often holds images and the like. A root is used even when its
own name is hidden (`~/.kotae/docs`), and a root that is itself a symlink is followed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from retrieval.loaders.model import SkippedFile
from retrieval.loaders.registry import format_for, supported_suffixes

logger = logging.getLogger(__name__)

Paths = Path | str | Iterable[Path | str]
_Folder = tuple[Path, Path, frozenset[Path], bool]


@dataclass(frozen=True)
class _Found:
    path: Path  # where it is cited: absolute, under its root, links not resolved
    real: Path  # the file itself, for deduplication
    via_link: bool


def find_sources(paths: Paths) -> tuple[list[Path], list[SkippedFile]]:
    """Supported files under `paths` (absolute, deduplicated, sorted), and each input that was
    given or found but will not be read: missing paths, unsupported files named explicitly,
    symlinks pointing outside the roots, broken links, unreadable folders."""
    roots = [Path(os.path.abspath(Path(p).expanduser())) for p in _as_path_list(paths)]
    real_roots = [root.resolve() for root in roots if root.exists()]
    found: list[_Found] = []
    skipped: list[SkippedFile] = []
    for root in roots:
        if not root.exists():
            skipped.append(SkippedFile(path=root.as_posix(), reason="not found"))
        elif root.is_dir():
            _walk(root, real_roots, found, skipped)
        elif not root.is_file():
            skipped.append(SkippedFile(path=root.as_posix(), reason="not a regular file"))
        elif format_for(root.suffix) is None:
            skipped.append(SkippedFile(path=root.as_posix(), reason=_unsupported(root)))
        else:
            found.append(_Found(root, root.resolve(), via_link=False))
    return _deduplicated(found), sorted(skipped, key=lambda s: s.path)


def iter_source_paths(paths: Paths) -> list[Path]:
    """The files of `find_sources`, for callers that report its skipped inputs elsewhere (or
    not at all); they are logged here at debug level only."""
    files, skipped = find_sources(paths)
    for problem in skipped:
        logger.debug("not reading %s: %s", problem.path, problem.reason)
    return files


def hash_file(path: Path) -> str:
    """sha256 of the file's bytes, equal to `SourceFile.content_hash`; cheap next to embedding."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _as_path_list(paths: Paths) -> list[Path]:
    # A lone str is iterable too, and iterating it would yield characters.
    if isinstance(paths, str | os.PathLike):
        return [Path(paths)]
    return [Path(p) for p in paths]


def _walk(
    root: Path, real_roots: list[Path], found: list[_Found], skipped: list[SkippedFile]
) -> None:
    # (folder as cited, its real path, real folders from the root down to it, through a link)
    real_root = root.resolve()
    stack: list[_Folder] = [(root, real_root, frozenset({real_root}), False)]
    while stack:
        folder, real_folder, ancestors, via_link = stack.pop()
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as error:
            skipped.append(SkippedFile(path=folder.as_posix(), reason=_os_reason(error)))
            continue
        subfolders: list[_Folder] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = folder / entry.name
            supported = format_for(path.suffix) is not None
            if entry.is_symlink():
                target = _follow(path, supported, real_roots, skipped)
                if target is None:
                    continue
                if target.is_dir():
                    if target in ancestors:
                        logger.debug("not following %s: a loop back to %s", path, target)
                    else:
                        subfolders.append((path, target, ancestors | {target}, True))
                elif supported and target.is_file():
                    found.append(_Found(path, target, via_link=True))
                elif supported:
                    skipped.append(SkippedFile(path=path.as_posix(), reason="not a regular file"))
            elif entry.is_dir(follow_symlinks=False):
                real = real_folder / entry.name
                subfolders.append((path, real, ancestors | {real}, via_link))
            elif not supported:
                continue
            elif entry.is_file(follow_symlinks=False):
                found.append(_Found(path, real_folder / entry.name, via_link))
            else:
                skipped.append(SkippedFile(path=path.as_posix(), reason="not a regular file"))
        stack.extend(reversed(subfolders))


def _follow(
    link: Path, supported: bool, real_roots: list[Path], skipped: list[SkippedFile]
) -> Path | None:
    """The real target of `link` when it may be followed; otherwise None, with the link
    reported as skipped if a reader could have expected it to be read."""
    try:
        target = Path(os.path.realpath(link, strict=True))
    except OSError as error:
        if supported:
            reason = f"broken symlink ({error.strerror or error})"
            skipped.append(SkippedFile(path=link.as_posix(), reason=reason))
        return None
    if any(target == root or target.is_relative_to(root) for root in real_roots):
        return target
    if supported or target.is_dir():
        reason = (
            f"symlink to {target.as_posix()}, outside the folders being indexed; "
            "index that folder itself to include it"
        )
        skipped.append(SkippedFile(path=link.as_posix(), reason=reason))
    return None


def _deduplicated(found: list[_Found]) -> list[Path]:
    """One path per real file: the one reached without a link, else the one that names the
    file by its real path, else the first in sorted order."""
    best: dict[Path, _Found] = {}
    for candidate in found:
        current = best.get(candidate.real)
        if current is None or _preference(candidate) < _preference(current):
            best[candidate.real] = candidate
    return sorted((c.path for c in best.values()), key=lambda p: p.as_posix())


def _preference(candidate: _Found) -> tuple[bool, bool, str]:
    return (candidate.via_link, candidate.path != candidate.real, candidate.path.as_posix())


def _unsupported(path: Path) -> str:
    return (
        f"unsupported file type '{path.suffix or path.name}' (supported: {supported_suffixes()})"
    )


def _os_reason(error: OSError) -> str:
    return f"cannot read: {error.strerror or error}"
