"""The key/value rows of `<prefix>_meta`: JSON objects of any size, split over rows.

A value is stored as ASCII-only JSON (so characters are bytes, under Milvus' VARCHAR limit) in
pieces of META_PIECE characters: row `key` holds the first piece and the number of pieces,
rows `key#1`, `key#2`, ... the rest. Each row also carries a `kind` and a `build` number, so
version records and open builds can be listed without reading their values.
"""

from __future__ import annotations

import json
from typing import Any

from retrieval.stores.milvus.connection import Milvus
from retrieval.stores.milvus.schema import DUMMY_VECTOR, META, META_PIECE


class MetaRows:
    def __init__(self, milvus: Milvus) -> None:
        self.milvus = milvus

    def put(self, key: str, kind: str, build: int, value: Any) -> None:
        """One upsert: the pieces of a value are written together (the pointer is one row)."""
        text = json.dumps(value, ensure_ascii=True)
        pieces = [text[i:i + META_PIECE] for i in range(0, len(text), META_PIECE)] or [""]
        old = self._pieces(key)
        self.milvus.upsert(META, [
            {"key": key if part == 0 else f"{key}#{part}", "kind": kind if part == 0 else "",
             "build": build, "part": part, "parts": len(pieces), "value": piece,
             "vec": DUMMY_VECTOR}
            for part, piece in enumerate(pieces)])
        if old > len(pieces):
            self.milvus.delete(META, ids=[f"{key}#{part}" for part in range(len(pieces), old)])

    def get(self, key: str) -> Any | None:
        found = self.milvus.get(META, [key], ["value", "parts"])
        if not found:
            return None
        parts = int(found[0]["parts"])
        text = found[0]["value"]
        if parts > 1:
            rest = {row["key"]: row["value"] for row in self.milvus.get(
                META, [f"{key}#{part}" for part in range(1, parts)], ["key", "value"])}
            text += "".join(rest[f"{key}#{part}"] for part in range(1, parts))
        return json.loads(text)

    def delete(self, key: str) -> None:
        parts = self._pieces(key)
        if parts:
            self.milvus.delete(META, ids=[key, *(f"{key}#{part}" for part in range(1, parts))])

    def listed(self, kind: str) -> list[tuple[str, int]]:
        """(key, build) of the values of `kind`."""
        rows = self.milvus.query(META, f'kind == "{kind}"', ["key", "build"])
        return sorted(((row["key"], int(row["build"])) for row in rows), key=lambda r: r[1])

    def _pieces(self, key: str) -> int:
        found = self.milvus.get(META, [key], ["parts"])
        return int(found[0]["parts"]) if found else 0
