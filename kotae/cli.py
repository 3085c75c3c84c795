"""`kotae`: index documents, search them, ask questions, serve the Slack bot.

The edge where domain errors become one clear message, never a traceback. Exit codes:
0 done (an answer from the sources alone, or files skipped with reasons, still count),
1 could not be done (no index, no model, a refused or failed run), 2 usage (a bad argument
or setting), 130 interrupted (Ctrl-C; the index is left as it was).
"""

from __future__ import annotations

import json
import logging
import re
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from retrieval.errors import KotaeError, SettingsInvalid
from retrieval.settings import AnySettings, Settings, load_settings

if TYPE_CHECKING:
    from bot.settings import BotSettings
    from retrieval.indexer import IndexSummary
    from retrieval.service import KotaeService

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
DEMO_QUESTION = "経費精算の締め切りはいつですか？"

app = typer.Typer(help="kotae (答え): answers from your team's documents.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
console = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

ModeOption = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional here
    typer.Option("--mode", "-m", metavar="MODE",
                 help="dense | sparse | hybrid | all (default: all on a GPU, else hybrid)"),
]
JsonOption = Annotated[bool, typer.Option("--json", metavar="", help="print JSON instead")]


def _settings(cls: type[AnySettings] = Settings) -> AnySettings:  # type: ignore[assignment]
    try:
        return load_settings(cls)
    except SettingsInvalid as error:
        _fail(error, code=EXIT_USAGE)


def _fail(error: Exception, code: int = EXIT_FAILED) -> NoReturn:
    err.print(Text.assemble(("error: ", "bold red"), str(error)))
    raise typer.Exit(code)


def _interrupted(what: str) -> NoReturn:
    err.print(Text.assemble(("interrupted: ", "bold yellow"), what))
    raise typer.Exit(EXIT_INTERRUPTED)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(text: str) -> str:
    """A file name or title on one terminal line: control characters shown escaped."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


@app.callback()
def main(verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", metavar="", help="log what happens (model loading, each file)")]
         = False) -> None:
    from rich.logging import RichHandler

    # Logs go through the same console as the progress bar, so they print above it.
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err, show_path=False, markup=False)])
    logging.captureWarnings(True)
    if not verbose:  # model-loading progress bars, load reports, library warnings: noise
        import os

        logging.getLogger("py.warnings").setLevel(logging.ERROR)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TQDM_DISABLE", "1")


def _service(settings: Settings | None = None) -> KotaeService:
    from retrieval.service import KotaeService

    try:
        return KotaeService(settings or _settings())
    except KotaeError as error:  # the index backend unreachable at start (KOTAE_MILVUS_URI)
        _fail(error)


@app.command()
def index(
    paths: Annotated[Optional[list[Path]], typer.Argument(metavar="PATH", help="files/folders (default: KOTAE_DOCS_DIR, else the folders the index was built from)")] = None,  # noqa: E501, UP045
    full: Annotated[bool, typer.Option("--full", metavar="", help="rebuild from scratch: re-read every file, retry files that failed (vectors still valid come from the embedding cache)")] = False,  # noqa: E501
    replace: Annotated[bool, typer.Option("--replace", metavar="", help="let PATHs replace the index's documents even when that removes most of them")] = False,  # noqa: E501
    as_json: JsonOption = False,
) -> None:
    """Build or update the index (incremental: unchanged files are not re-read, and a chunk
    whose text was embedded before, by any build, is reused from the embedding cache)."""
    service = _service()
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                  TextColumn("{task.fields[detail]}"), TimeRemainingColumn(),
                  console=err, transient=True,
                  disable=as_json or not err.is_terminal) as bar:  # a log file gets no bar
        task = bar.add_task("scanning", total=None, detail="")

        def show(p) -> None:  # type: ignore[no-untyped-def]
            if p.phase == "embedding":
                bar.update(task, description=f"embedding  files {p.files_done}/{p.files_total}",
                           total=p.chunks_total, completed=p.chunks_done,
                           detail=f"{p.chunks_done}/{p.chunks_total} chunks "
                                  f"({p.chunks_reused} reused) {p.embeddings_per_s:.1f} emb/s")
            else:
                bar.update(task, description=p.phase)

        try:
            summary = service.reindex(paths or None, full=full, replace=replace, progress=show)
        except KotaeError as error:
            _fail(error)
        except KeyboardInterrupt:
            version = service.index.version
            _interrupted("nothing was changed; the index " + (
                f"still serves {version}." if version else "was not built."))
    if as_json:
        console.print_json(json.dumps(summary.as_dict(), ensure_ascii=False))
        return
    _print_summary(summary)


def _print_summary(summary: IndexSummary) -> None:
    for source, reason in summary.failed:
        err.print(Text.assemble(("skipped ", "yellow"), _one_line(source), f": {reason}"))
    for source, message in summary.warnings:
        err.print(Text.assemble(("warning ", "yellow"), _one_line(source), f": {message}"))
    state = f"switched to {summary.version}" if summary.switched else (
        f"nothing changed, still serving {summary.version}")
    console.print(
        f"files: {len(summary.added)} added, {len(summary.updated)} updated, "
        f"{len(summary.unchanged)} unchanged, {len(summary.removed)} removed, "
        f"{len(summary.failed)} failed · {summary.chunks_total} chunks · "
        f"{summary.seconds:.1f}s · {state}"
        + (f" · chunks embedded {summary.chunks_encoded}, reused {summary.chunks_reused}"
           if summary.chunks_embedded else ""), markup=False)


AsChannelOption = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional here
    typer.Option("--as-channel", metavar="CHANNEL",
                 help="only what an answer posted in this channel (C… or #name) may use"),
]
AsUserOption = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional here
    typer.Option("--as-user", metavar="USER",
                 help="only what this user (U…) may see in a private answer"),
]


def _audience(service: KotaeService, as_channel: str | None,  # type: ignore[no-untyped-def]
              as_user: str | None):
    """The audience of --as-channel / --as-user (the operator's: everything, by default)."""
    from kotae.audience import audience_for

    try:
        audience, notes = audience_for(service, as_channel, as_user)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--as-channel / --as-user") from None
    except KotaeError as error:
        _fail(error)
    for note in notes:
        err.print(Text(note, style="yellow"))
    return audience


@app.command()
def search(
    query: Annotated[str, typer.Argument()],
    mode: ModeOption = None,
    k: Annotated[int, typer.Option("-k", min=1, metavar="N", help="number of hits")] = 5,
    as_json: JsonOption = False,
    as_channel: AsChannelOption = None,
    as_user: AsUserOption = None,
) -> None:
    """Ranked chunks for QUERY with their scores and metadata."""
    if not query.strip():
        raise typer.BadParameter("the query is empty", param_hint="QUERY")
    service = _service()
    audience = _audience(service, as_channel, as_user)
    timings: dict[str, float] = {}
    try:
        hits = service.search(query, mode=_mode(mode), k=k, timings=timings,
                              audience=audience)
    except KotaeError as error:
        _fail(error)
    except KeyboardInterrupt:
        _interrupted("search stopped.")
    if as_json:
        console.print_json(json.dumps({
            "query": query, "mode": _mode(mode) or service.mode,
            "hits": [hit.model_dump() for hit in hits], "timings": timings,
        }, ensure_ascii=False))
        return
    if not hits:
        console.print("no matching chunks")
    for rank, hit in enumerate(hits, start=1):  # document text is data: never Rich markup
        where = _one_line(" › ".join([hit.title, *hit.section_path]))
        scores = (f"  score {hit.score:.4f} (dense {hit.dense or 0:.3f}, sparse "
                  f"{hit.sparse or 0:.3f}"
                  + (f", colbert {hit.colbert:.3f}" if hit.colbert is not None else "") + ")")
        console.print(Text.assemble((f"{rank}. {where}", "bold"), scores))
        console.print(Text("   " + _one_line(hit.source), style="dim"))
        console.print(Text("   " + " ".join(hit.text[:200].split())))


@app.command()
def ask(
    question: Annotated[str, typer.Argument()],
    mode: ModeOption = None,
    as_json: Annotated[bool, typer.Option(
        "--json", metavar="", help="print the answer, citations and timings as JSON")] = False,
    as_channel: AsChannelOption = None,
    as_user: AsUserOption = None,
) -> None:
    """Answer QUESTION from the index, with numbered sources."""
    if not question.strip():
        raise typer.BadParameter("the question is empty", param_hint="QUESTION")
    service = _service()
    audience = _audience(service, as_channel, as_user)
    try:
        if as_json:
            answer = service.ask(question, mode=_mode(mode), audience=audience)
        else:
            answer = _stream_answer(service, question, _mode(mode), audience)
    except KotaeError as error:
        _fail(error)
    except KeyboardInterrupt:
        _interrupted("no answer.")
    if answer.kind == "no_index":  # nothing to answer from: an error, as `search` says it
        _fail(KotaeError(answer.text))
    if as_json:
        console.print_json(json.dumps({
            "answer": answer.text, "kind": answer.kind, "notice": answer.notice,
            "citations": [c.model_dump() for c in answer.citations], "mode": answer.mode,
            "timings": answer.timings,
        }, ensure_ascii=False))
        return
    _print_answer(answer, text_shown=True)


def _stream_answer(service, question: str, mode, audience=None):  # type: ignore[no-untyped-def]
    """Show the answer growing as it is written, then the final text in its place (markers
    renumbered, invented ones removed); return the final Answer."""
    from rich.live import Live
    from rich.text import Text

    from retrieval.types import Answer

    written = ""
    with Live(Text(""), console=console, auto_refresh=False) as live:
        for event in service.stream(question, mode=mode, audience=audience):
            if isinstance(event, Answer):
                live.update(Text(event.text), refresh=True)
                return event
            written += event
            live.update(Text(written), refresh=True)
    raise RuntimeError("the answer chain ended without an answer")


def _print_answer(answer, *, text_shown: bool = False) -> None:  # type: ignore[no-untyped-def]
    if not text_shown:
        console.print(answer.text, markup=False)
    elif not console.is_terminal:
        console.line()  # Live leaves a non-terminal mid-line
    if answer.notice:
        err.print(Text(answer.notice, style="yellow"))
    if answer.citations:
        cited = any(c.cited for c in answer.citations)
        console.print()
        console.print("[bold]Sources[/]" if cited else "[bold]Related sources[/]")
    for citation in answer.citations:
        where = " › ".join([citation.title, *citation.heading_path])
        console.print(f"[{citation.number}] {_one_line(where)}", markup=False)
        console.print(f"    {_one_line(citation.url or citation.source)}", style="dim",
                      markup=False)
        if answer.kind == "retrieval_only":
            console.print(f"    > {_one_line(citation.snippet)}", markup=False)


@app.command()
def demo(
    question: Annotated[str, typer.Argument(metavar="[QUESTION]")] = DEMO_QUESTION,
) -> None:
    """Index the documents (default: the bundled samples) and answer QUESTION.

    With SLACK_BOT_TOKEN and a signing secret or app token set, serves the bot instead.
    """
    from bot.settings import BotSettings
    from retrieval.indexer import default_roots

    settings = _settings(BotSettings)  # the Slack settings too, from the environment or .env
    if _slack_configured(settings):
        serve()
        return
    folders = ", ".join(str(root) for root in default_roots(settings))
    console.print(Text.assemble(("indexing ", "bold"), f"{folders} → {settings.index_dir}"))
    try:
        index(paths=None, full=False, replace=False, as_json=False)
    except typer.Exit:
        err.print("hint: without bge-m3 weights, `make demo-offline` runs the same pipeline "
                  "with a random-weight model (answers are meaningless, the rest is real).")
        raise
    console.print(Text.assemble("\n", ("question: ", "bold"), question, "\n"))
    ask(question, mode=None, as_json=False)


def _slack_configured(settings: BotSettings) -> bool:
    """A bot token plus a way to receive events (Socket Mode app token or signing secret)."""
    return settings.slack_bot_token is not None and (
        settings.slack_app_token is not None or settings.slack_signing_secret is not None)


@app.command()
def serve() -> None:
    """Run the Slack bot: Socket Mode with SLACK_APP_TOKEN, else HTTP on KOTAE_HOST:KOTAE_PORT."""
    from bot.server import run_bot
    from bot.settings import BotSettings

    settings = _settings(BotSettings)
    if settings.slack_bot_token is None:
        _fail(ValueError("SLACK_BOT_TOKEN is not set. See README › Connect to Slack."),
              code=EXIT_USAGE)
    if settings.slack_app_token is None and settings.slack_signing_secret is None:
        _fail(ValueError("Set SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode)."),
              code=EXIT_USAGE)
    try:
        run_bot(settings, _service(settings), announce=lambda line: err.print(line, markup=False))
    except KotaeError as error:  # Slack unreachable or refusing the token, port taken, prompts
        _fail(error)


@app.command()
def status(as_json: JsonOption = False) -> None:
    """Index version, documents, chunks, model, device, retrieval mode (loads no model)."""
    info = _service().status()
    if as_json:
        console.print_json(json.dumps(info, ensure_ascii=False))
        return
    for key, value in info.items():
        if key == "last_indexed" and value:
            value = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
        console.print(f"{key:16} {value}", markup=False)


@app.command()
def feedback(
    everything: Annotated[bool, typer.Option(
        "--all", metavar="", help="also the answers (question and answer id) votes refer to")]
        = False,
) -> None:
    """The 👍/👎 votes as JSON lines, oldest first: with KOTAE_REDIS_URL every replica's (from
    Redis), and this machine's feedback file (KOTAE_FEEDBACK_PATH) either way."""
    from bot.feedback import open_feedback
    from bot.settings import BotSettings

    try:
        records = open_feedback(_settings(BotSettings)).records()
    except KotaeError as error:  # Redis unreachable
        _fail(error)
    for record in records:
        if everything or record.get("type") == "vote":
            typer.echo(json.dumps(record, ensure_ascii=False))


@app.command("migrate-to-milvus")
def migrate_to_milvus(as_json: JsonOption = False) -> None:
    """Copy the served local index (KOTAE_INDEX_DIR) into Milvus (KOTAE_MILVUS_URI) without
    re-embedding anything; then set KOTAE_STORE=milvus."""
    from retrieval.stores.milvus.migrate import migrate_local_to_milvus

    settings = _settings()
    with Progress(TextColumn("copying chunks"), BarColumn(), TaskProgressColumn(),
                  TimeRemainingColumn(), console=err, transient=True,
                  disable=as_json or not err.is_terminal) as bar:
        task = bar.add_task("copying", total=None)
        try:
            summary = migrate_local_to_milvus(
                settings, progress=lambda done, total: bar.update(task, completed=done,
                                                                  total=total))
        except KotaeError as error:
            _fail(error)
        except KeyboardInterrupt:
            _interrupted("nothing was changed; Milvus serves what it served before.")
    if as_json:
        console.print_json(json.dumps(vars(summary), ensure_ascii=False))
        return
    console.print(f"copied {summary.source_version} ({summary.chunks} chunks, {summary.files} "
                  f"files) into Milvus as {summary.version} in {summary.seconds:.1f}s; "
                  "set KOTAE_STORE=milvus to serve it", markup=False)


@app.command("milvus-lite-serve")
def milvus_lite_serve(
    db: Annotated[Path, typer.Argument(metavar="DB_FILE", help="the Milvus Lite .db file")],
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 19530,
) -> None:
    """Serve a Milvus Lite file over TCP, so several processes (`kotae serve` beside
    `kotae index`, replicas) share it: KOTAE_MILVUS_URI=http://HOST:PORT. Ctrl-C stops it."""
    from retrieval.stores.milvus.lite_server import LiteServer

    try:
        server = LiteServer(db, host=host, port=port)
    except KotaeError as error:
        _fail(error)
    err.print(f"serving {server.db} at {server.uri}; set KOTAE_STORE=milvus "
              f"KOTAE_MILVUS_URI={server.uri}", markup=False)
    # A service manager stops it with SIGTERM: the engine is a child process that would
    # outlive us (and keep the port) unless stopped the way Ctrl-C stops it.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while server.alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        server.stop()
        raise typer.Exit(EXIT_INTERRUPTED) from None
    server.stop()
    _fail(KotaeError(f"Milvus Lite serving {server.db} stopped by itself"))


@app.command("tiny-model")
def tiny_model(
    out: Annotated[Path, typer.Argument(metavar="FOLDER", help="where to write the checkpoint")],
    real_size: Annotated[bool, typer.Option("--real-size", metavar="",
                                            help="bge-m3 size (24 layers)")] = False,
) -> None:
    """Write a bge-m3-shaped model with RANDOM weights (tests, benchmarks, offline demos).

    Its answers are meaningless; it only lets the pipeline run where BAAI/bge-m3 is unavailable.
    """
    from retrieval.tiny_model import BGE_M3, TINY, build_tiny_bge_m3

    build_tiny_bge_m3(out, BGE_M3 if real_size else TINY)
    console.print(f"wrote {out}; use it with KOTAE_EMBEDDING_MODEL={out}", markup=False)


def _mode(mode: str | None):  # type: ignore[no-untyped-def]
    if mode is None:
        return None
    if mode not in ("dense", "sparse", "hybrid", "all"):
        raise typer.BadParameter(f"unknown mode {mode!r}: use dense, sparse, hybrid or all",
                                 param_hint="--mode")
    return mode


def run() -> None:
    """The `kotae` console entry point: `app()`, then, where torch was loaded, an exit that
    skips interpreter teardown. Tearing down torch, transformers and FlagEmbedding costs ~1 s
    of a 4–5 s `kotae search` and does nothing a finished command needs: every command has
    written and closed what it keeps before it returns (the index is published, SQLite
    committed, output flushed here)."""
    import os
    import sys

    try:
        app()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
    if "torch" not in sys.modules:
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
