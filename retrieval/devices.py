"""Which accelerator is there, answered cheaply.

`torch` costs ~1.5 s to import and FAISS a few hundred ms; `kotae status`, `--help` and the
retrieval-mode default must not pay that on a machine that plainly has no GPU. No GPU driver
on the host means torch cannot see CUDA either, so that answer needs no import; where a
driver exists, torch and FAISS themselves are asked.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retrieval.settings import Settings
    from retrieval.types import RetrievalMode

# What an NVIDIA (and, for ROCm builds of torch, AMD) driver puts on a Linux host.
_DRIVER_MARKERS = ("/proc/driver/nvidia/version", "/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd")


def gpu_driver_present() -> bool:
    if sys.platform != "linux":
        return True  # no cheap answer elsewhere: let torch decide
    return any(os.path.exists(marker) for marker in _DRIVER_MARKERS)


@functools.cache
def cuda_available() -> bool:
    """torch.cuda.is_available(), without importing torch where no driver exists."""
    if not gpu_driver_present() and "torch" not in sys.modules:
        return False
    import torch

    return torch.cuda.is_available()


@functools.cache
def faiss_gpu_available() -> bool:
    """A FAISS build with GPU support that sees a GPU."""
    if not gpu_driver_present():
        return False
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def resolved_faiss_device(setting: str) -> str:
    """What KOTAE_FAISS_DEVICE=auto|cpu|cuda means on this machine (cuda when asked for)."""
    if setting == "auto":
        return "cuda" if faiss_gpu_available() else "cpu"
    return setting


def default_mode(settings: Settings) -> RetrievalMode:
    """KOTAE_RETRIEVAL_MODE, else `all` on a GPU (ColBERT reranking is cheap there), else
    `hybrid`."""
    if settings.retrieval_mode is not None:
        return settings.retrieval_mode
    return "all" if cuda_available() else "hybrid"
