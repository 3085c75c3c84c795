"""Domain errors. Raised deep, turned into a user-facing message once, at the edge (Slack, CLI)."""


class KotaeError(Exception):
    """Base class; `str(error)` is written for the person who has to act on it. Where that is
    the operator (a server's address, what it answered), `for_users` is what a Slack user is
    told instead, and the details go to the log."""

    for_users: str | None = None


class SettingsInvalid(KotaeError):
    """A setting from the environment or `.env` has a value it cannot take."""


class ModelUnavailable(KotaeError):
    """The embedding model cannot be loaded (weights missing, no network, incomplete checkpoint)."""


class IndexMissing(KotaeError):
    """No index has been built yet at the configured location."""


class IndexPathMissing(KotaeError):
    """A folder to index does not exist, and going on would drop what was indexed from it."""


class IndexSwapRefused(KotaeError):
    """Explicit paths would replace most of the index's documents; `--replace` confirms it."""


class IndexDiskFull(KotaeError):
    """The disk filled up (no space, over quota or over the file size limit) while a build was
    written: the build is discarded, the served version is as it was, and what was embedded
    before the failure stays in the embedding cache for the next run."""


class IndexLocked(KotaeError):
    """Another indexer holds the index lock."""


class LLMUnavailable(KotaeError):
    """The chat model failed after its retries (timeout, 5xx, 429) or is not configured."""


class PromptInvalid(KotaeError):
    """A prompt file cannot be used: a required placeholder is missing, an unknown one is
    present, or a brace is unbalanced."""
