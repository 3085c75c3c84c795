"""Who will read an answer, and which document sets that allows.

The rule a security reviewer signs: an answer posted where several people read it uses only
what all of them may see. So a channel audience gets the sets naming that channel and the sets
open to everyone — never a set granted to the person who happened to ask. A private audience
(one user) gets the sets naming the user, a user group they are in, or a channel they are a
member of, plus the sets open to everyone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from retrieval.access.config import AccessConfig

AudienceKind = Literal["operator", "channel", "user"]


@dataclass(frozen=True)
class Audience:
    """`channel`: where the answer is posted (kind channel). `user`, `usergroups`, `channels`:
    a private reader and the user groups and channels (of those the access file names) Slack
    says they belong to. `narrowed`: some membership could not be checked, so it counts as
    not held."""

    kind: AudienceKind
    channel: str | None = None
    user: str | None = None
    usergroups: frozenset[str] = field(default_factory=frozenset)
    channels: frozenset[str] = field(default_factory=frozenset)
    narrowed: bool = False

    @classmethod
    def operator(cls) -> Audience:
        """The operator at the CLI: everything indexed."""
        return cls("operator")

    @classmethod
    def in_channel(cls, channel: str) -> Audience:
        return cls("channel", channel=channel)

    @classmethod
    def private(cls, user: str, *, usergroups: frozenset[str] = frozenset(),
                channels: frozenset[str] = frozenset(), narrowed: bool = False) -> Audience:
        return cls("user", user=user, usergroups=usergroups, channels=channels,
                   narrowed=narrowed)

    def describe(self) -> str:
        if self.kind == "channel":
            return f"channel {self.channel}"
        if self.kind == "user":
            return f"user {self.user}"
        return "operator"


@dataclass(frozen=True)
class Visibility:
    """What one audience may read: these sets, and the sources in no set when `default`
    says everyone may read those. `everything`: no restriction at all (the operator)."""

    sets: frozenset[str]
    unassigned: bool
    everything: bool = False


def visibility(config: AccessConfig, audience: Audience) -> Visibility:
    unassigned = config.default == "everyone"
    if audience.kind == "operator":
        return Visibility(frozenset(s.name for s in config.sets), True, everything=True)
    visible = set()
    for access_set in config.sets:
        if access_set.everyone:
            visible.add(access_set.name)
        elif audience.kind == "channel":
            if audience.channel in access_set.channels:
                visible.add(access_set.name)
        elif (audience.user in access_set.users
              or audience.usergroups & access_set.usergroups
              or audience.channels & access_set.channels):
            visible.add(access_set.name)
    return Visibility(frozenset(visible), unassigned)


def may_read(visible: Visibility, source_sets: frozenset[str]) -> bool:
    """A source in several sets may be read through any of them (sets grant, never deny)."""
    if visible.everything:
        return True
    if not source_sets:
        return visible.unassigned
    return bool(source_sets & visible.sets)
