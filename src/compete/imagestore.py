"""Decoded images on disk: one uint8 .npy file per split, filled in parallel and read by rows.

Photos are decoded once, straight to the side the members consume (resize policies below), by a
pool of processes that write their rows into the file themselves; nothing holds the whole set in
memory. Readers take rows with `os.preadv`, not through a memory map: pages of a map that were
touched count in the process's resident memory until the kernel evicts them, so random reads
through a map make RSS grow with the data, while the page cache behind `preadv` does not.
"""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .config import CHOICES

RESIZE_POLICIES = CHOICES["resize"]  # see fit_to_size
LETTERBOX_FILL = 0        # pixel value of letterbox bars (black, as the photo sites pad)
CHUNK_IMAGES = 64         # images per decoding task: one file write each, ~10 MB at 224 px
CHUNK_BYTES = 64 << 20    # ... and at most this many decoded bytes (large image_size: fewer images)
POOL_MIN_IMAGES = 512     # fewer images decode in this process: starting a pool costs ~1-2 s
STATS_IMAGES = 2048       # data mean/std are measured on this many evenly spaced images
STATS_CHUNK = 64          # images converted to float32 at once while measuring


def fit_to_size(image: Image.Image, size: int, policy: str) -> Image.Image:
    """A size x size image. squash: stretch the whole image; crop: scale the shorter side to
    `size` and cut the centre square; letterbox: scale the longer side to `size` and pad."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    if policy == "squash":
        return image.resize((size, size), Image.BILINEAR)
    if policy == "crop":
        side = min(width, height)
        box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
        return image.resize((size, size), Image.BILINEAR, box=box)
    if policy == "letterbox":
        scale = size / max(width, height)
        inner = (max(1, round(width * scale)), max(1, round(height * scale)))
        canvas = Image.new(image.mode, (size, size), LETTERBOX_FILL)
        canvas.paste(image.resize(inner, Image.BILINEAR), ((size - inner[0]) // 2, (size - inner[1]) // 2))
        return canvas
    raise ValueError(f"unknown resize policy {policy!r}: use one of {', '.join(RESIZE_POLICIES)}")


def draft(image: Image.Image, mode: str, size: int) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when that still leaves both sides >= `size`:
    the DCT skips the detail a downscale would throw away (3-10x faster on large photos)."""
    if image.format == "JPEG":
        image.draft(mode, (size, size))


def _write_all(fd: int, view: memoryview, offset: int) -> None:
    while len(view):  # pwrite may write less than asked
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def _read_all(fd: int, view: memoryview, offset: int, path: Path) -> None:
    while len(view):
        done = os.preadv(fd, [view], offset)
        if done == 0:
            raise OSError(f"{path} is shorter than its header says: delete it to decode again")
        view, offset = view[done:], offset + done


def stretches(rows: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) positions of the stretches of consecutive rows: each is one read."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    edges = [0, *breaks.tolist(), len(rows)]
    return list(zip(edges[:-1], edges[1:]))


class ImageFile:
    """A (N, H, W, C) uint8 .npy file read by rows: `images[rows]` reads just those rows.

    Quacks like a read-only array where the pipeline reads images (shape, len, int or
    index-array or slice indexing, np.asarray reads them all); `subset(rows)` is a view of some
    rows, in a new order. Safe to read from several threads at once."""

    def __init__(self, path: Path, rows: np.ndarray | None = None):
        self.path = Path(path)
        header = np.load(self.path, mmap_mode="r")  # parses the header; no page is read
        if header.dtype != np.uint8 or header.ndim != 4:
            raise ValueError(f"{self.path} holds {header.dtype} {header.shape}, not uint8 images")
        self.rows = np.arange(header.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
        self.shape, self.offset = (len(self.rows), *header.shape[1:]), header.offset
        self.row_bytes = int(np.prod(self.shape[1:]))
        self.dtype, self.ndim = np.dtype(np.uint8), 4
        self._fd = os.open(self.path, os.O_RDONLY)  # preadv: no shared file position to race on

    def subset(self, positions) -> "ImageFile":
        return ImageFile(self.path, self.rows[np.asarray(positions, dtype=np.int64)])

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.read(np.arange(len(self))), dtype=dtype)

    def __getstate__(self):
        return {**self.__dict__, "_fd": None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._fd = os.open(self.path, os.O_RDONLY)

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        positions = np.arange(len(self))[key]  # numpy's meaning of ints, slices, negatives, masks
        return self.read(positions)[0] if np.ndim(positions) == 0 else self.read(positions)

    def read(self, positions, out: np.ndarray | None = None) -> np.ndarray:
        """Images at `positions` (in that order) into `out` (a fresh array when None)."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if len(positions) and (positions.min() < 0 or positions.max() >= len(self)):
            raise IndexError(f"positions outside 0..{len(self) - 1} of {self.path}")
        rows = self.rows[positions]
        if out is None:
            out = np.empty((len(rows), *self.shape[1:]), dtype=np.uint8)
        if not len(rows):
            return out
        flat = memoryview(out.reshape(len(rows), -1))
        for start, stop in stretches(rows):
            _read_all(self._fd, flat[start:stop].cast("B"), self.offset + int(rows[start]) * self.row_bytes,
                      self.path)
        return out


class JoinedImages:
    """Two image stores read as one, `first`'s rows then `second`'s (the training images, then
    the test images a teacher labelled: teaching.py). Quacks like an ImageFile where batches
    read it (shape, len, indexing, `read`)."""

    def __init__(self, first, second):
        if tuple(first.shape[1:]) != tuple(second.shape[1:]):
            raise ValueError(f"cannot join images of shapes {first.shape[1:]} and {second.shape[1:]}")
        self.parts = (first, second)
        self.shape = (len(first) + len(second), *first.shape[1:])
        self.dtype, self.ndim = np.dtype(np.uint8), 4

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.read(np.arange(len(self))), dtype=dtype)

    def __getitem__(self, key):
        positions = np.arange(len(self))[key]
        return self.read(positions)[0] if np.ndim(positions) == 0 else self.read(positions)

    def read(self, positions, out: np.ndarray | None = None) -> np.ndarray:
        """Images at `positions` (in that order) into `out` (a fresh array when None)."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        out = np.empty((len(positions), *self.shape[1:]), dtype=np.uint8) if out is None else out
        first = len(self.parts[0])
        in_first = positions < first
        for part, chosen, offset in ((self.parts[0], in_first, 0), (self.parts[1], ~in_first, first)):
            if chosen.any():
                out[chosen] = np.asarray(part[positions[chosen] - offset])
        return out


@dataclass(frozen=True)
class RowWriter:
    """Writes rows into a .npy file created by `create`; pickles small, for pool workers."""
    path: Path
    offset: int
    row_bytes: int

    def write(self, start: int, rows: np.ndarray) -> None:
        fd = os.open(self.path, os.O_WRONLY)
        try:
            _write_all(fd, memoryview(np.ascontiguousarray(rows)).cast("B"), self.offset + start * self.row_bytes)
        finally:
            os.close(fd)


def create(file, shape: tuple) -> RowWriter:
    """Make the open binary `file` a .npy of `shape` uint8 zeros (sparse: no zeros are
    written, rows come later) and return its writer."""
    np.lib.format.write_array_header_1_0(
        file, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
               "shape": tuple(shape)})
    offset = file.tell()
    file.truncate(offset + int(np.prod(shape)))
    file.flush()
    return RowWriter(Path(file.name), offset, int(np.prod(shape[1:])))


def fill_rows(decode, writer: RowWriter, shape: tuple, start: int, items: list):
    """Decode `items` into rows start.. of the file. `decode(item)` returns (array, format) or
    raises; the failures come back as {row: why} (their rows stay zeros), with the formats seen."""
    rows = np.zeros((len(items), *shape[1:]), dtype=np.uint8)
    bad, formats = {}, Counter()
    for i, item in enumerate(items):
        try:
            rows[i], kind = decode(item)
            formats[kind] += 1
        except Exception as error:  # noqa: BLE001 - a hostile file can make a decoder raise anything
            cause = error.__cause__ or error  # e.g. a zip's own complaint, not a wrapper's message
            bad[start + i] = str(cause).rstrip(".") or type(cause).__name__
    writer.write(start, rows)
    return bad, formats


_worker_decode = None  # the decoding function of this pool process, set once when it starts


def _start_worker(decode) -> None:
    global _worker_decode
    _worker_decode = decode


def _pool_task(writer: RowWriter, shape: tuple, start: int, items: list):
    return fill_rows(_worker_decode, writer, shape, start, items)


def worker_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def decode_into(file, shape: tuple, items: list, decode, desc: str = "decode",
                workers: int | None = None) -> tuple[dict, dict]:
    """Make the open binary `file` a .npy holding `decode(item)` of every item, written chunk by
    chunk by `workers` processes (all cores by default; this one for small sets). `decode` must
    pickle (a module-level function or a partial of one). Returns ({row: why unreadable},
    {format: count})."""
    writer = create(file, shape)
    workers = worker_count() if workers is None else workers
    chunk = max(1, min(CHUNK_IMAGES, CHUNK_BYTES // max(1, int(np.prod(shape[1:])))))
    starts = range(0, len(items), chunk)
    bad, formats = {}, Counter()
    bar = tqdm(total=len(items), desc=desc, unit="img", leave=False, mininterval=1.0)
    if workers <= 1 or len(items) < POOL_MIN_IMAGES:
        for start in starts:
            _merge(bad, formats, fill_rows(decode, writer, shape, start, items[start:start + chunk]))
            bar.update(min(chunk, len(items) - start))
    else:
        # spawned, not forked: a fork would share the parent's open zip files and torch threads
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_start_worker,
                                 initargs=(decode,)) as pool:
            pending = {pool.submit(_pool_task, writer, shape, s, items[s:s + chunk]): s for s in starts}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    _merge(bad, formats, future.result())
                    bar.update(min(chunk, len(items) - pending.pop(future)))
    bar.close()
    return bad, dict(formats.most_common())


def _merge(bad: dict, formats: Counter, result) -> None:
    bad.update(result[0])
    formats.update(result[1])


def channel_stats(images, rows: np.ndarray | None = None) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the [0, 1] scale of uint8 images (an array or an ImageFile),
    over `rows` (all by default), measured on at most STATS_IMAGES evenly spaced ones, in
    float32 chunks: memory stays one chunk whatever the size of the set."""
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    picked = rows[np.unique(np.linspace(0, len(rows) - 1, min(len(rows), STATS_IMAGES)).round().astype(int))]
    total = np.zeros(images.shape[-1])
    squares = np.zeros(images.shape[-1])
    for chunk in np.array_split(picked, max(1, -(-len(picked) // STATS_CHUNK))):
        pixels = np.asarray(images[chunk], dtype=np.float32).reshape(-1, images.shape[-1]) / 255
        total += pixels.sum(0, dtype=np.float64)
        squares += np.square(pixels).sum(0, dtype=np.float64)
    count = max(len(picked) * int(np.prod(images.shape[1:-1])), 1)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0))
    return mean.tolist(), np.maximum(std, 1e-3).tolist()
