"""Where batches of uint8 images come from: the whole set kept on the training device (the fast
path, when it fits the memory budget), or rows streamed from the on-disk store (imagestore.py)
by loader processes that work ahead of the model.

Both give (N, C, H, W) uint8 tensors on the device, in channels-last memory (the store's row
layout), so whatever follows sees the same values and strides from either.
"""
from __future__ import annotations

import functools
import multiprocessing

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .config import RunConfig
from .imagestore import ImageFile

LOAD_CHUNK = 256             # images copied onto the device at once when it holds the whole set
PREFETCH = 2                 # batches each loader process prepares ahead of the model
DEVICE_SHARE = 0.5           # at most this share of a GPU's free memory holds resident images
GPU_LOADERS = 4              # loader processes by default on a GPU (one suffices on a CPU, where
                             # the model is far slower than reading and augmenting its batches)


def to_tensor(images, device: torch.device) -> torch.Tensor:
    """(N, H, W, C) uint8 images (array or ImageFile: all read) -> (N, C, H, W) uint8 tensor on
    `device`; uint8 moves 4x less."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2))).to(device)


class ResidentImages:
    """Every image as one (N, H, W, C) uint8 tensor on the device; a batch is a gather there,
    with no copy per step."""
    streamed = False

    def __init__(self, images: torch.Tensor):
        self.images, self.device, self.shape = images, images.device, tuple(images.shape)

    @classmethod
    def load(cls, images, device: torch.device) -> "ResidentImages":
        """Copy (N, H, W, C) uint8 images (an array or an ImageFile) onto `device`, a chunk at a
        time: the set is never twice in host memory."""
        tensor = torch.empty(tuple(images.shape), dtype=torch.uint8, device=device)
        for start in range(0, len(images), LOAD_CHUNK):
            chunk = np.ascontiguousarray(images[start:start + LOAD_CHUNK])
            tensor[start:start + len(chunk)] = torch.from_numpy(chunk).to(device)
        return cls(tensor)

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, index_batches: list[torch.Tensor], per_image=None, seeds=None):
        """Images of each index batch, in order. Per-image transforms run on loader processes,
        which a resident set has none of: they must be None here."""
        assert per_image is None, "per-image transforms need a streamed source"
        for index in index_batches:
            yield self.images[index.to(self.device)].permute(0, 3, 1, 2)


class _RowBatches(Dataset):
    """Loader side of a streamed source: item (positions, seed) -> those images, read from the
    store (and transformed one by one, seeded per batch so the result does not depend on which
    process made it)."""

    def __init__(self, images: ImageFile, per_image):
        self.images, self.per_image = images, per_image

    def __getitem__(self, item):
        positions, seed = item
        batch = self.images.read(positions)
        if self.per_image is not None:
            batch = self.per_image(batch, seed)
        return torch.from_numpy(batch)


@functools.cache
def _loader_context():
    """Loader processes forked from a small server process that has imported this module, not
    from the training process: a fork of that one would keep every page of its memory alive
    (activations freed after the fork included) for as long as the loader lives."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


class StreamedImages:
    """Images read from the store batch by batch: `workers` loader processes read ahead
    (PREFETCH batches each) while the model computes; on CUDA the batches arrive in pinned
    memory and are copied without blocking. Resident memory holds a few batches, whatever the
    size of the set."""
    streamed = True

    def __init__(self, images: ImageFile, device: torch.device, workers: int):
        self.images, self.device, self.workers, self.shape = images, device, workers, tuple(images.shape)

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, index_batches: list[torch.Tensor], per_image=None, seeds=None):
        """Images of each index batch, in order; `per_image(batch, seed)` runs on the loader
        processes, with seeds[i] for batch i."""
        seeds = seeds if seeds is not None else [0] * len(index_batches)
        items = [(index.cpu().numpy(), seed) for index, seed in zip(index_batches, seeds)]
        # a generator of its own: the loader's worker seeds must not draw from the global one,
        # which dropout and mixing use (a streamed run then repeats a resident one exactly)
        loader = DataLoader(_RowBatches(self.images, per_image), sampler=items, batch_size=None,
                            num_workers=self.workers, pin_memory=self.device.type == "cuda",
                            prefetch_factor=PREFETCH if self.workers else None, generator=torch.Generator(),
                            multiprocessing_context=_loader_context() if self.workers else None)
        for batch in loader:
            yield batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2)


def as_source(images):
    """A batch source as it is; a (N, C, H, W) uint8 tensor (tests, benchmarks) as a resident one."""
    return ResidentImages(images.permute(0, 2, 3, 1)) if isinstance(images, torch.Tensor) else images


def resident_budget(device: torch.device, gigabytes: float) -> int:
    """Bytes of images that may stay whole on `device`: the setting, and on a GPU also at most
    DEVICE_SHARE of its free memory (the model and its activations need the rest)."""
    budget = int(gigabytes * 2 ** 30)
    if device.type == "cuda":
        budget = min(budget, int(torch.cuda.mem_get_info(device)[0] * DEVICE_SHARE))
    return budget


def open_images(images, run: RunConfig, device: torch.device, stream: bool = False):
    """(N, H, W, C) uint8 images as a batch source: resident when they fit the run's budget
    (resident_gb) and `stream` is not asked for (per-image transforms need loader processes),
    else streamed from `images`, which must then be an ImageFile, by run.loader_workers
    processes (0: GPU_LOADERS on a GPU, one on a CPU)."""
    if not stream and int(np.prod(images.shape)) <= resident_budget(device, run.resident_gb):
        return ResidentImages.load(images, device)
    if not isinstance(images, ImageFile):
        raise TypeError("streaming needs the images in an on-disk store (imagestore.ImageFile)")
    return StreamedImages(images, device, run.loader_workers or (GPU_LOADERS if device.type == "cuda" else 1))
