"""`kotae`: index documents, search them, ask questions, serve the Slack bot.

The edge where domain errors become one clear message (and exit code 1), never a traceback.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from retrieval.errors import KotaeError
from retrieval.settings import Settings

if TYPE_CHECKING:
    from bot.settings import BotSettings

app = typer.Typer(help="kotae (答え): answers from your team's documents.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ModeOption = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional here
    typer.Option("--mode", "-m", help="dense | sparse | hybrid | all (default: by device)"),
]


def _settings() -> Settings:
    return Settings()


def _fail(error: Exception) -> None:
    err.print(f"[bold red]error:[/] {error}")
    raise typer.Exit(1)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:  # model-loading progress bars and load reports are noise for users
        import os

        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TQDM_DISABLE", "1")


@app.command()
def index(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="files/folders (default: KOTAE_DOCS_DIR, else the folders the index was built from)")] = None,  # noqa: E501, UP045
    full: Annotated[bool, typer.Option("--full", help="rebuild from scratch")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Build or update the index (incremental: unchanged files are not re-embedded)."""
    from retrieval.service import KotaeService

    service = KotaeService(_settings())
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                  TextColumn("{task.fields[detail]}"), TimeRemainingColumn(),
                  console=err, transient=True, disable=as_json) as bar:
        task = bar.add_task("scanning", total=None, detail="")

        def show(p) -> None:  # type: ignore[no-untyped-def]
            if p.phase == "embedding":
                bar.update(task, description=f"embedding  files {p.files_done}/{p.files_total}",
                           total=p.chunks_total, completed=p.chunks_done,
                           detail=f"{p.chunks_done}/{p.chunks_total} chunks "
                                  f"{p.embeddings_per_s:.1f} emb/s")
            else:
                bar.update(task, description=p.phase)

        try:
            summary = service.reindex(paths or None, full=full, progress=show)
        except KotaeError as error:
            _fail(error)
            return
    if as_json:
        console.print_json(json.dumps(summary.as_dict(), ensure_ascii=False))
        return
    for source, reason in summary.failed:
        err.print(f"[yellow]skipped[/] {source}: {reason}")
    state = f"switched to {summary.version}" if summary.switched else (
        f"nothing changed, still serving {summary.version}")
    console.print(
        f"added {len(summary.added)} · updated {len(summary.updated)} · unchanged "
        f"{len(summary.unchanged)} · removed {len(summary.removed)} · failed "
        f"{len(summary.failed)} files · {summary.chunks_total} chunks · "
        f"{summary.seconds:.1f}s · {state}")


@app.command()
def search(
    query: str,
    mode: ModeOption = None,
    k: Annotated[int, typer.Option("-k", help="number of hits")] = 5,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Ranked chunks for QUERY with their scores and metadata."""
    from retrieval.service import KotaeService

    service = KotaeService(_settings())
    timings: dict[str, float] = {}
    try:
        hits = service.search(query, mode=_mode(mode), k=k, timings=timings)
    except KotaeError as error:
        _fail(error)
        return
    if as_json:
        console.print_json(json.dumps({
            "query": query, "mode": _mode(mode) or service.mode,
            "hits": [hit.model_dump() for hit in hits], "timings": timings,
        }, ensure_ascii=False))
        return
    if not hits:
        console.print("no matching chunks")
    for rank, hit in enumerate(hits, start=1):
        where = " › ".join([hit.title, *hit.section_path])
        console.print(f"[bold]{rank}. {where}[/]  score {hit.score:.4f} "
                      f"(dense {hit.dense or 0:.3f}, sparse {hit.sparse or 0:.3f}"
                      + (f", colbert {hit.colbert:.3f}" if hit.colbert is not None else "") + ")")
        console.print(f"   {hit.source}", style="dim")
        console.print("   " + hit.text[:200].replace("\n", " "))


@app.command()
def ask(
    question: str,
    mode: ModeOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="answer, citations, timings")] = False,
) -> None:
    """Answer QUESTION from the index, with numbered sources."""
    from retrieval.service import KotaeService

    service = KotaeService(_settings())
    try:
        if as_json:
            answer = service.ask(question, mode=_mode(mode))
        else:
            answer = _stream_answer(service, question, _mode(mode))
    except KotaeError as error:
        _fail(error)
        return
    if as_json:
        console.print_json(json.dumps({
            "answer": answer.text, "kind": answer.kind, "notice": answer.notice,
            "citations": [c.model_dump() for c in answer.citations], "mode": answer.mode,
            "timings": answer.timings,
        }, ensure_ascii=False))
        return
    _print_answer(answer, text_shown=True)


def _stream_answer(service, question: str, mode):  # type: ignore[no-untyped-def]
    """Show the answer growing as it is written, then the final text in its place (markers
    renumbered, invented ones removed); return the final Answer."""
    from rich.live import Live
    from rich.text import Text

    from retrieval.types import Answer

    written = ""
    with Live(Text(""), console=console, auto_refresh=False) as live:
        for event in service.stream(question, mode=mode):
            if isinstance(event, Answer):
                live.update(Text(event.text), refresh=True)
                return event
            written += event
            live.update(Text(written), refresh=True)
    raise RuntimeError("the answer chain ended without an answer")


def _print_answer(answer, *, text_shown: bool = False) -> None:  # type: ignore[no-untyped-def]
    if not text_shown:
        console.print(answer.text, markup=False, highlight=False)
    elif not console.is_terminal:
        console.line()  # Live leaves a non-terminal mid-line
    if answer.notice:
        err.print(f"[yellow]{answer.notice}[/]")
    if answer.citations:
        cited = any(c.cited for c in answer.citations)
        console.print()
        console.print("[bold]Sources[/]" if cited else "[bold]Related sources[/]")
    for citation in answer.citations:
        where = " › ".join([citation.title, *citation.heading_path])
        console.print(f"[{citation.number}] {where}", markup=False, highlight=False)
        console.print(f"    {citation.url or citation.source}", style="dim", markup=False)
        if answer.kind == "retrieval_only":
            console.print(f"    > {citation.snippet}", markup=False, highlight=False)


@app.command()
def demo(
    question: Annotated[str, typer.Argument()] = "経費精算の締め切りはいつですか？",
) -> None:
    """Index the documents (default: the bundled samples) and answer QUESTION.

    With SLACK_BOT_TOKEN and a signing secret or app token set, serves the bot instead.
    """
    from bot.settings import BotSettings
    from retrieval.indexer import default_roots

    settings = BotSettings()  # the Slack settings too, from the environment or .env
    if _slack_configured(settings):
        serve()
        return
    folders = ", ".join(str(root) for root in default_roots(settings))
    console.print(f"[bold]indexing[/] {folders} → {settings.index_dir}")
    try:
        index(paths=None, full=False, as_json=False)
    except typer.Exit:
        err.print("hint: without bge-m3 weights, `make demo-offline` runs the same pipeline "
                  "with a random-weight model (answers are meaningless, the rest is real).")
        raise
    console.print(f"\n[bold]question:[/] {question}\n")
    ask(question, mode=None, as_json=False)


def _slack_configured(settings: BotSettings) -> bool:
    """A bot token plus a way to receive events (Socket Mode app token or signing secret)."""
    return settings.slack_bot_token is not None and (
        settings.slack_app_token is not None or settings.slack_signing_secret is not None)


@app.command()
def serve() -> None:
    """Run the Slack bot: Socket Mode with SLACK_APP_TOKEN, else HTTP on KOTAE_HOST:KOTAE_PORT."""
    import threading

    from bot.app import create_app
    from bot.server import HttpServer, socket_mode_handler
    from bot.settings import BotSettings
    from retrieval.service import KotaeService

    settings = BotSettings()
    if settings.slack_bot_token is None:
        _fail(ValueError("SLACK_BOT_TOKEN is not set. See README › Connect to Slack."))
    if settings.slack_app_token is None and settings.slack_signing_secret is None:
        _fail(ValueError("Set SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode)."))
    service = KotaeService(settings)
    try:
        service.check_answer_setup()  # a broken custom prompt stops here, not at a question
    except KotaeError as error:
        _fail(error)
    threading.Thread(target=_warm_up, args=(service,), daemon=True).start()
    bolt_app, _ctx = create_app(settings, service)
    if settings.slack_app_token is not None:
        err.print("kotae: connecting to Slack in Socket Mode")
        socket_mode_handler(bolt_app, settings.slack_app_token.get_secret_value()).start()
        return

    def health() -> dict:
        status = service.status()
        return {key: status[key] for key in ("index_version", "chunks", "documents",
                                             "embedding_device", "retrieval_mode")}

    server = HttpServer(bolt_app, health, settings.host, settings.port, settings.http_threads)
    err.print(f"kotae: listening on http://{settings.host}:{server.port}/slack/events")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()


def _warm_up(service) -> None:  # type: ignore[no-untyped-def]
    """Load the model and the index before the first question (the answer chain is already
    built: `serve` checks it before starting); a failure is logged, and answered in Slack."""
    try:
        _ = service.embeddings.flag_model
        service.index.store()
    except KotaeError as error:
        logging.getLogger("kotae").error("%s", error)


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Index version, documents, chunks, model, device, retrieval mode."""
    from retrieval.service import KotaeService

    info = KotaeService(_settings()).status()
    if as_json:
        console.print_json(json.dumps(info, ensure_ascii=False))
        return
    for key, value in info.items():
        if key == "last_indexed" and value:
            value = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
        console.print(f"{key:16} {value}")


@app.command("tiny-model")
def tiny_model(
    out: Annotated[Path, typer.Argument(help="folder to write the checkpoint to")],
    real_size: Annotated[bool, typer.Option("--real-size", help="bge-m3 size (24 layers)")] = False,
) -> None:
    """Write a bge-m3-shaped model with RANDOM weights (tests, benchmarks, offline demos).

    Its answers are meaningless; it only lets the pipeline run where BAAI/bge-m3 is unavailable.
    """
    from retrieval.tiny_model import BGE_M3, TINY, build_tiny_bge_m3

    build_tiny_bge_m3(out, BGE_M3 if real_size else TINY)
    console.print(f"wrote {out}; use it with KOTAE_EMBEDDING_MODEL={out}")


def _mode(mode: str | None):  # type: ignore[no-untyped-def]
    if mode is None:
        return None
    if mode not in ("dense", "sparse", "hybrid", "all"):
        _fail(ValueError(f"unknown mode {mode!r}: use dense, sparse, hybrid or all"))
    return mode
