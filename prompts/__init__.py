"""Plain-text prompt files, loaded at run time (see retrieval/prompts.py)."""
