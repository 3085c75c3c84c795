"""Timing and formatting shared by the parts: GPU-synchronised timers, bounded latency
sampling, interleaved rounds, recall."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bench.common import ms, p50, p99
from bench.gpu.config import SKIP_NO_GPU, Config, K


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def sync(device: str) -> None:
    """Wait for queued GPU work, so a timer stops when the work is done, not when it is queued."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    sync(device)
    started = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - started, result


def latencies(fn: Callable[[int], Any], count: int, max_seconds: float, device: str,
              warmup: int = 3, minimum: int = 5) -> list[float]:
    """Seconds per call of `fn(i)` for i = 0..count-1, stopping early after `max_seconds`
    (but not before `minimum` calls): bounds the slow CPU contenders at 1M vectors."""
    for i in range(warmup):
        fn(i)
    samples: list[float] = []
    budget_start = time.perf_counter()
    for i in range(count):
        seconds, _ = timed(lambda i=i: fn(i), device)
        samples.append(seconds)
        if len(samples) >= minimum and time.perf_counter() - budget_start > max_seconds:
            break
    return samples


def time_rounds(contenders: dict[str, Callable[[], Any]], rounds: int, device: str) -> tuple[
        dict[str, list[float]], dict[str, Any]]:
    """Seconds per call, calls interleaved (A B A B …, order alternating), and the last output
    of each. A warm-up is the caller's job."""
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, Any] = {}
    for number in range(rounds):
        for name in names if number % 2 == 0 else names[::-1]:
            seconds, outputs[name] = timed(contenders[name], device)
            samples[name].append(seconds)
    return samples, outputs


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int = K) -> float:
    hits = [len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth,
                                                                           strict=True)]
    return float(np.mean(hits)) / k


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def pct(samples: Sequence[float]) -> tuple[str, str]:
    return ms(p50(samples)), ms(p99(samples))


def no_gpu_reason(cfg: Config) -> str:
    return SKIP_NO_GPU if cfg.dry_run else "skipped: this faiss build has no GPU support"


def error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".replace("\n", " ").replace("|", "/")
    return text[:160] + ("…" if len(text) > 160 else "")
