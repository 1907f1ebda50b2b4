"""Batch sources: the resident and streamed paths give the same batches, per-image transforms
run on the loader threads reproducibly, and streaming keeps resident memory flat."""
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import torch

from compete import imagestore
from compete.batches import ResidentImages, StreamedImages, open_images
from compete.augment import PhotoTransform
from compete.config import Member, RunConfig
from compete.imagestore import ImageFile

from helpers import needs_albumentations, resident_bytes


CPU = torch.device("cpu")


def store(path, count: int, side: int = 6, seed: int = 0) -> tuple[ImageFile, np.ndarray]:
    array = np.random.default_rng(seed).integers(0, 256, (count, side, side, 3), dtype=np.uint8)
    np.save(path, array)
    return ImageFile(path), array


def index_batches(order: list[int], size: int) -> list[torch.Tensor]:
    return [torch.tensor(order[start:start + size]) for start in range(0, len(order), size)]


@pytest.mark.parametrize("workers", [0, 2])
def test_resident_and_streamed_sources_give_the_same_batches(tmp_path, workers):
    images, array = store(tmp_path / "x.npy", 40)
    rows = np.arange(3, 40, 2)  # some rows of the store, as after skipping unreadable images
    order = np.random.default_rng(1).permutation(len(rows)).tolist()
    resident = list(ResidentImages.load(images.subset(rows), CPU).batches(index_batches(order, 4)))
    streamed = list(StreamedImages(images.subset(rows), CPU, workers).batches(index_batches(order, 4)))
    assert len(resident) == len(streamed) == 5
    for a, b, start in zip(resident, streamed, range(0, len(order), 4)):
        expected = torch.from_numpy(array[rows[order[start:start + 4]]]).permute(0, 3, 1, 2)
        assert torch.equal(a, expected) and torch.equal(b, expected)
        assert a.stride() == b.stride() and a.is_contiguous(memory_format=torch.channels_last)


def shift(batch: np.ndarray, seed: int) -> np.ndarray:
    """A seeded per-image transform for the tests: add a random value per image."""
    rng = np.random.default_rng(seed)
    return (batch.astype(np.int64) + rng.integers(0, 50, (len(batch), 1, 1, 1))).clip(0, 255).astype(np.uint8)


def test_per_image_transforms_run_on_the_loader_and_do_not_depend_on_the_thread_count(tmp_path):
    images, array = store(tmp_path / "x.npy", 24)
    batches = index_batches(list(range(24)), 5)
    seeds = [11, 12, 13, 14, 15]
    outputs = [torch.cat(list(StreamedImages(images, CPU, workers).batches(batches, shift, seeds)))
               for workers in (0, 1, 2)]
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])
    assert not torch.equal(outputs[0], torch.from_numpy(array).permute(0, 3, 1, 2))
    with pytest.raises(AssertionError):
        list(ResidentImages.load(images, CPU).batches(batches, shift, seeds))


def test_open_images_keeps_what_fits_the_budget_and_streams_the_rest(tmp_path):
    images, array = store(tmp_path / "x.npy", 10)  # 1,080 bytes

    def run(budget_bytes: int) -> RunConfig:
        return RunConfig(resident_gb=budget_bytes / 2 ** 30)
    assert isinstance(open_images(images, run(10 * 108), CPU), ResidentImages)
    streamed = open_images(images, run(10 * 108 - 1), CPU)
    assert isinstance(streamed, StreamedImages) and streamed.workers == 1  # one loader on a CPU
    assert isinstance(open_images(images, run(10 ** 9), CPU, stream=True), StreamedImages)
    assert isinstance(open_images(array, run(10 ** 9), CPU), ResidentImages)
    with pytest.raises(TypeError):
        open_images(array, run(0), CPU)


def peak_growth_while_streaming(path, count: int) -> int:
    """Highest resident-memory growth of this process over one streamed pass of a store of
    `count` 192 KiB images, read in shuffled batches of 16 by two loader threads."""
    with open(path, "wb") as file:
        writer = imagestore.create(file, (count, 256, 256, 3))
    for start in range(0, count, 64):
        writer.write(start, np.full((min(64, count - start), 256, 256, 3), start % 251, np.uint8))
    source = StreamedImages(ImageFile(path), CPU, workers=2)
    order = np.random.default_rng(0).permutation(count).tolist()
    before = peak = resident_bytes()
    for batch in source.batches(index_batches(order, 16)):
        assert batch.shape == (16, 3, 256, 256)
        peak = max(peak, resident_bytes())
    return peak - before


def growth_of_a_small_and_a_large_store(folder) -> tuple[int, int]:
    peak_growth_while_streaming(folder / "warm.npy", 64)  # the loader threads' first buffers
    return (peak_growth_while_streaming(folder / "small.npy", 256),    # 48 MiB of images
            peak_growth_while_streaming(folder / "large.npy", 1024))   # 192 MiB of images


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_streaming_a_four_times_larger_store_needs_no_more_resident_memory(tmp_path):
    # in a fresh process: the test session's earlier allocations would move the baseline
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as fresh:
        small, large = fresh.submit(growth_of_a_small_and_a_large_store, tmp_path).result()
    assert large < 64 * 2 ** 20                # a few batches in flight, not the 192 MiB read
    assert large < small + 32 * 2 ** 20        # flat: does not grow with the store


@needs_albumentations
def test_albumentations_on_several_loader_threads_repeats_one_thread(tmp_path):
    images, _ = store(tmp_path / "x.npy", 24, side=16)
    transform = PhotoTransform(Member(crop_scale=0.3, rotate=20, jitter=0.3), 12)
    batches, seeds = index_batches(list(range(24)), 4), [5, 6, 7, 8, 9, 10]
    outputs = [torch.cat(list(StreamedImages(images, CPU, workers).batches(batches, transform, seeds)))
               for workers in (1, 3)]
    assert outputs[0].shape == (24, 3, 12, 12) and torch.equal(outputs[0], outputs[1])
