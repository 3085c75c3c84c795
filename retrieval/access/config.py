"""The access file (KOTAE_ACCESS_FILE): which document sets exist and who may read each.

Read with `tomllib` and checked strictly: an unknown key, a misspelt default, a set without
paths or a malformed Slack id is an `AccessInvalid` naming the file and the line of the set,
never a configuration that silently shows more than was meant.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from retrieval.errors import KotaeError

Default = Literal["everyone", "nobody"]
EVERYONE: Default = "everyone"

_CHANNEL = re.compile(r"^(?:[CGD][A-Z0-9]{2,}|#[a-z0-9][a-z0-9_\-]{0,79})$")
_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_USERGROUP = re.compile(r"^S[A-Z0-9]{2,}$")
_SET_HEADER = re.compile(r"^\s*\[\[\s*sets\s*\]\]")
_GLOB_CHARS = frozenset("*?[")


class AccessInvalid(KotaeError):
    """The access file cannot be used; nothing is answered until it is fixed (fail closed)."""


class _SetFields(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1)
    paths: list[str] = Field(min_length=1)
    channels: list[str] = Field(default_factory=list)
    users: list[str] = Field(default_factory=list)
    usergroups: list[str] = Field(default_factory=list)
    everyone: bool = False

    @field_validator("paths")
    @classmethod
    def _paths(cls, paths: list[str]) -> list[str]:
        if any(not p.strip() for p in paths):
            raise ValueError("a path is empty")
        return paths

    @field_validator("channels")
    @classmethod
    def _channels(cls, channels: list[str]) -> list[str]:
        return _all_match(channels, _CHANNEL, "a channel id (C…, G…) or #channel-name")

    @field_validator("users")
    @classmethod
    def _users(cls, users: list[str]) -> list[str]:
        return _all_match(users, _USER, "a Slack user id (U…, W…)")

    @field_validator("usergroups")
    @classmethod
    def _usergroups(cls, groups: list[str]) -> list[str]:
        return _all_match(groups, _USERGROUP, "a Slack user group id (S…)")


class _FileFields(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    default: Default = EVERYONE
    sets: list[dict] = Field(default_factory=list)


def _all_match(values: list[str], pattern: re.Pattern[str], what: str) -> list[str]:
    for value in values:
        if not pattern.match(value):
            raise ValueError(f"{value!r} is not {what}")
    return values


@dataclass(frozen=True)
class AccessSet:
    """One named set of documents and who may read it."""

    name: str
    patterns: tuple[str, ...]  # absolute POSIX paths: folders, files or globs
    channels: frozenset[str]  # channel ids, or "#name" until resolved
    users: frozenset[str]
    usergroups: frozenset[str]
    everyone: bool
    line: int  # of its [[sets]] header, for messages

    def holds(self, source: str) -> bool:
        return any(_path_matches(pattern, source) for pattern in self.patterns)


@dataclass(frozen=True)
class AccessConfig:
    path: Path
    default: Default
    sets: tuple[AccessSet, ...]

    def sets_of(self, source: str) -> frozenset[str]:
        """The names of the sets that hold `source` (empty: it falls under `default`)."""
        return frozenset(s.name for s in self.sets if s.holds(source))

    def where(self, access_set: AccessSet) -> str:
        return f"{self.path}, line {access_set.line} (set {access_set.name!r})"


def load_access_config(path: Path) -> AccessConfig:
    """Parse and check the access file; raises AccessInvalid with the file and line."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise AccessInvalid(f"KOTAE_ACCESS_FILE={path}: cannot be read "
                            f"({error.strerror or error})") from None
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        raise AccessInvalid(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:  # its message carries "(at line N, column M)"
        raise AccessInvalid(f"{path}: not valid TOML: {error}") from None
    try:
        fields = _FileFields.model_validate(data)
    except ValidationError as error:
        raise AccessInvalid(f"{path}: {_first_problem(error)} (known top-level keys: "
                            "default, sets)") from None
    header_lines = [number for number, line in enumerate(text.splitlines(), start=1)
                    if _SET_HEADER.match(line)]
    sets: list[AccessSet] = []
    for position, entry in enumerate(fields.sets):
        line = header_lines[position] if position < len(header_lines) else 0
        where = f"{path}, line {line} (set {position + 1})"
        try:
            one = _SetFields.model_validate(entry)
        except ValidationError as error:
            raise AccessInvalid(f"{where}: {_first_problem(error)} (known keys: name, paths, "
                                "channels, users, usergroups, everyone)") from None
        if any(s.name == one.name for s in sets):
            raise AccessInvalid(f"{where}: a second set named {one.name!r}")
        sets.append(AccessSet(
            name=one.name, patterns=tuple(_absolute(p, path.parent) for p in one.paths),
            channels=frozenset(one.channels), users=frozenset(one.users),
            usergroups=frozenset(one.usergroups), everyone=one.everyone, line=line))
    return AccessConfig(path=path, default=fields.default, sets=tuple(sets))


def _first_problem(error: ValidationError) -> str:
    problems = error.errors()
    # a misspelt key is the likelier mistake than the field it was meant to be
    first = next((e for e in problems if e["type"] == "extra_forbidden"), problems[0])
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    return f"{where}: {message[:1].lower() + message[1:]}" if where else message


def _absolute(pattern: str, base: Path) -> str:
    """A path of the file is relative to the folder the access file is in."""
    expanded = Path(pattern).expanduser()
    if not expanded.is_absolute():
        expanded = base.resolve() / expanded
    return PurePosixPath(expanded.as_posix()).as_posix()


def _path_matches(pattern: str, source: str) -> bool:
    """A plain path holds itself and everything below it; a glob matches whole path segments
    (`*` and `?` stay within one, `**` crosses any number)."""
    if not _GLOB_CHARS.intersection(pattern):
        return source == pattern or source.startswith(pattern.rstrip("/") + "/")
    return _glob_regex(pattern).match(source) is not None


def _glob_regex(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            parts.append("(?:[^/]+/)*")
            i += 3
            continue
        if pattern.startswith("**", i):
            parts.append(".*")
            i += 2
            continue
        if char == "*":
            parts.append("[^/]*")
        elif char == "?":
            parts.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                parts.append(re.escape(char))
            else:
                body = pattern[i + 1:end]
                body = "^" + body[1:] if body.startswith("!") else body
                parts.append(f"[{body}]")
                i = end
        else:
            parts.append(re.escape(char))
        i += 1
    # a glob naming a folder holds what is below it too
    return re.compile("".join(parts) + "(?:/.*)?\\Z")
