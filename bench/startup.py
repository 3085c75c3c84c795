"""How long each `kotae` command takes from a cold process to its answer.

Every contender is a fresh process (as a user runs it), timed wall-clock, the contenders
interleaved round-robin so background load hits them alike. Side by side in the same run:

- `python -c pass`: the interpreter alone;
- `import FlagEmbedding` and raw FlagEmbedding (`BGEM3FlagModel(tiny)` + one `encode`): the
  floor any command that embeds a query pays, since the query must go through bge-m3;
- with `--before REF`: the same kotae commands at an older commit (a git worktree of REF run
  with this venv), to show what a change gained.

The index is the bundled samples, embedded with the tiny random-weight model (built once into
bench/_models); model load and query embedding cost the same code paths as the real model, only
the arithmetic is smaller.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import (
    TINY_DIR,
    BenchRun,
    bench_parser,
    ensure_model,
    p50,
    publish,
    secs,
    table,
)

REPO = Path(__file__).resolve().parent.parent
QUERY = "経費精算の締め切り"


def contenders(tiny: Path) -> dict[str, list[str]]:
    raw = ("from FlagEmbedding import BGEM3FlagModel; "
           f"m = BGEM3FlagModel({str(tiny)!r}, devices='cpu', use_fp16=False); "
           "m.encode(['q'], return_sparse=True)")
    kotae = [sys.executable, "-m", "kotae"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "import FlagEmbedding": [sys.executable, "-c", "import FlagEmbedding"],
        "raw FlagEmbedding: load + encode 1 query": [sys.executable, "-c", raw],
        "kotae --help": [*kotae, "--help"],
        "kotae status": [*kotae, "status"],
        "kotae search": [*kotae, "search", QUERY, "-k", "3"],
        "kotae ask (no chat model)": [*kotae, "ask", QUERY],
    }


KOTAE_COMMANDS = ("kotae --help", "kotae status", "kotae search", "kotae ask (no chat model)")


def run_once(command: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return elapsed


def measure(args: argparse.Namespace) -> str:
    tiny = ensure_model(TINY_DIR, "TINY")
    work = Path(tempfile.mkdtemp(prefix="kotae-startup-"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KOTAE_", "OPENAI_"))}
        env.update(KOTAE_EMBEDDING_MODEL=str(tiny), KOTAE_EMBEDDING_DEVICE="cpu",
                   KOTAE_INDEX_DIR=str(work / "index"), HF_HUB_OFFLINE="1",
                   TQDM_DISABLE="1")
        run_once([sys.executable, "-m", "kotae", "index"], env, REPO)  # the bundled samples
        commands = {name: (command, REPO, env) for name, command in contenders(tiny).items()}
        if args.before:
            old = _worktree(args.before, work / "before")
            old_env = {**env, "PYTHONPATH": str(old)}
            for name in KOTAE_COMMANDS:
                commands[f"{name} @ {args.before}"] = (commands[name][0], old, old_env)
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _round in range(args.runs):
            for name, (command, cwd, command_env) in commands.items():
                samples[name].append(run_once(command, command_env, cwd))
    finally:
        if args.before:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(work / "before")], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    rows = [[name, secs(p50(values)), secs(min(values)), secs(max(values))]
            for name, values in samples.items()]
    return "\n\n".join([
        f"Wall-clock seconds per command, {args.runs} fresh processes each, interleaved; the "
        "index holds the bundled samples embedded with the tiny model.",
        table(["command", "p50", "min", "max"], rows),
    ])


def _worktree(ref: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), ref],
                   capture_output=True, check=True)
    return where


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = bench_parser("bench.startup", __doc__)
    parser.add_argument("--runs", type=int, default=5, help="processes per command (default 5)")
    parser.add_argument("--before", metavar="REF",
                        help="also time the kotae commands at this git commit")
    args = parser.parse_args(argv)
    args.section = args.section or "startup"
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    bench = BenchRun("bench.startup", argv)
    body = measure(args)
    publish("\n\n".join([bench.heading("Command start-up"), bench.machine_now(), body]),
            None if args.no_write else args.section)


if __name__ == "__main__":
    main()
