"""What is embedded for a chunk: its title and heading path, then its text.

Apart from chunking because the retriever rebuilds it at query time (ColBERT re-encoding) and
must not import the loaders and splitters to do so.
"""

from __future__ import annotations

HEADING_SEPARATOR = " › "


def embedding_text_for(title: str, heading_path: list[str], text: str) -> str:
    """`title › heading › sub-heading`, a blank line, then the text; rebuilt from stored
    metadata where needed, so it is not stored twice. A first heading equal to the title is
    not repeated."""
    context = list(heading_path)
    if context and context[0] == title:
        context = context[1:]
    prefix = HEADING_SEPARATOR.join(part for part in [title, *context] if part)
    return f"{prefix}\n\n{text}" if prefix else text
