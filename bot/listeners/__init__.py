"""Slack listeners grouped by surface; each module has register(app, ...)."""
