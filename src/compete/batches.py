"""Where batches of uint8 images come from: the whole set kept on the training device (the fast
path, when it fits the memory budget), or rows streamed from the on-disk store (imagestore.py)
by loader threads that work ahead of the model.

Both give (N, C, H, W) uint8 tensors on the device, in channels-last memory (the store's row
layout), so whatever follows sees the same values and strides from either.
"""
from __future__ import annotations

import copy
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import numpy as np
import torch

from .config import RunConfig
from .imagestore import ImageFile, JoinedImages

LOAD_CHUNK = 256             # images copied onto the device at once when it holds the whole set
PREFETCH = 2                 # batches each loader thread prepares ahead of the model
DEVICE_SHARE = 0.5           # at most this share of a GPU's free memory holds resident images
GPU_LOADERS = 4              # loader threads by default on a GPU (one suffices on a CPU, where
                             # the model is far slower than reading and augmenting its batches)


class ResidentImages:
    """Every image as one (N, H, W, C) uint8 tensor on the device; a batch is a gather there,
    with no copy per step."""
    streamed = False
    rows = None  # the images' metadata beside them (with_rows)

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
        """Images of each index batch, in order. Per-image transforms run on loader threads,
        which a resident set has none of: they must be None here."""
        assert per_image is None, "per-image transforms need a streamed source"
        for index in index_batches:
            yield self.images[index.to(self.device)].permute(0, 3, 1, 2)


class StreamedImages:
    """Images read from the store batch by batch by `workers` background threads that stay
    PREFETCH batches each ahead of the model (reads and OpenCV release the GIL; threads, not
    processes, so nothing of the training process's memory is copied). On CUDA the rows land in
    pinned memory and are copied without blocking. Resident memory holds a few batches,
    whatever the size of the set."""
    streamed = True
    rows = None  # the images' metadata beside them (with_rows)

    def __init__(self, images: ImageFile, device: torch.device, workers: int):
        self.images, self.device, self.workers, self.shape = images, device, workers, tuple(images.shape)

    def __len__(self) -> int:
        return len(self.images)

    def _load(self, positions: np.ndarray, per_image, seed: int) -> torch.Tensor:
        pinned = self.device.type == "cuda"
        if per_image is not None:
            batch = torch.from_numpy(per_image(self.images.read(positions), seed))
            return batch.pin_memory() if pinned else batch
        batch = torch.empty((len(positions), *self.shape[1:]), dtype=torch.uint8, pin_memory=pinned)
        self.images.read(positions, out=batch.numpy())
        return batch

    def batches(self, index_batches: list[torch.Tensor], per_image=None, seeds=None):
        """Images of each index batch, in order; `per_image(batch, seed)` runs on the loader
        threads, with seeds[i] for batch i (so the result does not depend on which thread ran it)."""
        seeds = seeds if seeds is not None else [0] * len(index_batches)
        tasks = iter([(index.cpu().numpy(), per_image, seed) for index, seed in zip(index_batches, seeds)])
        if not self.workers:
            yield from (self._to_device(self._load(*task)) for task in tasks)
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="loader") as pool:
            ahead = deque(pool.submit(self._load, *task) for task in islice(tasks, self.workers * PREFETCH))
            while ahead:
                batch = ahead.popleft().result()
                for task in islice(tasks, 1):
                    ahead.append(pool.submit(self._load, *task))
                yield self._to_device(batch)

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2)


def as_source(images):
    """A batch source as it is; a (N, C, H, W) uint8 tensor (tests, benchmarks) as a resident one."""
    return ResidentImages(images.permute(0, 2, 3, 1)) if isinstance(images, torch.Tensor) else images


def with_rows(images, rows):
    """`images` as a batch source with their metadata `rows` beside them (a DataFrame of the
    yaml's metadata columns, one row per image, string cells; None: none), so that the rows go
    wherever the images go; each model encodes them as it was trained to (inference.model_rows)."""
    source = copy.copy(as_source(images))
    source.rows = rows
    return source


def resident_budget(device: torch.device, gigabytes: float) -> int:
    """Bytes of images that may stay whole on `device`: the setting, and on a GPU also at most
    DEVICE_SHARE of its free memory (the model and its activations need the rest)."""
    budget = int(gigabytes * 2 ** 30)
    if device.type == "cuda":
        budget = min(budget, int(torch.cuda.mem_get_info(device)[0] * DEVICE_SHARE))
    return budget


def open_images(images, run: RunConfig, device: torch.device, stream: bool = False):
    """(N, H, W, C) uint8 images as a batch source: resident when they fit the run's budget
    (resident_gb) and `stream` is not asked for (per-image transforms need loader threads),
    else streamed from `images`, which must then be an ImageFile, by run.loader_workers
    threads (0: GPU_LOADERS on a GPU, one on a CPU)."""
    if not stream and int(np.prod(images.shape)) <= resident_budget(device, run.resident_gb):
        return ResidentImages.load(images, device)
    if not isinstance(images, (ImageFile, JoinedImages)):
        raise TypeError("streaming needs the images in an on-disk store (imagestore.ImageFile)")
    return StreamedImages(images, device, run.loader_workers or (GPU_LOADERS if device.type == "cuda" else 1))
