"""CSV: each row as `column: value` lines, rows separated by blank lines, so a row stays whole
in one chunk and each value keeps the name of its column."""

from __future__ import annotations

import csv
import io

from retrieval.loaders.formats.base import Format, Parsed, RawFile
from retrieval.loaders.model import UnloadableFile


def parse(raw: RawFile) -> Parsed:
    try:
        rows = list(csv.reader(io.StringIO(raw.text)))
    except csv.Error as error:
        raise UnloadableFile(f"invalid CSV: {error}") from error
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        return Parsed(text="")
    header = [cell.strip() for cell in rows[0]]
    records = []
    for row in rows[1:]:
        pairs = [
            f"{header[i] if i < len(header) and header[i] else f'column {i + 1}'}: {cell.strip()}"
            for i, cell in enumerate(row)
            if cell.strip()
        ]
        records.append("\n".join(pairs))
    return Parsed(text="\n\n".join(records))


FORMAT = Format(kind="csv", suffixes=(".csv",), parse=parse)
