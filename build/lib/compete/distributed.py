"""Data-parallel training across processes launched by torchrun: NCCL on GPUs, gloo on CPUs.

A single process is the world of size 1, so callers never branch on whether this is on.
"""
from __future__ import annotations

import os
import subprocess
import sys

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Only the main process writes files and prints progress."""
    return rank() == 0


def launched() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: torch.device) -> torch.device:
    """Join the process group torchrun set up; returns this process's device."""
    if not launched() or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def sum_all(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes (in place, returned for chaining)."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def share(value):
    """The main process's value, on every process."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel over the currently trainable parameters (identity alone)."""
    if not dist.is_initialized():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def relaunch(processes: int, argv: list[str]) -> int:
    """Run this command again under torchrun with `processes` workers on this machine."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", "-m", "compete", *argv]
    return subprocess.call(command)
