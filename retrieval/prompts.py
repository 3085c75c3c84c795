"""Prompt files, loaded at run time from KOTAE_PROMPTS_DIR or the bundled `prompts/` folder.

A replacement folder uses the same file names; a file it lacks falls back to the bundled one.
Templates are Python format strings: `{sources}`, `{question}`, `{language}`, `{history}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BUNDLED_PROMPTS = Path(__file__).resolve().parent.parent / "prompts"


@dataclass(frozen=True)
class Prompts:
    answer: str
    condense: str
    retrieval_only_header: dict[str, str]


def _read(name: str, override_dir: Path | None) -> str:
    if override_dir is not None and (override_dir / name).is_file():
        return (override_dir / name).read_text(encoding="utf-8")
    return (BUNDLED_PROMPTS / name).read_text(encoding="utf-8")


def load_prompts(override_dir: Path | None = None) -> Prompts:
    headers = {}
    for line in _read("retrieval_only.md", override_dir).splitlines():
        if ":" in line:
            lang, text = line.split(":", 1)
            headers[lang.strip()] = text.strip()
    return Prompts(
        answer=_read("answer.md", override_dir),
        condense=_read("condense.md", override_dir),
        retrieval_only_header=headers,
    )
