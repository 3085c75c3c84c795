"""Answer-chain overhead and time to first token, vs a stock LangChain retrieval chain.

    .venv/bin/python -m bench.chain             # 50 runs per contender, ~1 min on 2 cores
    .venv/bin/python -m bench.chain --quick     # 10 runs

Both chains use the SAME retriever (HybridRetriever over an index of the bundled samples built
with the tiny model) and the SAME ChatOpenAI pointed at a zero-latency fake OpenAI server
(tests/fakes/openai_server.py) that streams a fixed answer. So the differences are the chains'
own work: prompt building, source packing, citation handling, LangChain runnable plumbing.

Stock: `langchain_classic.chains.create_retrieval_chain` + `create_stuff_documents_chain` with
kotae's answer prompt (its `{sources}` renamed `{context}`). Its `.invoke` makes a non-streaming
request; ours always streams, so both direct-call baselines are measured.

Results go to the `chain` (or `chain-quick`) section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    TINY_DIR,
    BenchRun,
    bench_parser,
    cpu_count,
    ensure_model,
    ms,
    p50,
    p99,
    publish,
    quiet_model_loading,
    set_threads,
    table,
    time_interleaved,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
OURS_STREAM = "ours: AnswerChain.stream"
STOCK_STREAM = "stock: retrieval chain .stream"
SAMPLES_DIR = REPO_ROOT / "kotae" / "samples"

# A fixed, realistic answer: ~90 words, citations, streamed word by word by the fake.
ANSWER = (
    "Full-time employees get 20 days of paid vacation per year [1]. Up to 5 unused days carry "
    "over to the next year; anything beyond that lapses on 31 March [1]. Ask your manager at "
    "least two weeks ahead for absences longer than three days, and record the request in the "
    "HR portal so payroll sees it [2]. New hires accrue days from their first month, pro rata "
    "[1]. If a public holiday falls inside your vacation it is not counted as a vacation day "
    "[2]. For questions, write to #hr-help in Slack [3]."
)


def first_token_s(events: Iterator[Any], is_token: Callable[[Any], bool]) -> float:
    """Seconds until the first answer token, then drain the stream (the request completes)."""
    started = time.perf_counter()
    elapsed = float("nan")
    for event in events:
        if elapsed != elapsed and is_token(event):  # nan until the first token
            elapsed = time.perf_counter() - started
    return elapsed


def stock_chain(retriever: Any, chat_model: Any, answer_prompt: str) -> Any:
    from langchain_classic.chains import create_retrieval_chain
    from langchain_classic.chains.combine_documents import create_stuff_documents_chain
    from langchain_core.prompts import ChatPromptTemplate

    prompt = ChatPromptTemplate.from_messages([
        ("system", answer_prompt.replace("{sources}", "{context}")),
        ("human", "{input}"),
    ]).partial(language="the language of the question")
    return create_retrieval_chain(retriever, create_stuff_documents_chain(chat_model, prompt))


def run(args: argparse.Namespace) -> str:
    from langchain_core.messages import AIMessageChunk

    from retrieval.chain import AnswerChain, build_chat_model
    from retrieval.embeddings import BGEM3Embeddings
    from retrieval.indexer import Indexer
    from retrieval.prompts import load_prompts
    from retrieval.retriever import HybridRetriever
    from retrieval.settings import Settings
    from retrieval.versions import LiveIndex
    from tests.fakes.openai_server import FakeOpenAIServer, Reply
    from tests.fakes.openai_server import _Handler as _FakeHandler
    from tests.sample_facts import SAMPLE_FACTS

    # The fake answers with several small writes per response and leaves Nagle's algorithm on,
    # so on loopback a response (and the request after a non-streaming one) can wait ~40 ms
    # for a delayed ACK: a TCP artefact of the fake that no real endpoint adds. Turned off here
    # with the stdlib's own switch; without it the figures measure the artefact, not the chains.
    _FakeHandler.disable_nagle_algorithm = True
    model_dir = ensure_model(TINY_DIR, "TINY")
    questions = [fact.question for fact in SAMPLE_FACTS]
    with tempfile.TemporaryDirectory(prefix="kotae-bench-") as tmp, \
            FakeOpenAIServer(lambda _request: Reply(text=ANSWER)) as server:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            embedding_model=str(model_dir), embedding_device="cpu",
            index_dir=Path(tmp) / "index", docs_dir=SAMPLES_DIR, faiss_device="cpu",
            retrieval_mode="hybrid", openai_api_key="sk-bench",  # type: ignore[arg-type]
            openai_base_url=server.base_url, chat_max_retries=0)
        embeddings = BGEM3Embeddings.from_settings(settings)
        summary = Indexer(settings, embeddings).run([SAMPLES_DIR])
        print(f"index: {summary.chunks_total} chunks from {len(summary.added)} files", flush=True)
        retriever = HybridRetriever.from_settings(settings, LiveIndex(settings.index_dir,
                                                                      device="cpu"), embeddings)
        chat_model = build_chat_model(settings)  # the product's ChatOpenAI configuration
        assert chat_model is not None
        ours = AnswerChain.from_settings(settings, retriever.search, embeddings.token_length,
                                         "hybrid", chat_model=chat_model)
        prompts = load_prompts()
        stock = stock_chain(retriever, chat_model, prompts.answer)

        # The exact messages our chain sends, replayed for the direct-call baselines.
        answer = ours.invoke(questions[0])
        assert answer.kind == "answer", answer
        messages = [(m["role"], m["content"]) for m in server.requests[-1].messages]
        stock_answer = stock.invoke({"input": questions[0]})["answer"]
        assert stock_answer == ANSWER, stock_answer

        cycles = {name: itertools.cycle(questions) for name in
                  ("ours", "stock", "stock_stream", "search", "retriever", "ours_ttft",
                   "stock_ttft")}

        def is_ours_token(event: Any) -> bool:
            return isinstance(event, str) and bool(event)

        def is_stock_token(event: Any) -> bool:
            return bool(event.get("answer"))

        def is_llm_token(chunk: Any) -> bool:
            return isinstance(chunk, AIMessageChunk) and bool(chunk.content)

        # Our calls keep their own `Answer.timings`, for the breakdown of the same runs.
        ours_timings: list[tuple[float, dict[str, float]]] = []

        def ours_invoke() -> None:
            started = time.perf_counter()
            answer = ours.invoke(next(cycles["ours"]))
            ours_timings.append((time.perf_counter() - started, answer.timings))

        totals = {
            "ours: AnswerChain.invoke": ours_invoke,
            "stock: retrieval chain .invoke": lambda: stock.invoke(
                {"input": next(cycles["stock"])}),
            "stock: retrieval chain .stream (drained)": lambda: list(stock.stream(
                {"input": next(cycles["stock_stream"])})),
            "retriever.search alone": lambda: retriever.search(next(cycles["search"])),
            "retriever.invoke alone (Documents)": lambda: retriever.invoke(
                next(cycles["retriever"])),
            "ChatOpenAI.stream alone (drained)": lambda: list(chat_model.stream(messages)),
            "ChatOpenAI.invoke alone": lambda: chat_model.invoke(messages),
        }
        print(f"totals: {args.runs} runs each, interleaved", flush=True)
        total_s = time_interleaved(totals, args.runs, warmup=2)

        ttft = {
            OURS_STREAM: lambda: first_token_s(
                ours.stream(next(cycles["ours_ttft"])), is_ours_token),
            STOCK_STREAM: lambda: first_token_s(
                stock.stream({"input": next(cycles["stock_ttft"])}), is_stock_token),
            "ChatOpenAI.stream alone": lambda: first_token_s(
                chat_model.stream(messages), is_llm_token),
        }
        print(f"time to first token: {args.runs} runs each, interleaved", flush=True)
        ttft_s = {name: [] for name in ttft}
        for _ in range(2):
            for fn in ttft.values():
                fn()
        for round_number in range(args.runs):
            names = list(ttft) if round_number % 2 == 0 else list(ttft)[::-1]
            for name in names:
                ttft_s[name].append(ttft[name]())

        ours_timings = ours_timings[-args.runs:]  # the timed runs, not the warm-up
    breakdown: dict[str, list[float]] = {}
    for wall, timings in ours_timings:
        for key, value in timings.items():
            breakdown.setdefault(key, []).append(value)
        breakdown.setdefault("own work", []).append(
            wall - timings.get("retrieve_s", 0.0) - timings.get("llm_s", 0.0))
    ours_total = p50(total_s["ours: AnswerChain.invoke"])
    stock_total = p50(total_s["stock: retrieval chain .invoke"])
    search = p50(total_s["retriever.search alone"])
    retriever_docs = p50(total_s["retriever.invoke alone (Documents)"])
    llm_stream = p50(total_s["ChatOpenAI.stream alone (drained)"])
    llm_invoke = p50(total_s["ChatOpenAI.invoke alone"])
    ours_overhead = ours_total - search - llm_stream
    stock_overhead = stock_total - retriever_docs - llm_invoke
    stock_stream_total = p50(total_s["stock: retrieval chain .stream (drained)"])
    prompt_chars = sum(len(content) for _role, content in messages)
    return "\n\n".join([
        f"### Answer chain, {args.runs} runs per row (p50 / p99), questions cycling through the "
        f"{len(questions)} sample questions; fake OpenAI server with zero latency streaming a "
        f"{len(ANSWER)}-char answer; tiny model (TINY shape) index of the bundled samples "
        f"({summary.chunks_total} chunks); prompt ≈ {prompt_chars} chars; torch threads = "
        f"{args.threads}",
        "End to end (calls interleaved, 2 warm-up each):",
        table(["call", "p50", "p99"],
              [[name, ms(p50(s)), ms(p99(s))] for name, s in total_s.items()]),
        table(["chain", "total p50", "− retrieval p50", "− LLM call p50", "= chain overhead"], [
            ["ours (streams)", ms(ours_total), ms(search), ms(llm_stream), ms(ours_overhead)],
            ["stock .stream (streams)", ms(stock_stream_total), ms(retriever_docs),
             ms(llm_stream), ms(stock_stream_total - retriever_docs - llm_stream)],
            ["stock .invoke (non-streaming request)", ms(stock_total), ms(retriever_docs),
             ms(llm_invoke), ms(stock_overhead)],
        ]),
        "Time to first answer token (stream opened → first non-empty token; the rest drained):",
        table(["stream", "p50", "p99"],
              [[name, ms(p50(s)), ms(p99(s))] for name, s in ttft_s.items()]),
        f"- ours / stock time to first token (p50): "
        f"{p50(ttft_s[OURS_STREAM]) / p50(ttft_s[STOCK_STREAM]):.2f}× (goal: not slower)",
        "Our chain's own `Answer.timings` in the timed `AnswerChain.invoke` runs above; "
        "'own work' is each run's wall time minus its `retrieve_s` and `llm_s` (language "
        "detection, source packing and formatting, citations, the final `Answer`):",
        table(["timing", "p50", "p99"], [
            [key, ms(p50(values)), ms(p99(values))] for key, values in breakdown.items()]),
    ])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = bench_parser("bench.chain", __doc__)
    parser.add_argument("--quick", action="store_true", help="10 runs; `chain-quick` section")
    parser.add_argument("--runs", type=int, help="timed calls per contender (default 50)")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch/faiss threads (default 1: on a busy 2-core machine 2 OpenMP threads make a "
             f"tiny-model query take 10-170 ms instead of ~3 ms; this machine has "
             f"{cpu_count()})")
    args = parser.parse_args(argv)
    args.runs = args.runs or (10 if args.quick else 50)
    args.section = args.section or ("chain-quick" if args.quick else "chain")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    # The fake server is on 127.0.0.1: never send those requests through a proxy.
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    quiet_model_loading()
    args = parse_args(argv)
    set_threads(args.threads)
    bench = BenchRun("bench.chain", argv)
    body = run(args)
    publish("\n\n".join([bench.heading("Answer chain"), bench.machine_now(), body]),
            None if args.no_write else args.section)


if __name__ == "__main__":
    main()
