"""Typed results passed between retrieval, the answer chain and the surfaces (Slack, CLI)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

RetrievalMode = Literal["dense", "sparse", "hybrid", "all"]


@dataclass(frozen=True)
class Turn:
    """One message of a conversation (Slack thread) before the question."""

    role: str  # "user" | "assistant"
    text: str


class SearchHit(BaseModel):
    """One retrieved chunk with its scores; `score` is the combined score used for ranking."""

    chunk_id: str
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    score: float
    dense: float | None = None
    sparse: float | None = None
    colbert: float | None = None

    @property
    def title(self) -> str:
        return str(self.metadata.get("title") or self.metadata.get("source", ""))

    @property
    def heading_path(self) -> list[str]:
        return list(self.metadata.get("heading_path") or [])

    @property
    def section_path(self) -> list[str]:
        """Headings below the title: the H1 usually repeats the title ("T › T › …")."""
        headings = self.heading_path
        return headings[1:] if headings[:1] == [self.title] else headings

    @property
    def source(self) -> str:
        return str(self.metadata.get("source", ""))

    @property
    def url(self) -> str | None:
        url = self.metadata.get("url")
        return str(url) if url else None


class Citation(BaseModel):
    """A numbered source shown under an answer. `cited` is False for 'related' sources."""

    number: int
    title: str
    heading_path: list[str] = Field(default_factory=list)
    source: str
    url: str | None = None
    chunk_id: str
    score: float
    snippet: str
    cited: bool = True


class Answer(BaseModel):
    """What a question turns into: text with [n] markers plus the sources those markers name.

    `kind` tells the surface how to present it:
    - "answer": the model answered from the sources;
    - "retrieval_only": no model (no key, or the model failed: see `notice`), sources only;
    - "no_match": nothing relevant enough was found;
    - "no_index": there is no index yet.
    """

    answer_id: str
    question: str
    standalone_question: str | None = None
    text: str
    citations: list[Citation] = Field(default_factory=list)
    mode: RetrievalMode = "hybrid"
    kind: Literal["answer", "retrieval_only", "no_match", "no_index"] = "answer"
    notice: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
