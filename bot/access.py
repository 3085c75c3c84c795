"""Who reads an answer, as Slack knows it: the `Audience` of a question.

An answer posted where several people read it (a channel, a shared channel, a group DM, a
slash command's public thread) is for that channel: it may use the sets naming the channel and
the sets open to everyone, never what only the asker may see. A private answer (a DM with
kotae, a slash command answered through its response URL) is for the asker alone: the sets
naming them, a user group they are in (usergroups.users.list) or a channel they are a member
of (conversations.members), checked for the groups and channels the access file names and
cached for `ttl_s`. When Slack cannot say, the membership counts as not held: the answer uses
the narrower scope, and `Audience.narrowed` tells the asker so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import TypeVar

from slack_sdk import WebClient

from bot.errors import SLACK_CALL_ERRORS
from bot.question import Question
from retrieval.access import AccessControl, Audience

logger = logging.getLogger(__name__)

MEMBERS_PAGE = 1000
Value = TypeVar("Value")


class MembershipUnknown(Exception):
    """Slack did not answer a membership question (refused, unreachable)."""


class SlackDirectory:
    """Channel names, channel members and user group members, each cached for `ttl_s`."""

    def __init__(self, client: WebClient, *, ttl_s: float) -> None:
        self.client, self.ttl_s = client, ttl_s
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[float, object]] = {}

    def channel_id(self, name: str) -> str | None:
        """The id of the channel called `name` (without '#'), among those kotae can list."""
        names = self._cached(("names", ""), self._channel_names)
        return names.get(name)

    def channel_members(self, channel: str) -> frozenset[str]:
        return self._cached(("members", channel), lambda: self._members(channel))

    def usergroup_users(self, group: str) -> frozenset[str]:
        return self._cached(("usergroup", group), lambda: self._usergroup(group))

    def _cached(self, key: tuple[str, str], fetch: Callable[[], Value]) -> Value:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]  # type: ignore[return-value]
        try:
            value = fetch()
        except SLACK_CALL_ERRORS as error:
            code = getattr(getattr(error, "response", None), "get", lambda _k: None)("error")
            raise MembershipUnknown(f"{key[0]} {key[1]}: {code or type(error).__name__}"
                                    ) from error
        with self._lock:
            self._cache[key] = (now, value)
        return value

    def _channel_names(self) -> dict[str, str]:
        names: dict[str, str] = {}
        cursor = None
        while True:
            page = self.client.conversations_list(
                types="public_channel,private_channel", exclude_archived=True, limit=1000,
                cursor=cursor)
            names.update({c["name"]: c["id"] for c in page.get("channels", [])
                          if isinstance(c, dict) and "name" in c and "id" in c})
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return names

    def _members(self, channel: str) -> frozenset[str]:
        members: set[str] = set()
        cursor = None
        while True:
            page = self.client.conversations_members(channel=channel, limit=MEMBERS_PAGE,
                                                     cursor=cursor)
            members.update(page.get("members", []))
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return frozenset(members)

    def _usergroup(self, group: str) -> frozenset[str]:
        return frozenset(self.client.usergroups_users_list(usergroup=group).get("users", []))


def is_private(question: Question) -> bool:
    """Only the asker reads the answer: a DM with kotae, or a response-URL answer."""
    return question.surface == "private" or question.channel_type == "im"


class Audiences:
    """The audience of each question, or None while access control is off."""

    def __init__(self, access: AccessControl, directory: SlackDirectory) -> None:
        self.access, self.directory = access, directory

    def of(self, question: Question) -> Audience | None:
        if not self.access.enabled:
            return None
        if not is_private(question):
            return Audience.in_channel(question.channel)
        return self.private(question.user)

    def private(self, user: str) -> Audience:
        """`user` reading alone, with the user groups and channels (of those the access file
        names) Slack says they belong to."""
        config = self.access.config()
        groups, groups_unknown = _memberships(
            user, {g for s in config.sets for g in s.usergroups}, self.directory.usergroup_users)
        channels, channels_unknown = _memberships(
            user, {c for s in config.sets for c in s.channels}, self.directory.channel_members)
        return Audience.private(user, usergroups=groups, channels=channels,
                                narrowed=groups_unknown or channels_unknown)


def _memberships(user: str, wanted: set[str],
                 members: Callable[[str], Collection[str]]) -> tuple[frozenset[str], bool]:
    """Which of `wanted` (user groups or channels) `user` is in, and whether some could not be
    checked (those count as not held: a narrower answer)."""
    held: set[str] = set()
    unknown = False
    for name in sorted(wanted):
        try:
            if user in members(name):
                held.add(name)
        except MembershipUnknown as error:
            logger.warning("membership not checked (%s): narrower answer", error)
            unknown = True
    return frozenset(held), unknown
