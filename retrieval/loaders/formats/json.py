"""JSON: pretty-printed with Japanese kept as characters; a top-level `title` names the file."""

from __future__ import annotations

import json

from retrieval.loaders.formats.base import Format, Parsed, RawFile
from retrieval.loaders.model import UnloadableFile


def parse(raw: RawFile) -> Parsed:
    try:
        data = json.loads(raw.text)
    except json.JSONDecodeError as error:
        raise UnloadableFile(f"invalid JSON: {error}") from error
    if data in (None, "", [], {}):
        return Parsed(text="")
    title = data.get("title") if isinstance(data, dict) else None
    return Parsed(
        title=title if isinstance(title, str) else None,
        text=json.dumps(data, ensure_ascii=False, indent=2),
    )


FORMAT = Format(kind="json", suffixes=(".json",), parse=parse)
