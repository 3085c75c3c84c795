"""`--as-channel` / `--as-user` for `kotae search` and `kotae ask`: the operator sees
everything by default; these show exactly what a channel or a user would get in Slack.

A user's user groups and channel memberships come from Slack, as the bot checks them, when
SLACK_BOT_TOKEN is set; without it only what the access file grants the user by id applies,
and the CLI says so.
"""

from __future__ import annotations

from retrieval.access import Audience
from retrieval.service import KotaeService


def audience_for(service: KotaeService, as_channel: str | None,
                 as_user: str | None) -> tuple[Audience | None, list[str]]:
    """(the audience to search for, notes for the operator)."""
    if as_channel and as_user:
        raise ValueError("give --as-channel or --as-user, not both")
    if not service.access.enabled:
        notes = (["KOTAE_ACCESS_FILE is not set: every document is visible everywhere"]
                 if as_channel or as_user else [])
        return None, notes
    if not as_channel and not as_user:
        return Audience.operator(), []
    audiences = _slack_audiences(service)
    notes: list[str] = []
    if as_channel:
        channel = as_channel
        if audiences is not None and channel.startswith("#"):
            found = audiences.directory.channel_id(channel[1:])
            if found is None:
                raise ValueError(f"no channel named {channel} that kotae can see")
            channel = found
        return Audience.in_channel(channel), notes
    assert as_user is not None
    if audiences is None:
        notes.append(f"SLACK_BOT_TOKEN is not set: {as_user}'s user groups and channel "
                     "memberships are not checked; showing what the file grants them by id")
        return Audience.private(as_user), notes
    audience = audiences.private(as_user)
    if audience.narrowed:
        notes.append("Slack did not answer every membership check: a narrower answer, as "
                     "the bot would give")
    return audience, notes


def _slack_audiences(service: KotaeService):  # type: ignore[no-untyped-def]
    """The bot's membership checks, when the settings name a Slack bot token."""
    from bot.settings import BotSettings
    from retrieval.settings import load_settings

    settings = load_settings(BotSettings)
    if settings.slack_bot_token is None:
        return None
    from bot.access import Audiences, SlackDirectory
    from bot.app import check_access, make_client

    directory = SlackDirectory(make_client(settings), ttl_s=settings.access_membership_ttl_s)
    audiences = check_access(service, directory)
    assert isinstance(audiences, Audiences)
    return audiences
