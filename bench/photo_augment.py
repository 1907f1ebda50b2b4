"""Photo augmentation speed, images/s: the batched tensor transforms (augment.photo_transform, on
the CPU with 1 and all threads, and on the GPU when there is one) against albumentations per
image (augment.PhotoTransform, the loader processes' work, on one core).

    .venv/bin/python bench/photo_augment.py [--stored 256] [--size 224] [--batch 64]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from compete.augment import PhotoTransform, train_transform  # noqa: E402
from compete.config import Member  # noqa: E402

MEMBER = Member(crop_scale=0.35, rotate=10, jitter=0.2, pad_crop=0)  # the photo presets' recipe
BATCHES = 6   # timed batches per variant (one more warms up)


def batched_rate(images: np.ndarray, size: int, device: torch.device, threads: int) -> float:
    torch.set_num_threads(threads)
    tensor = torch.from_numpy(images).to(device).permute(0, 3, 1, 2)
    generator = torch.Generator(device=device).manual_seed(0)

    def step():
        train_transform(tensor, MEMBER, True, False, generator, photo_size=size)
        if device.type == "cuda":
            torch.cuda.synchronize()
    step()
    started = time.perf_counter()
    for _ in range(BATCHES):
        step()
    return BATCHES * len(images) / (time.perf_counter() - started)


def albumentations_rate(images: np.ndarray, size: int) -> float:
    transform = PhotoTransform(MEMBER, size)
    transform(images[:4], 0)
    started = time.perf_counter()
    for seed in range(BATCHES):
        transform(images, seed)
    return BATCHES * len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stored", type=int, default=256, help="side of the cached images")
    parser.add_argument("--size", type=int, default=224, help="side the member trains at")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    images = np.random.default_rng(0).integers(0, 256, (args.batch, args.stored, args.stored, 3), np.uint8)
    cores = len(os.sched_getaffinity(0))
    rows = {"albumentations, 1 core": albumentations_rate(images, args.size),
            "batched, CPU 1 thread": batched_rate(images, args.size, torch.device("cpu"), 1),
            f"batched, CPU {cores} threads": batched_rate(images, args.size, torch.device("cpu"), cores)}
    if torch.cuda.is_available():
        rows["batched, " + torch.cuda.get_device_name()] = batched_rate(images, args.size, torch.device("cuda"), cores)
    for name, rate in rows.items():
        print(json.dumps({"bench": "photo_augment", "variant": name, "stored": args.stored, "size": args.size,
                          "batch": args.batch, "images_per_s": round(rate)}))


if __name__ == "__main__":
    main()
