"""The answer chain: (condense) → hybrid retrieval → numbered sources → chat model → cited answer.

Built from LCEL runnables (prompt | ChatOpenAI | parser) for the model steps, orchestrated here
rather than with langchain-classic's `create_retrieval_chain`: the product needs things that
chain does not give — streaming tokens AND a structured result at the end, citation
post-processing, and a retrieval-only fallback when the model is missing or fails — and
writing those as plain Python around two small runnables keeps each step testable.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda

from retrieval.citations import related_citations, resolve_citations
from retrieval.context import PackedSource, format_sources, pack_sources
from retrieval.errors import IndexMissing, LLMUnavailable
from retrieval.language import LANGUAGE_NAMES, detect_language, message
from retrieval.prompts import Prompts, load_prompts
from retrieval.settings import Settings
from retrieval.types import Answer, RetrievalMode, SearchHit, Turn

if TYPE_CHECKING:
    from retrieval.access import Audience

logger = logging.getLogger(__name__)

HISTORY_TURNS = 10
RELATED_LIMIT = 3
# How a condensed follow-up reaches the answer model (prompts/answer.md, rule 6).
ASKED_LABEL = "Question as asked"
STANDALONE_LABEL = "Standalone question"


# (query, *, mode=None, timings=None[, audience]) -> hits; `audience` is passed only when
# the question has one, so a search that knows no access control keeps working
Search = Callable[..., list[SearchHit]]
AnswerEvent = str | Answer  # streamed tokens, then exactly one final Answer


def build_chat_model(settings: Settings) -> BaseChatModel | None:
    """ChatOpenAI for any OpenAI-compatible endpoint; None when no key is configured."""
    if settings.openai_api_key is None or not settings.openai_api_key.get_secret_value():
        return None
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=settings.chat_model,
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        temperature=settings.chat_temperature,
        timeout=settings.chat_timeout,
        max_retries=settings.chat_max_retries,  # the openai client backs off on 429/5xx/timeouts
        use_responses_api=False,  # Chat Completions: what vLLM & co. serve
        stream_usage=False,
    )


# What a failing model call raises after the client's own retries.
MODEL_ERRORS: tuple[type[BaseException], ...] = (openai.APIError, openai.OpenAIError,
                                                 TimeoutError, ConnectionError)


class AnswerChain:
    """Answers a question (with optional thread history) from the index, never silently."""

    def __init__(self, search: Search, token_length: Callable[[str], int],
                 chat_model: BaseChatModel | None, *, prompts: Prompts | None = None,
                 context_token_budget: int = 3000, min_score: float = 0.0,
                 default_mode: RetrievalMode = "hybrid") -> None:
        self.search = search
        self.token_length = token_length
        self.chat_model = chat_model
        self.prompts = prompts or load_prompts()
        self.context_token_budget = context_token_budget
        self.min_score = min_score
        self.default_mode = default_mode
        if chat_model is not None:
            parser = StrOutputParser()
            self._answer: Runnable | None = (
                ChatPromptTemplate.from_messages(
                    [("system", self.prompts.answer), ("human", "{question}")])
                | chat_model | parser)
            self._condense: Runnable | None = (
                ChatPromptTemplate.from_messages([("human", self.prompts.condense)])
                | chat_model | parser)
        else:
            self._answer = self._condense = None

    @classmethod
    def from_settings(cls, settings: Settings, search: Search,
                      token_length: Callable[[str], int], default_mode: RetrievalMode,
                      chat_model: BaseChatModel | None = None) -> AnswerChain:
        return cls(search, token_length, chat_model or build_chat_model(settings),
                   prompts=load_prompts(settings.prompts_dir),
                   context_token_budget=settings.context_token_budget,
                   min_score=settings.min_score, default_mode=default_mode)

    def invoke(self, question: str, history: Sequence[Turn] = (), *,
               mode: RetrievalMode | None = None, audience: Audience | None = None) -> Answer:
        answer = None
        for event in self.stream(question, history, mode=mode, audience=audience):
            if isinstance(event, Answer):
                answer = event
        assert answer is not None
        return answer

    def as_runnable(self) -> Runnable:
        """For LangChain composition: {"question", "history"?} -> Answer."""
        return RunnableLambda(lambda inputs: self.invoke(inputs["question"],
                                                         inputs.get("history", ())))

    def stream(self, question: str, history: Sequence[Turn] = (), *,
               mode: RetrievalMode | None = None,
               audience: Audience | None = None) -> Iterator[AnswerEvent]:
        """Yield answer text pieces as the model writes them, then the final `Answer`.

        `audience` reaches the search, which leaves out what it may not see: every source,
        citation and related source below comes from those hits only."""
        started = time.perf_counter()
        timings: dict[str, float] = {}
        mode = mode or self.default_mode
        language = detect_language(question)
        base = {"answer_id": uuid.uuid4().hex[:12], "question": question, "mode": mode}

        standalone = question
        condense_failed = False
        if history and self._condense is not None:
            t0 = time.perf_counter()
            try:
                standalone = self._condense_question(question, history, language)
            except MODEL_ERRORS as error:
                # The model already failed after its retries; an answer call would only
                # repeat them. Retrieve with the question as asked and show the sources.
                logger.warning("condensing failed after retries (%s); retrieval only",
                               type(error).__name__)
                condense_failed = True
            timings["condense_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        try:
            scoped = {} if audience is None else {"audience": audience}
            hits = self.search(standalone, mode=mode, timings=timings, **scoped)
        except IndexMissing as error:
            yield Answer(**base, text=str(error), kind="no_index",
                         timings=_done(timings, started))
            return
        timings["retrieve_s"] = time.perf_counter() - t0
        relevant = [hit for hit in hits if hit.score >= self.min_score]
        if not relevant:
            yield Answer(**base, standalone_question=standalone,
                         text=message("no_match", language), kind="no_match",
                         timings=_done(timings, started))
            return

        if self._answer is None:
            yield self._retrieval_only(base, standalone, relevant, language,
                                       message("no_llm", language), timings, started)
            return
        if condense_failed:
            yield self._retrieval_only(base, standalone, relevant, language,
                                       message("llm_unavailable", language), timings, started)
            return

        packed = pack_sources(relevant, self.context_token_budget, self.token_length)
        inputs = {"sources": format_sources(packed),
                  "question": question_for_answer(question, standalone),
                  "language": LANGUAGE_NAMES.get(language, language)}
        pieces: list[str] = []
        t0 = time.perf_counter()
        try:
            for piece in self._answer.stream(inputs):
                if not piece:  # LangChain's first chunk is the role delta, with no text
                    continue
                if not pieces:
                    timings["first_token_s"] = time.perf_counter() - started
                pieces.append(piece)
                yield piece
        except MODEL_ERRORS as error:
            logger.warning("chat model failed after retries: %s", type(error).__name__)
            yield self._retrieval_only(base, standalone, relevant, language,
                                       message("llm_unavailable", language), timings, started)
            return
        timings["llm_s"] = time.perf_counter() - t0
        yield self._finish(base, standalone, "".join(pieces), packed, timings, started)

    def _condense_question(self, question: str, history: Sequence[Turn], language: str) -> str:
        assert self._condense is not None
        turns = list(history)[-HISTORY_TURNS:]
        transcript = "\n".join(f"{turn.role}: {turn.text}" for turn in turns)
        standalone = self._condense.invoke({
            "history": transcript, "question": question,
            "language": LANGUAGE_NAMES.get(language, language)}).strip()
        return standalone or question

    def _finish(self, base: dict, standalone: str, text: str, packed: list[PackedSource],
                timings: dict[str, float], started: float) -> Answer:
        cleaned, citations = resolve_citations(text, packed)
        if not citations:  # the model cited nothing: still show where to look
            citations = related_citations([p.hit for p in packed], RELATED_LIMIT)
        return Answer(**base, standalone_question=standalone, text=cleaned,
                      citations=citations, kind="answer", timings=_done(timings, started))

    def _retrieval_only(self, base: dict, standalone: str, hits: list[SearchHit],
                        language: str, notice: str, timings: dict[str, float],
                        started: float) -> Answer:
        header = self.prompts.retrieval_only_header.get(
            language, self.prompts.retrieval_only_header.get("en", ""))
        return Answer(**base, standalone_question=standalone, text=header,
                      citations=related_citations(hits, RELATED_LIMIT), kind="retrieval_only",
                      notice=notice, timings=_done(timings, started))


def question_for_answer(question: str, standalone: str) -> str:
    """The human message of the answer prompt. A follow-up ("and the deadline?") means little
    without the thread, so the model gets the standalone question too, beside the user's own
    words (never trimmed, never replaced)."""
    if " ".join(standalone.split()) == " ".join(question.split()):
        return question
    return f"{ASKED_LABEL}: {question}\n{STANDALONE_LABEL}: {standalone}"


def _done(timings: dict[str, float], started: float) -> dict[str, float]:
    timings["total_s"] = time.perf_counter() - started
    return {key: round(value, 4) for key, value in timings.items()}


__all__ = ["AnswerChain", "AnswerEvent", "LLMUnavailable", "Turn", "build_chat_model"]
