"""Where the work runs, chosen once and passed explicitly: the device, CPU threads, and the
autocast precision."""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from .config import PipelineError, RunConfig


def choose_device(name: str, deterministic: bool = False) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise PipelineError("--device cuda was asked for, but no CUDA GPU is visible. Use --device cpu.")
    if name == "cuda":
        # batch shapes are fixed: let cuDNN time its kernels, unless runs must repeat bit for bit
        torch.backends.cudnn.benchmark = not deterministic
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """bf16 matrix units (AMX or AVX512-BF16) make bf16 autocast pay off on a CPU."""
    capability = torch.backends.cpu.get_cpu_capability()
    return torch.ops.mkldnn._is_mkldnn_bf16_supported() and "AVX512" in capability


def autocast(device: torch.device, precision: str):
    """The autocast context for this device, chosen once: bf16 where it is fast, else none."""
    if precision == "fp32":
        return nullcontext
    if precision == "auto" and device.type == "cpu" and not cpu_has_bf16():
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


@dataclass(frozen=True)
class Runtime:
    """Where models train and run, chosen once per command and passed to whatever computes."""
    device: torch.device
    precision: str = "auto"  # RunConfig.precision: auto | bf16 | fp32

    def autocast(self):
        """The autocast context factory for this device and precision (see `autocast`)."""
        return autocast(self.device, self.precision)


def configure_threads(run: RunConfig) -> None:
    if run.threads:
        torch.set_num_threads(run.threads)
