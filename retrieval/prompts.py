"""Prompt files, loaded at run time from KOTAE_PROMPTS_DIR or the bundled `prompts/` folder.

A replacement folder uses the same file names; a file it lacks falls back to the bundled one.
`answer.md` and `condense.md` are Python format strings: `{sources}`, `{question}`,
`{language}`, `{history}` are filled in, and a literal brace is written `{{` or `}}`. They are
checked when loaded, so a broken custom prompt stops with a message that names the file instead
of failing on the first question or silently leaving the sources out.
`retrieval_only.md` is plain `lang: text` lines.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from retrieval.errors import PromptInvalid

BUNDLED_PROMPTS = Path(__file__).resolve().parent.parent / "prompts"

# file -> (placeholders it must use, placeholders it may use)
TEMPLATES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # The question reaches the model as the human message, so answer.md need not repeat it.
    "answer.md": (frozenset({"sources"}), frozenset({"sources", "language", "question"})),
    "condense.md": (frozenset({"history", "question"}),
                    frozenset({"history", "question", "language"})),
}
WHY_REQUIRED = {
    "sources": "the model would never see the documents",
    "history": "the conversation would never reach the model",
    "question": "the follow-up question would never reach the model",
}


@dataclass(frozen=True)
class Prompts:
    answer: str
    condense: str
    retrieval_only_header: dict[str, str]


def _read(name: str, override_dir: Path | None) -> tuple[str, Path]:
    if override_dir is not None and (override_dir / name).is_file():
        path = override_dir / name
    else:
        path = BUNDLED_PROMPTS / name
    return path.read_text(encoding="utf-8"), path


def _where(path: Path, override_dir: Path | None) -> str:
    if override_dir is not None and path.parent == override_dir:
        return f"KOTAE_PROMPTS_DIR ({override_dir}): {path.name}"
    return f"the bundled prompt {path}"


def check_template(template: str, name: str, where: str) -> None:
    """Raise PromptInvalid unless `template` formats with exactly the placeholders of `name`."""
    required, allowed = TEMPLATES[name]
    allowed_text = ", ".join(f"{{{field}}}" for field in sorted(allowed))
    hint = f"It may use {allowed_text}; write a literal brace as {{{{ or }}}}."
    try:
        fields = [field for _text, field, _spec, _conversion
                  in string.Formatter().parse(template) if field is not None]
    except ValueError as error:  # "Single '}' encountered in format string", …
        raise PromptInvalid(f"{where} is not a valid template ({error}). {hint}") from None
    unknown = sorted({field for field in fields if field not in allowed})
    if unknown:
        shown = ", ".join(f"{{{field}}}" for field in unknown)
        raise PromptInvalid(f"{where} has an unknown placeholder {shown}. {hint}")
    missing = sorted(required - set(fields))
    if missing:
        raise PromptInvalid(f"{where} has no {{{missing[0]}}} placeholder, so "
                            f"{WHY_REQUIRED[missing[0]]}. {hint}")


def load_prompts(override_dir: Path | None = None) -> Prompts:
    if override_dir is not None and not override_dir.is_dir():
        raise PromptInvalid(f"KOTAE_PROMPTS_DIR ({override_dir}) is not a folder.")
    templates = {}
    for name in TEMPLATES:
        text, path = _read(name, override_dir)
        check_template(text, name, _where(path, override_dir))
        templates[name] = text
    headers = {}
    for line in _read("retrieval_only.md", override_dir)[0].splitlines():
        if ":" in line:
            lang, text = line.split(":", 1)
            headers[lang.strip()] = text.strip()
    return Prompts(
        answer=templates["answer.md"],
        condense=templates["condense.md"],
        retrieval_only_header=headers,
    )
