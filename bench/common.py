"""Shared helpers for the bench scripts: the machine, statistics, timing, the options every
script takes, and RESULTS.md sections.

Each script owns one or more sections of `bench/RESULTS.md`, delimited by
`<!-- name:start -->` / `<!-- name:end -->`, and rewrites only those, so running one script never
erases another's numbers.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "RESULTS.md"
MODELS_DIR = BENCH_DIR / "_models"  # git-ignored: generated checkpoints live here
BGE_M3_ARCH_DIR = MODELS_DIR / "bge-m3-arch"  # the real bge-m3 architecture, random weights
TINY_DIR = MODELS_DIR / "tiny-bge-m3"

RESULTS_HEADER = """\
# kotae benchmark results

Written by the scripts in `bench/` (see `bench/README.md`); each script replaces only its own
sections. Every table compares our code with a baseline measured in the same run on the same
machine. Numbers from different machines or different runs are not comparable.
"""

_PACKAGES = ("torch", "faiss-cpu", "FlagEmbedding", "transformers", "numpy", "scipy",
             "langchain-core", "langchain-community", "langchain-classic", "langchain-openai")


def cpu_count() -> int:
    """Cores this process may run on (what torch and faiss should use)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def rss_bytes() -> int:
    """Resident set size of this process (Linux), 0 where unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def code_version() -> str:
    """The commit measured, and whether the measured code differs from it (read-only git)."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=BENCH_DIR.parent, capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "retrieval", "kotae", "prompts")
    return f"commit {commit}" + (" + uncommitted changes in retrieval/kotae/prompts"
                                 if dirty else "")


def machine_markdown() -> str:
    """The machine and library versions, as a Markdown list for the top of a section."""
    memory = memory_total_gib()
    load = load_average()
    versions = ", ".join(f"{name} {package_version(name)}" for name in _PACKAGES)
    return "\n".join([
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, code: {code_version()}",
        f"- CPU: {cpu_model()}, {cpu_count()} cores available"
        + (f", {memory:.1f} GiB RAM" if memory else ""),
        f"- load average when the run started (1/5/15 min): {load}",
        f"- Python {platform.python_version()} on {platform.system()} {platform.release()}",
        f"- {versions}",
    ])


def load_average() -> str:
    try:
        return "{:.2f} / {:.2f} / {:.2f}".format(*os.getloadavg())
    except OSError:
        return "unknown"


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation, as numpy computes it."""
    if not len(samples):
        return float("nan")
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q))


def p50(samples: Sequence[float]) -> float:
    return percentile(samples, 50)


def p99(samples: Sequence[float]) -> float:
    return percentile(samples, 99)


def time_once(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def time_interleaved(
    contenders: dict[str, Callable[[], object]], runs: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each contender, calls interleaved (A B A B …) so that a change in
    machine load during the run hits every contender alike; the order alternates each round."""
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(runs):
        order = names if round_number % 2 == 0 else names[::-1]
        for name in order:
            seconds, _ = time_once(contenders[name])
            samples[name].append(seconds)
    return samples


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def secs(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 100 else f"{seconds:.0f} s"


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def ensure_model(folder: Path, shape_name: str) -> Path:
    """A random-weight bge-m3-shaped checkpoint, built once and reused (bench/_models/)."""
    from retrieval.tiny_model import BGE_M3, TINY, build_tiny_bge_m3

    needed = ("config.json", "model.safetensors", "tokenizer.json", "colbert_linear.pt",
              "sparse_linear.pt")
    if all((folder / name).is_file() for name in needed):
        return folder
    print(f"building {shape_name} checkpoint in {folder} (once) …", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    return build_tiny_bge_m3(folder, BGE_M3 if shape_name == "BGE_M3" else TINY)


def flag_lexical(weights: dict[Any, Any]) -> dict[int, float]:
    """FlagEmbedding's lexical weights (str token id → numpy float) as ours (int → float)."""
    return {int(token): float(weight) for token, weight in weights.items()}


def write_section(name: str, markdown: str, results_file: Path = RESULTS_FILE) -> None:
    """Replace the `name` section of RESULTS.md (or append it), leaving the others untouched."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"section names are plain words, got {name!r}")
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = results_file.read_text(encoding="utf-8") if results_file.exists() else RESULTS_HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _match: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = results_file.with_name(results_file.name + f".{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(results_file)


def set_threads(threads: int) -> None:
    """Pin torch and faiss to `threads` (the core count by default), before any work runs."""
    import torch

    torch.set_num_threads(threads)
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:
        pass


def quiet_model_loading() -> None:
    """No progress bars or load reports from FlagEmbedding / transformers in bench output.
    TQDM_DISABLE is read when tqdm is imported: call this before loading any model."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


# --- command line and results: what every script's main() shares ----------------------------


def bench_parser(module: str, description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every bench script takes (`--section`,
    `--no-write`); the script adds its own."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", help="RESULTS.md section to write (default by preset)")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    return parser


def comma_ints(text: object) -> list[int]:
    """`"100000,1000000"` (an option value) as `[100000, 1000000]`."""
    return [int(part) for part in str(text).split(",") if part.strip()]


@dataclass
class BenchRun:
    """One run of a bench script: the command as typed, when it started and on what machine,
    for the heading of the section it writes."""

    module: str
    argv: Sequence[str] | None = None  # None: this process's own arguments
    started: float = field(default_factory=time.perf_counter)
    machine: str = field(default_factory=machine_markdown)

    @property
    def command(self) -> str:
        args = sys.argv[1:] if self.argv is None else list(self.argv)
        return " ".join(["python -m", self.module, *args])

    @property
    def minutes(self) -> float:
        return (time.perf_counter() - self.started) / 60

    def heading(self, title: str) -> str:
        """`## title (`command`, 1.2 min)`."""
        return f"## {title} (`{self.command}`, {self.minutes:.1f} min)"

    def machine_now(self) -> str:
        """The machine at the start, plus the load average now (the end of the run)."""
        return self.machine + f"\n- load average when it ended: {load_average()}"


def publish(markdown: str, section: str | None, results_file: Path = RESULTS_FILE, *,
            echo: bool = True) -> None:
    """Print a script's results (unless `echo` is off) and, unless `section` is None
    (`--no-write`), write them as that section of RESULTS.md."""
    if echo:
        print(markdown, flush=True)
    if section is None:
        return
    write_section(section, markdown, results_file)
    where = (results_file.relative_to(BENCH_DIR.parent)
             if results_file.is_relative_to(BENCH_DIR.parent) else results_file)
    print(f"\nwrote section '{section}' of {where}", flush=True)
