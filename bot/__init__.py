"""Slack surface of kotae: app factory, listeners and Block Kit rendering."""
