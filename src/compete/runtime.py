"""Where the work runs, chosen once and passed explicitly: the device, CPU threads, and the
autocast precision; and a command's session (start_session), the one place they are chosen.
And the process's own clock, which time limits count from."""
from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from . import distributed
from .config import Competition, RunConfig
from .errors import PipelineError

IMPORTED = time.monotonic()  # fallback start time where /proc is missing


def process_seconds() -> float:
    """Seconds since this process started, interpreter start-up and imports included (Linux's
    /proc; elsewhere, since this module was imported): what --time-limit counts."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start, in ticks after boot
        return float(Path("/proc/uptime").read_text().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return time.monotonic() - IMPORTED


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


@dataclass(frozen=True)
class Session:
    """One command's settings and where it computes: the competition, the run's settings and
    the runtime. Built once (start_session) by `train`, `lr-find` and `train --lr auto` alike,
    and passed to whatever trains or measures."""
    comp: Competition
    run: RunConfig
    runtime: Runtime


def start_session(comp: Competition, run: RunConfig) -> Session:
    """The session of a command that trains: CPU threads set, the device chosen (this process's
    own under torchrun, whose process group it joins) with the run's precision."""
    configure_threads(run)
    device = distributed.setup(choose_device(run.device, run.deterministic))
    return Session(comp, run, Runtime(device, run.precision))
