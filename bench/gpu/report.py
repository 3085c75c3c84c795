"""The raw-numbers JSON (parts run in separate calls merge through it) and the RESULTS.md
section rendered from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.gpu.config import PARTS
from bench.gpu.facts import facts_markdown
from bench.gpu.measure import log


def load_previous(path: Path, device: str, fresh: bool) -> dict[str, Any]:
    """Parts measured earlier on the same device, so separate calls make one section."""
    if fresh or not path.exists():
        return {}
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    if previous.get("facts", {}).get("device") != device:
        log(f"{path}: measured on {previous.get('facts', {}).get('device')}, not {device}; "
            "starting a new file")
        return {}
    return dict(previous.get("parts", {}))


def render(payload: dict[str, Any]) -> str:
    parts = payload["parts"]
    commands = sorted({part["command"] for part in parts.values()})
    lines = [f"## GPU ({', '.join(f'`{c}`' for c in commands)})",
             payload["machine"], facts_markdown(payload["facts"])]
    for name in PARTS:
        if name in parts:
            part = parts[name]
            lines.append(f"{part['markdown']}\n\n_({name}: {part['finished']}, "
                         f"{part['seconds'] / 60:.1f} min)_")
    return "\n\n".join(lines)
