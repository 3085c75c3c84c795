"""Two kotae replicas under load, sharing one Redis (KOTAE_REDIS_URL): every mention is
delivered to BOTH replicas at once, then retried (x-slack-retry-num) to one of them.

Side by side in one run: the replicas sharing Redis and one index (a local folder, and with
`--store local,milvus` also one Milvus Lite server over TCP), and the same two replicas with
their in-process dedupe only (no KOTAE_REDIS_URL: what two replicas did before). Counted:
event ack latency over every delivery, questions answered more than once, questions not
answered, chat model calls, and when the answers arrived. Each replica is its own process (the
app factory behind waitress, as `kotae serve` runs it); the load generator, the fake Slack Web
API, the fake chat model and a real redis-server run beside them.

    .venv/bin/python -m bench.replicas [--mentions 100] [--llm-delay 0.5] [--store local,milvus]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from slack_sdk import WebClient

from bench.common import (
    TINY_DIR,
    BenchRun,
    bench_parser,
    ensure_model,
    met,
    ms,
    p50,
    p99,
    publish,
    table,
)
from bot.app import create_app
from bot.server import HttpServer
from bot.settings import BotSettings
from retrieval.embeddings import BGEM3Embeddings
from retrieval.indexer import Indexer
from retrieval.service import KotaeService
from retrieval.settings import BUNDLED_SAMPLES
from tests.fakes.openai_server import FakeOpenAIServer, Reply
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_signing import event_body, post_signed, retry_headers
from tests.integration.milvus_fixtures import lite_server
from tests.redis_server import RedisServer, redis_server_binary

SECRET = "bench-secret"
ANSWER_END = "handoff-end"  # closes the fake model's answer; in no source or notice
ROOT = Path(__file__).resolve().parent.parent
WATCH_S = 0.25  # how often the answers are looked for


def serve_child(settings: BotSettings) -> None:
    """In a child process: one replica, serving until stdin closes."""
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    service = KotaeService(settings, embeddings=BGEM3Embeddings.from_settings(settings))
    service.ask("warm up")  # the model and the index are loaded before the burst
    client = WebClient(token="xoxb-bench", base_url=settings.slack_api_url)
    app, _ctx = create_app(settings, service, client)
    server = HttpServer(app, lambda: {}, "127.0.0.1", 0, threads=settings.http_threads).start()
    print(f"READY {server.port}", flush=True)
    sys.stdin.read()
    server.stop()


def start_replicas(env: dict[str, str], count: int = 2) -> list[tuple[subprocess.Popen, str]]:
    children = [subprocess.Popen([sys.executable, "-m", "bench.replicas", "--serve"], env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for _ in range(count)]
    replicas = []
    for child in children:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"a replica did not start: {line!r}")
        replicas.append((child, f"http://127.0.0.1:{int(line.split()[1])}"))
    return replicas


def stop_replicas(replicas: list[tuple[subprocess.Popen, str]]) -> None:
    for child, _url in replicas:
        if child.stdin is not None:
            child.stdin.close()
    for child, _url in replicas:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux: /proc/PID/stat); 0 for a
    process that is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_named(name: str) -> list[int]:
    """The pids of this process's children called `name` (the Milvus Lite server's binary,
    which milvus_lite starts for us)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        comm, rest = text[text.index("(") + 1:text.rindex(")")], text.rsplit(")", 1)[1]
        if comm == name and int(rest.split()[1]) == os.getpid():
            found.append(int(stat.parent.name))
    return found


def burst(urls: list[str], slack: FakeSlackAPI, llm: FakeOpenAIServer, mentions: int,
          ts_base: int, wait_s: float, watched: dict[str, list[int]]) -> dict[str, object]:
    """Every mention to every replica at once, then one retry of each to a random replica;
    `watched`: the processes whose CPU time during the burst is counted, by role."""
    acks: list[float] = []
    cpu_before = {role: sum(map(cpu_seconds, pids)) for role, pids in watched.items()}
    calls_before = len(llm.requests)
    chooser = random.Random(ts_base)

    def deliver(url: str, number: int, retry: int) -> None:
        ts = f"{ts_base}.{number:06d}"
        event = {"type": "app_mention", "user": f"U{number:03d}", "channel": "C1",
                 "text": "<@UBOT> When is the on-call handoff?", "ts": ts, "event_ts": ts,
                 "team": "T1", "client_msg_id": f"replicas-{ts_base}-{number}"}
        status, _text, elapsed = post_signed(
            f"{url}/slack/events", event_body(event, f"Ev{ts_base}{number}"), SECRET,
            extra_headers=retry_headers(retry) if retry else None, timeout=30)
        if status != 200:
            raise RuntimeError(f"mention {number} got HTTP {status}")
        acks.append(elapsed)

    threads = [f"{ts_base}.{n:06d}" for n in range(mentions)]

    def answers(thread: str) -> int:
        return sum(ANSWER_END in json.dumps(message, ensure_ascii=False)
                   for message in slack.thread_messages("C1", thread) if message.get("bot_id"))

    # seconds from the burst's start; polled every WATCH_S, sparsely: the watcher shares this
    # process (and its GIL) with the load generator, whose ack timings it must not slow
    answered_after: dict[str, float] = {}
    started = time.monotonic()

    def watch() -> None:
        while time.monotonic() < started + wait_s and len(answered_after) < len(threads):
            now = time.monotonic() - started
            answered_after.update({t: now for t in threads
                                   if t not in answered_after and answers(t)})
            time.sleep(WATCH_S)

    watcher = threading.Thread(target=watch, name="bench-answers", daemon=True)
    watcher.start()
    with ThreadPoolExecutor(max_workers=mentions * len(urls)) as pool:
        jobs = [pool.submit(deliver, url, n, 0) for n in range(mentions) for url in urls]
        for job in jobs:
            job.result()
        time.sleep(0.2)
        jobs = [pool.submit(deliver, chooser.choice(urls), n, 1) for n in range(mentions)]
        for job in jobs:
            job.result()
    watcher.join()
    cpu = {role: sum(map(cpu_seconds, pids)) - cpu_before[role] for role, pids in watched.items()}
    time.sleep(1.0)  # a late duplicate shows up too
    counts = [answers(thread) for thread in threads]
    return {"acks": acks, "cpu": cpu, "duplicates": sum(c > 1 for c in counts),
            "unanswered": sum(c == 0 for c in counts),
            "llm_calls": len(llm.requests) - calls_before,
            "answered_after": list(answered_after.values())}


STORES = {"local": "local folder", "milvus": "Milvus Lite server"}


def open_store(store: str, work: Path, stack: ExitStack) -> dict[str, str]:
    """The environment of replicas sharing `store`: one local folder, or one Milvus Lite
    server over TCP (the code path of a Milvus cluster), started here for the whole run."""
    if store == "local":
        return {"KOTAE_STORE": "local"}
    server = stack.enter_context(lite_server(work / "milvus" / "kotae.db"))
    return {"KOTAE_STORE": "milvus", "KOTAE_MILVUS_URI": server.uri}


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("bench.replicas", __doc__)
    parser.add_argument("--mentions", type=int, default=100)
    parser.add_argument("--llm-delay", type=float, default=0.5, help="fake model latency (s)")
    parser.add_argument("--store", default="local",
                        help="the index the replicas share, one or several side by side: "
                             "local, milvus or local,milvus (in-process only runs on the first)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_child(BotSettings())
        return 0
    stores = [part.strip() for part in args.store.split(",") if part.strip()]
    if not stores or any(store not in STORES for store in stores):
        parser.error(f"--store: one or more of {', '.join(STORES)}, comma-separated")
    binary = redis_server_binary()
    if binary is None:
        print("needs redis-server (Debian package redis-server)", file=sys.stderr)
        return 1
    run = BenchRun("bench.replicas", argv)
    work = Path(tempfile.mkdtemp(prefix="kotae-bench-replicas-"))
    results: dict[str, dict[str, object]] = {}
    redis = RedisServer(binary, work / "redis").start()
    try:
        model = ensure_model(TINY_DIR, "TINY")
        with FakeOpenAIServer() as llm, FakeSlackAPI() as slack, ExitStack() as stack:
            llm.responder = lambda _request: Reply(
                text=f"On-call handoff is every Monday at 10:00 JST [1], {ANSWER_END}.",
                delay_s=args.llm_delay)
            env = {**{k: v for k, v in os.environ.items()
                      if not k.startswith(("KOTAE_", "SLACK_", "OPENAI_"))},
                   "KOTAE_EMBEDDING_MODEL": str(model), "KOTAE_EMBEDDING_DEVICE": "cpu",
                   "KOTAE_INDEX_DIR": str(work / "index"), "KOTAE_RETRIEVAL_MODE": "hybrid",
                   "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": llm.base_url,
                   "KOTAE_CHAT_MAX_RETRIES": "0", "SLACK_BOT_TOKEN": "xoxb-bench",
                   "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": slack.base_url,
                   "KOTAE_FEEDBACK_PATH": str(work / "feedback.jsonl"),
                   "KOTAE_ANSWER_QUEUE_LIMIT": str(max(100, args.mentions)),
                   "KOTAE_ANSWERS_PER_USER": "2",
                   "KOTAE_STREAM_UPDATE_INTERVAL_S": "0.5", "TQDM_DISABLE": "1",
                   "TRANSFORMERS_VERBOSITY": "error", "PYTHONPATH": str(ROOT),
                   "NO_PROXY": "127.0.0.1,localhost"}
            embeddings: BGEM3Embeddings | None = None
            store_envs: dict[str, dict[str, str]] = {}
            for store in stores:
                store_envs[store] = open_store(store, work, stack)
                settings = BotSettings(  # type: ignore[call-arg]
                    _env_file=None, embedding_model=str(model), embedding_device="cpu",
                    index_dir=work / "index", docs_dir=BUNDLED_SAMPLES, store=store,
                    milvus_uri=store_envs[store].get("KOTAE_MILVUS_URI"))
                embeddings = embeddings or BGEM3Embeddings.from_settings(settings)
                Indexer(settings, embeddings).run()
            wait_s = 60 + args.mentions * args.llm_delay
            runs = [(f"Redis · {STORES[store]}", {"KOTAE_REDIS_URL": redis.url,
                                                   **store_envs[store]})
                    for store in stores]
            runs.append((f"in-process only · {STORES[stores[0]]}", store_envs[stores[0]]))
            for number, (label, extra) in enumerate(runs):
                replicas = start_replicas({**env, **extra})
                try:
                    print(f"{label}: {args.mentions} mentions x 2 replicas + retries …",
                          flush=True)
                    watched = {"replicas": [child.pid for child, _url in replicas]}
                    if "KOTAE_MILVUS_URI" in extra:  # the servers of this run, not idle ones
                        watched["Milvus Lite server"] = children_named("milvus")
                    if "KOTAE_REDIS_URL" in extra and redis.process is not None:
                        watched["redis-server"] = [redis.process.pid]
                    results[label] = burst([url for _child, url in replicas], slack, llm,
                                           args.mentions, 1600000000 + 100000 * number,
                                           wait_s, watched)
                finally:
                    stop_replicas(replicas)
    finally:
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)

    labels = list(results)

    def row(label: str, key: str) -> list[object]:
        return [label, *(results[run][key] for run in labels)]

    def samples(run: str, key: str) -> list[float]:
        values = results[run][key]
        assert isinstance(values, list)
        return values

    def cpu_of(run: str) -> dict[str, float]:
        cpu = results[run]["cpu"]
        assert isinstance(cpu, dict)
        return cpu

    def seconds(values: list[float], pick: Callable[[list[float]], float]) -> str:
        return f"{pick(values):.1f} s" if values else "–"

    rows = [["event ack p50", *(ms(p50(samples(run, "acks"))) for run in labels)],
            ["event ack p99", *(ms(p99(samples(run, "acks"))) for run in labels)],
            ["deliveries acked", *(len(samples(run, "acks")) for run in labels)],
            row(f"questions answered more than once (of {args.mentions})", "duplicates"),
            row(f"questions not answered (of {args.mentions})", "unanswered"),
            row("chat model calls", "llm_calls"),
            ["answered, p50 (from the burst's start)",
             *(seconds(samples(run, "answered_after"), p50) for run in labels)],
            ["last answer (from the burst's start)",
             *(seconds(samples(run, "answered_after"), max) for run in labels)],
            *([f"CPU during the burst: {role}",
               *(f"{cpu_of(run)[role]:.1f} s" if role in cpu_of(run) else "–" for run in labels)]
              for role in ("replicas", "Milvus Lite server", "redis-server"))]
    shared = [run for run in labels if run.startswith("Redis")]
    ok = all(p99(samples(run, "acks")) < 0.1 and results[run]["duplicates"] == 0
             and results[run]["unanswered"] == 0 for run in shared)
    markdown = "\n\n".join([
        run.heading("Two replicas under load, sharing Redis (`bench/replicas.py`)"),
        run.machine_now(),
        f"{args.mentions} concurrent signed `app_mention` events, each delivered to BOTH "
        "replicas at once, then each retried (`X-Slack-Retry-Num: 1`) to one replica picked "
        "at random 0.2 s later: "
        f"{3 * args.mentions} deliveries. Two replicas, each its own process (the app factory "
        "behind waitress, 8 threads), sharing a real `redis-server` (KOTAE_REDIS_URL) and one "
        "index: a local folder, or one Milvus Lite 2.5 server over TCP (KOTAE_STORE=milvus, "
        "KOTAE_MILVUS_URI=http://127.0.0.1:PORT: the code path of a Milvus cluster) — and, "
        "beside them in the same run, the same two replicas with only their in-process "
        f"dedupe. Fake chat model answering after {args.llm_delay:.1f} s; tiny bge-m3, bundled "
        "samples; the load generator, fake Slack and fake model run in the bench process. "
        f"Answer times are looked for every {WATCH_S} s; CPU: user + system time of the "
        "processes in each role from the burst's first delivery until every question was "
        "answered (both replicas together; the Milvus Lite server serves only the Milvus "
        "column, yet all of them share this machine's cores).",
        table(["", *labels], rows),
        f"Goal (sharing Redis): ack p99 < 100 ms, 0 duplicate answers, 0 unanswered — "
        f"{met(ok)}.",
    ])
    publish(markdown, None if args.no_write else args.section or "replicas")
    return 0


if __name__ == "__main__":
    sys.exit(main())
