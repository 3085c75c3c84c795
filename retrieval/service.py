"""The one object the surfaces (CLI, Slack) talk to: search, answer, reindex, status.

Everything is built lazily from `Settings`, so constructing a service costs nothing and a
missing model only fails when it is actually needed.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrieval.access import AccessControl, Audience
from retrieval.devices import cuda_available, default_mode, resolved_faiss_device
from retrieval.embeddings import BGEM3Embeddings
from retrieval.settings import Settings
from retrieval.stores import ServedIndex, open_store_backend
from retrieval.types import Answer, RetrievalMode, SearchHit

if TYPE_CHECKING:  # the chain pulls in LangChain and the OpenAI client: ~1 s, not for `status`
    from langchain_core.language_models import BaseChatModel

    from retrieval.chain import AnswerChain, AnswerEvent, Turn
    from retrieval.indexer import IndexSummary, ProgressCallback
    from retrieval.retriever import HybridRetriever


class KotaeService:
    def __init__(self, settings: Settings, embeddings: BGEM3Embeddings | None = None,
                 chat_model: BaseChatModel | None = None) -> None:
        self.settings = settings
        self._chat_model = chat_model
        self.embeddings = embeddings or BGEM3Embeddings.from_settings(settings)
        self.index = ServedIndex(open_store_backend(settings))
        self.access = AccessControl(settings.access_file)
        self._reindex_lock = threading.Lock()

    @functools.cached_property
    def retriever(self) -> HybridRetriever:
        from retrieval.retriever import HybridRetriever

        return HybridRetriever.from_settings(self.settings, self.index, self.embeddings,
                                             self.access)

    @functools.cached_property
    def chain(self) -> AnswerChain:
        from retrieval.chain import AnswerChain

        return AnswerChain.from_settings(
            self.settings, self.search, self.embeddings.token_length, self.mode,
            chat_model=self._chat_model)

    def check_answer_setup(self) -> None:
        """Build the answer chain now (prompt files checked, chat model configured) rather than
        on the first question: a server should stop at startup on a broken KOTAE_PROMPTS_DIR
        (PromptInvalid), not apologise to every user. Loads no model and reads no index."""
        _ = self.chain

    def ask(self, question: str, history: Sequence[Turn] = (), *,
            mode: RetrievalMode | None = None, audience: Audience | None = None) -> Answer:
        """`audience`: who reads the answer; required while KOTAE_ACCESS_FILE is set
        (`Audience.operator()` sees everything)."""
        return self.chain.invoke(question, history, mode=mode, audience=audience)

    def stream(self, question: str, history: Sequence[Turn] = (), *,
               mode: RetrievalMode | None = None,
               audience: Audience | None = None) -> Iterator[AnswerEvent]:
        return self.chain.stream(question, history, mode=mode, audience=audience)

    @property
    def mode(self) -> RetrievalMode:
        return default_mode(self.settings)

    def search(self, query: str, *, mode: RetrievalMode | None = None, k: int | None = None,
               timings: dict[str, float] | None = None,
               audience: Audience | None = None) -> list[SearchHit]:
        return self.retriever.search(query, mode=mode, k=k, timings=timings,
                                     audience=audience)

    def check_access(self) -> None:
        """Read the access file now and check its sets against the served index: a server
        stops at start-up on a broken file (AccessInvalid) rather than at the first question.
        Nothing happens while KOTAE_ACCESS_FILE is unset."""
        if not self.access.enabled:
            return
        version = self.index.version
        self.access.check(self.index.store() if version else None)

    def access_status(self) -> dict[str, Any]:
        """The sets, the files and chunks each holds, and the default (cheap: reads the
        served version's file records, not its vectors)."""
        if not self.access.enabled:
            return {"enabled": False}
        version = self.index.version
        files = self.index.versions.file_records(version) if version else {}
        return self.access.summary(files)

    def reindex(self, paths: Sequence[Path] | None = None, *, full: bool = False,
                replace: bool = False, holder: str = "cli",
                progress: ProgressCallback | None = None) -> IndexSummary:
        from retrieval.indexer import Indexer

        return Indexer(self.settings, self.embeddings).run(
            paths, full=full, replace=replace, holder=holder, progress=progress)

    def status(self) -> dict[str, Any]:
        manifest = self.index.manifest() or {}
        return {
            "index_version": manifest.get("version"),
            "documents": manifest.get("files", 0),
            "chunks": manifest.get("chunks", 0),
            "last_indexed": manifest.get("created_at"),
            "model": self.settings.embedding_model,
            # what a process starting now would use (auto resolved; a loaded model says)
            "embedding_device": (self.embeddings.resolved_device if self.embeddings.loaded
                                 else self._embedding_device()),
            "faiss_device": resolved_faiss_device(self.settings.faiss_device),
            "retrieval_mode": self.mode,
            "index_dir": str(self.settings.index_dir),
            "index_store": self.index.versions.location,  # a folder, or Milvus (URI masked)
            "embedding_cache": self._embedding_cache(),
            "index_size": self._index_size(),
            "access": self.access_status(),
        }

    def _index_size(self) -> str:
        """The served version's size as its backend tells it without opening it (local: disk,
        mapped memory and segments from its segment list; Milvus: rows)."""
        version = self.index.version
        if version is None:
            return "none"
        summary = getattr(self.index.versions, "size_summary", None)
        return "not reported by this backend" if summary is None else str(summary(version))

    def _embedding_cache(self) -> str:
        """Size on disk and entries of the embedding cache (read-only; none before a build)."""
        from retrieval.indexing.cache import cache_size

        size = cache_size(self.settings.index_dir)
        return "none" if size is None else size.describe()

    def _embedding_device(self) -> str:
        device = self.settings.embedding_device
        if device == "auto":
            return "cuda:0" if cuda_available() else "cpu"
        return "cuda:0" if device == "cuda" else device

