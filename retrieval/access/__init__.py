"""Who may see what: document sets from KOTAE_ACCESS_FILE, audiences, and the row filter the
retriever applies before ranking. Knows nothing of Slack: the bot says who the audience is."""

from retrieval.access.audience import Audience, Visibility, may_read, visibility
from retrieval.access.config import AccessConfig, AccessInvalid, AccessSet, load_access_config
from retrieval.access.control import AccessControl, ChannelResolver

__all__ = [
    "AccessConfig",
    "AccessControl",
    "AccessInvalid",
    "AccessSet",
    "Audience",
    "ChannelResolver",
    "Visibility",
    "load_access_config",
    "may_read",
    "visibility",
]
