"""Everything about documents and answers. Knows nothing of Slack."""
