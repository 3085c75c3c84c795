"""Slack ack latency and time to first visible reply under 50 concurrent mentions.

Side by side in one run, both behind the same HTTP server (waitress) and the same answer service
(tiny bge-m3, bundled samples, a fake OpenAI server that waits a fixed delay before answering):

- kotae: `bot.app.create_app` — listeners hand off to AnswerQueue, replies stream in threads;
- stock Bolt: `App()` with its default 5-thread listener pool, the answer written inside the
  listener (the way the Bolt samples do it), the reply posted with `say()`.

During the burst of mentions a few `/kotae` slash commands arrive too: in the stock setup their
listener waits for a free pool thread, so their ack — which Slack needs within 3 s — waits too.

    .venv/bin/python -m bench.slack [--mentions 50] [--llm-delay 0.5] [--commands 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from slack_bolt import Ack, App, Respond, Say
from slack_sdk import WebClient

from bench.common import (
    TINY_DIR,
    bench_parser,
    ensure_model,
    machine_markdown,
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
from tests.fakes.slack_signing import event_body, post_signed, slash_body

SECRET = "bench-secret"
# Words that open and close the fake model's answer, and are in no source or status message.
ANSWER_START, ANSWER_END = "Handoff-start", "handoff-end"
ROOT = Path(__file__).resolve().parent.parent
FORM = "application/x-www-form-urlencoded"


def stock_bolt_app(client: WebClient, service: KotaeService) -> App:
    """What a straightforward Bolt app looks like: the work happens in the listener."""
    app = App(client=client, signing_secret=SECRET)

    @app.event("app_mention")
    def on_mention(event: dict[str, Any], say: Say) -> None:
        answer = service.ask(event["text"])
        say(text=answer.text, thread_ts=event.get("thread_ts") or event["ts"])

    @app.command("/kotae")
    def on_command(ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        ack()
        respond(text=service.ask(command["text"]).text)

    return app


def run_burst(url: str, slack: FakeSlackAPI, mentions: int, commands: int,
              ts_base: int) -> dict[str, list[float]]:
    """Send `mentions` signed app_mention events at once (plus a few slash commands shortly
    after) and return ack latencies and time to the first visible message in each thread."""
    sent_at: dict[str, float] = {}
    event_acks: list[float] = []
    command_acks: list[float] = []
    failed_commands: list[float] = []

    def mention(number: int) -> None:
        ts = f"{ts_base}.{number:06d}"
        event = {"type": "app_mention", "user": f"U{number:03d}", "channel": "C1",
                 "text": "<@UBOT> When is the on-call handoff?", "ts": ts, "event_ts": ts,
                 "team": "T1", "client_msg_id": f"bench-{ts_base}-{number}"}
        sent_at[ts] = time.monotonic()
        status, _text, elapsed = post_signed(f"{url}/slack/events",
                                             event_body(event, f"Ev{ts_base}{number}"), SECRET)
        if status != 200:
            raise RuntimeError(f"mention {number} got HTTP {status}")
        event_acks.append(elapsed)

    def command(number: int) -> None:
        time.sleep(0.2)  # arrive while the mentions are being answered
        body = slash_body(text="When is the on-call handoff?", user_id=f"UC{number}",
                          response_url=slack.response_url(f"c{number}"))
        status, _text, elapsed = post_signed(f"{url}/slack/events", body, SECRET,
                                             content_type=FORM, timeout=30)
        # Bolt answers 404 when a listener did not ack within 3 s: Slack shows the user an error
        (command_acks if status == 200 else failed_commands).append(elapsed)

    with ThreadPoolExecutor(max_workers=mentions + commands) as pool:
        jobs = [pool.submit(mention, n) for n in range(mentions)]
        jobs += [pool.submit(command, n) for n in range(commands)]
        for job in jobs:
            job.result()
    replies = wait_replies(slack, sent_at, timeout=300)
    return {"event_ack": event_acks, "command_ack": command_acks,
            "failed_commands": failed_commands, **replies}


def wait_replies(slack: FakeSlackAPI, sent_at: dict[str, float],
                 timeout: float) -> dict[str, list[float]]:
    """Seconds from each mention to the first message the bot made visible in its thread
    (`first_visible`), to the first call that showed the start of the model's answer there
    (`first_answer`: streamed, edited in or posted whole) and to the first that showed all of
    it (`answer_complete`)."""
    deadline = time.monotonic() + timeout
    answered: set[str] = set()
    while len(answered) < len(sent_at) and time.monotonic() < deadline:
        answered = {thread for thread in sent_at if any(
            ANSWER_END in json.dumps(message, ensure_ascii=False)
            for message in slack.thread_messages("C1", thread) if message.get("bot_id"))}
        time.sleep(0.05)
    if len(answered) < len(sent_at):
        raise RuntimeError(f"only {len(answered)}/{len(sent_at)} threads got an answer")
    thread_of = {str(message["ts"]): thread for thread in sent_at
                 for message in slack.thread_messages("C1", thread)}
    seen: dict[str, dict[str, float]] = {
        "first_visible": {}, "first_answer": {}, "answer_complete": {}}
    for call in slack.all_calls:
        thread = str(call.params.get("thread_ts") or thread_of.get(str(call.params.get("ts"))))
        if not call.method.startswith("chat.") or thread not in sent_at:
            continue
        after = call.received_at - sent_at[thread]
        params = json.dumps(call.params, ensure_ascii=False)
        if call.method in ("chat.postMessage", "chat.startStream"):
            seen["first_visible"].setdefault(thread, after)
        if ANSWER_START in params:
            seen["first_answer"].setdefault(thread, after)
        if ANSWER_END in params:
            seen["answer_complete"].setdefault(thread, after)
    return {key: list(by_thread.values()) for key, by_thread in seen.items()}


def serve_child(kind: str, settings: BotSettings) -> None:
    """In a child process: serve one app until stdin closes. The app runs in its own process,
    as in production, so the load generator and the fakes do not compete for its GIL."""
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    embeddings = BGEM3Embeddings.from_settings(settings)
    service = KotaeService(settings, embeddings=embeddings)
    service.ask("warm up")  # load the model and the index before the burst
    client = WebClient(token="xoxb-bench", base_url=settings.slack_api_url)
    app = create_app(settings, service, client)[0] if kind == "kotae" else stock_bolt_app(
        client, service)
    server = HttpServer(app, lambda: {}, "127.0.0.1", 0, threads=settings.http_threads).start()
    print(f"READY {server.port}", flush=True)
    sys.stdin.read()  # the parent closes stdin when it is done
    server.stop()


def side(kind: str, env: dict[str, str], slack: FakeSlackAPI, args: argparse.Namespace,
         ts_base: int) -> dict[str, list[float]]:
    child = subprocess.Popen([sys.executable, "-m", "bench.slack", "--serve", kind], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"the {kind} app did not start: {line!r}")
        port = int(line.split()[1])
        print(f"{kind}: {args.mentions} mentions + {args.commands} slash commands …", flush=True)
        return run_burst(f"http://127.0.0.1:{port}", slack, args.mentions, args.commands,
                         ts_base)
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("bench.slack", __doc__)
    parser.add_argument("--mentions", type=int, default=50)
    parser.add_argument("--commands", type=int, default=5)
    parser.add_argument("--llm-delay", type=float, default=0.5, help="fake model latency (s)")
    parser.add_argument("--serve", choices=["kotae", "stock"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_child(args.serve, BotSettings())
        return 0

    work = Path(tempfile.mkdtemp(prefix="kotae-bench-slack-"))
    try:
        model = ensure_model(TINY_DIR, "TINY")
        with FakeOpenAIServer() as llm, FakeSlackAPI() as slack:
            llm.responder = lambda _request: Reply(
                text=f"{ANSWER_START}: on-call handoff is every Monday at 10:00 JST [1], "
                     f"{ANSWER_END}.",
                delay_s=args.llm_delay)
            env = {**{k: v for k, v in os.environ.items()
                      if not k.startswith(("KOTAE_", "SLACK_", "OPENAI_"))},
                   "KOTAE_EMBEDDING_MODEL": str(model), "KOTAE_EMBEDDING_DEVICE": "cpu",
                   "KOTAE_INDEX_DIR": str(work / "index"), "KOTAE_RETRIEVAL_MODE": "hybrid",
                   "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": llm.base_url,
                   "KOTAE_CHAT_MAX_RETRIES": "0", "SLACK_BOT_TOKEN": "xoxb-bench",
                   "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": slack.base_url,
                   "KOTAE_FEEDBACK_PATH": str(work / "feedback.jsonl"),
                   "KOTAE_STREAM_UPDATE_INTERVAL_S": "0.5", "TQDM_DISABLE": "1",
                   "TRANSFORMERS_VERBOSITY": "error", "PYTHONPATH": str(ROOT)}
            settings = BotSettings(_env_file=None, embedding_model=str(model),  # type: ignore[call-arg]
                                   embedding_device="cpu", index_dir=work / "index",
                                   docs_dir=BUNDLED_SAMPLES)
            Indexer(settings, BGEM3Embeddings.from_settings(settings)).run()
            ours = side("kotae", env, slack, args, ts_base=1600000000)
            stock = side("stock", env, slack, args, ts_base=1600001000)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    def cells(samples: list[float]) -> list[str]:
        return [ms(p50(samples)), ms(p99(samples))] if samples else ["—", "—"]

    for label, key in (("event ack", "event_ack"), ("slash command ack", "command_ack"),
                       ("first visible reply", "first_visible"),
                       ("first answer text", "first_answer"),
                       ("answer complete", "answer_complete")):
        rows.append([label, *cells(ours[key]), *cells(stock[key])])
    rows.append(["slash commands not acked in 3 s (of "
                 f"{args.commands})", len(ours["failed_commands"]), "",
                 len(stock["failed_commands"]), ""])
    worst_ack = max(p99(ours["event_ack"]), p99(ours["command_ack"] or [0.0]))
    if ours["failed_commands"]:
        worst_ack = float("inf")
    markdown = "\n\n".join([
        "## Slack: acks and first visible reply under load (`bench/slack.py`)",
        machine_markdown(),
        f"{args.mentions} concurrent signed `app_mention` requests plus {args.commands} "
        f"`/kotae` commands sent 0.2 s into the burst, over HTTP to waitress (8 threads) in "
        f"front of each app, each app in its own process (the load generator, the fake Slack "
        f"Web API and the fake chat model run in the bench process); fake chat model "
        f"answering after {args.llm_delay:.1f} s; tiny "
        "bge-m3, bundled samples. *Stock Bolt*: `App()` with its default 5-thread listener "
        "pool, answering inside the listener. *First visible reply*: time until the bot's "
        "first message in the thread (kotae: the streamed answer, or the \"you're in the "
        "queue\" note, posted once a question has waited 0.5 s). *First answer text* / "
        "*answer complete*: until the start / the end of the model's answer shows in the "
        "thread (streamed, edited in or posted whole).",
        table(["", "kotae p50", "kotae p99", "stock Bolt p50", "stock Bolt p99"], rows),
        f"Goal: ack p99 < 100 ms — {met(worst_ack < 0.1)} (kotae's worst ack p99: "
        f"{ms(worst_ack)}). Slack gives up on an ack after 3 s.",
    ])
    publish(markdown, None if args.no_write else args.section or "slack")
    return 0


if __name__ == "__main__":
    sys.exit(main())
