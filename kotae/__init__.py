"""kotae (答え): answers Slack questions from your team's own documents, with citations."""

__version__ = "0.1.0"
