"""The GPU, its driver and the library versions: what makes numbers comparable."""

from __future__ import annotations

import subprocess
from typing import Any

from bench.common import human_bytes, package_version
from bench.gpu.config import Config


def gpu_facts(cfg: Config) -> dict[str, Any]:
    """Device name, driver, CUDA and library versions (what makes numbers comparable)."""
    import torch

    facts: dict[str, Any] = {
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "faiss": _faiss_version(), "faiss_gpu_support": cfg.faiss_gpu,
        "faiss_package": next((f"{name} {package_version(name)}" for name in
                               ("faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cuvs", "faiss-cpu")
                               if package_version(name) != "not installed"), "unknown"),
        "FlagEmbedding": package_version("FlagEmbedding"),
        "transformers": package_version("transformers"),
    }
    if cfg.dry_run or not torch.cuda.is_available():
        facts["device"] = "cpu (dry run: no GPU used)"
        return facts
    props = torch.cuda.get_device_properties(0)
    facts.update(
        device=torch.cuda.get_device_name(0), memory=props.total_memory,
        capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
        cudnn=torch.backends.cudnn.version(), driver=_nvidia_smi("driver_version"),
        driver_cuda=_driver_cuda_version(),
        sdpa_flash=torch.backends.cuda.flash_sdp_enabled(),
        sdpa_mem_efficient=torch.backends.cuda.mem_efficient_sdp_enabled(),
    )
    return facts


def _faiss_version() -> str:
    import faiss

    return str(getattr(faiss, "__version__", "unknown"))


def _nvidia_smi(query: str) -> str:
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        return f"unknown ({type(error).__name__})"
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else "unknown"


def _driver_cuda_version() -> str:
    """The CUDA version the driver supports (nvidia-smi's header), e.g. 13.0."""
    try:
        done = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20,
                              check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for line in done.stdout.splitlines():
        if "CUDA Version" in line:
            return line.split("CUDA Version:")[1].strip(" |")
    return "unknown"


def facts_markdown(facts: dict[str, Any]) -> str:
    lines = [f"- device: **{facts['device']}**"]
    if "memory" in facts:
        lines.append(f"- GPU memory {human_bytes(facts['memory'])}, compute capability "
                     f"{facts['capability']}, {facts['multiprocessors']} SMs; driver "
                     f"{facts['driver']} (CUDA {facts['driver_cuda']}); torch CUDA "
                     f"{facts['torch_cuda']}, cuDNN {facts['cudnn']}; SDPA flash enabled "
                     f"{facts['sdpa_flash']}, mem-efficient enabled {facts['sdpa_mem_efficient']}")
    lines.append(f"- torch {facts['torch']}, faiss {facts['faiss']} ({facts['faiss_package']}, "
                 f"GPU support: {facts['faiss_gpu_support']}), FlagEmbedding "
                 f"{facts['FlagEmbedding']}, transformers {facts['transformers']}")
    return "\n".join(lines)
