"""Images as uint8 arrays: decoding (folder or zip), the decoded-array cache, label encoding,
image groups, and the training set (TrainingSet) a run uses (splits.py splits it).

Each image is decoded once, in parallel, into an on-disk store under inputs/.cache/
(imagestore.py) keyed by the input files' sizes and times, so later epochs and later runs never
touch an image file again; the store is read by rows, never loaded whole. The cache also records
which images could not be read and why, so a broken image is explained without decoding again.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from sklearn.model_selection import train_test_split

from .atomic import made_once, write_atomically
from .config import Competition, RunConfig, cache_dir, target_settings
from .errors import PipelineError
from .files import EXAMPLES, DataDir, Problems, examples
from .imagestore import ImageFile, decode_into, draft, fit_to_size
from .layout import files_of, image_paths
from .leakage import train_groups
from .guards import MAX_CHANNELS
from .scans import decode_scan
from .tables import Tables, load_tables
from .targets import Target, fit_target

CACHE_VERSION = 3  # bump when decoding or the cache layout changes, so old caches are not reused
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I")  # modes Pillow gives 16-bit gray PNGs
NOT_FOUND = "not found"
SIGNATURES = (b"\x89PNG", b"\xff\xd8", b"GIF8", b"BM", b"II*", b"MM\0*")  # PNG, JPEG, GIF, BMP, TIFF
EXIF_ORIENTATION = 0x0112      # EXIF tag: how the camera was held (1 = upright)
BACKGROUND = (255, 255, 255)  # what transparent pixels show: the white of a page or a web site


def open_image(raw: bytes, draft_to: tuple[str, int] | None = None) -> Image.Image:
    """Decode any image Pillow knows (the content decides, not the file name); raises if broken.
    With `draft_to` (mode, side), a JPEG may decode at a reduced scale (imagestore.draft); the
    file's own format, mode and size stay in image.info["file"]."""
    if not raw:
        raise ValueError("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(raw))
        image.info["file"] = f"{image.format} {image.mode} {image.width}x{image.height}"
        if draft_to is not None:
            draft(image, *draft_to)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "palette images with transparency", once per image
            image.load()
    except UnidentifiedImageError:
        if raw.startswith(SIGNATURES):
            raise ValueError(f"truncated or damaged image ({len(raw)} bytes)") from None
        raise ValueError(f"not an image file (starts with {raw[:8]!r})") from None
    return image


def on_white(image: Image.Image) -> Image.Image:
    """Transparent images (alpha channel, or a palette / colour marked transparent) composited
    on white, as a viewer shows them; dropping alpha would reveal whatever colour hides there."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND + (255,)), rgba)
    return image


def to_array(image: Image.Image, channels: int, size: int, resize: str = "squash") -> np.ndarray:
    """Any mode (gray, RGB, RGBA, palette, 16-bit) to uint8 (size, size, channels), resized by
    the `resize` policy (imagestore.fit_to_size): turned upright as its EXIF orientation says,
    transparency composited on white."""
    if image.getexif().get(EXIF_ORIENTATION, 1) != 1:  # a phone photo taken sideways
        image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT:
        # Pillow's own conversion clips 16-bit values at 255; scale the full range instead
        array = np.asarray(image, dtype=np.float64) / 257
        image = Image.fromarray(np.clip(array.round(), 0, 255).astype(np.uint8), mode="L")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = on_white(image).convert("L" if channels == 1 else "RGB")
    array = np.asarray(fit_to_size(image, size, resize), dtype=np.uint8)
    return array[:, :, None] if channels == 1 else array


@dataclass
class Decoded:
    """One split's images, decoded in id order into their on-disk store."""
    images: ImageFile                  # (N, H, W, C) uint8, read by rows; zeros where unreadable
    bad: dict[int, str] = field(default_factory=dict)        # row -> why it is unreadable
    formats: dict[str, int] = field(default_factory=dict)    # "PNG L 28x28" -> image count


def decode_file(data: DataDir, channels: int, size: int, resize: str, path, window=None):
    """One image -> (uint8 (size, size, channels), its format); None: a missing file. `path` is
    a file, or a tuple of one gray file per channel (channel_files). DICOM scans and multi-band
    TIFFs go to scans.py, `window` with them. Runs in the decoding processes (module level, so
    that it pickles)."""
    if path is None:
        raise FileNotFoundError(NOT_FOUND)
    if isinstance(path, tuple):
        planes = [decode_file(data, 1, size, resize, file, window) for file in path]
        return np.concatenate([plane for plane, _ in planes], -1), f"{len(path)} files: {planes[0][1]}"
    raw = data.read_bytes(path)
    scan = decode_scan(raw, path, channels, size, resize, window)
    if scan is not None:
        return scan
    if channels not in (1, 3):
        raise ValueError(f"a photo gives gray or RGB, not {channels} channels: use a multi-band TIFF "
                         f"or channel_files")
    image = open_image(raw, ("L" if channels == 1 else "RGB", size))
    return to_array(image, channels, size, resize), image.info["file"]


def decoder(comp: Competition, data: DataDir):
    """decode_file for this competition's images: path -> (array, format); pickles."""
    return functools.partial(decode_file, data, comp.channels, comp.image_size, comp.resize,
                             window=comp.window)


def _decode_all(comp: Competition, data: DataDir, paths: list[str], missing: set[int], cache: Path) -> None:
    """Decode every image into the store `cache`. Its meta (unreadable rows, formats) lands
    first, the .npy last: the .npy appearing marks a complete entry."""
    shape = (len(paths), comp.image_size, comp.image_size, comp.channels)
    items = [None if i in missing else path for i, path in enumerate(paths)]
    decode = decoder(comp, data)
    meta = {}

    def fill(file):
        folder = files_of(paths[0])[0].split('/')[0]
        meta["bad"], meta["formats"] = decode_into(file, shape, items, decode, f"decode {folder}")

    def write_meta(_partial):
        write_atomically(cache.with_suffix(".json"), lambda file: file.write(json.dumps(meta).encode()))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(cache, fill, check=write_meta)
    except OSError as error:
        raise PipelineError(f"Cannot write the decoded images to {cache.parent} ({error}): they need "
                            f"{np.prod(shape) / 2 ** 30:.2f} GiB there. Free some space, or make "
                            f"the folder writable.") from None


def _cache_file(comp: Competition, data: DataDir, paths: list[str], ids: list[str], split: str):
    files = [file for path in paths for file in files_of(path)]
    key = [CACHE_VERSION, comp.channels, comp.image_size, comp.resize, ids, data.fingerprint(files)]
    if comp.window is not None:  # appended only when set: stores written before windows stay valid
        key.append(comp.window)
    key = json.dumps(key)
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return cache_dir() / comp.name / f"{split}-{digest}.npy"


def _read_cache(cache) -> Decoded | None:
    try:
        meta = json.loads(cache.with_suffix(".json").read_text())
        images = ImageFile(cache)
    except (OSError, ValueError):  # absent, or left unreadable by a full disk
        return None
    return Decoded(images, {int(i): why for i, why in meta["bad"].items()}, meta["formats"])


def _bad_message(comp: Competition, data: DataDir, paths, ids, rows: list[int], bad: dict,
                 split: str) -> str:
    which, table = ("training", comp.train_csv) if split == "train" else ("test", comp.sample_submission)
    listing = f"the files from {comp.train_images}/" if comp.layout == "folders" else f"their rows from {table}"
    remedy = (f"If they cannot be had, remove {listing} or pass --skip-bad-images."
              if split == "train" else "Every test image is needed for the submission.")
    if bad[rows[0]] == NOT_FOUND:
        absent = next(file for file in files_of(paths[rows[0]]) if not data.exists(file))
        return (f"{len(rows)} {which} image(s) not found (ids {examples([repr(ids[i]) for i in rows])}): "
                f"{data.not_found(absent)} {remedy}")
    listed = [f"{' + '.join(map(data.describe, files_of(paths[i])))} (id {ids[i]!r}): {bad[i]}"
              for i in rows[:EXAMPLES]]
    return (f"{len(rows)} {which} image(s) cannot be read: {examples(listed, len(rows), '; ')}. "
            f"Download them again. {remedy}")


def load_images(comp: Competition, data: DataDir, folder: str, ids: list[str], split: str,
                skip_bad: bool = False, problems: Problems | None = None) -> Decoded:
    """Decoded images (N, H, W, C) uint8 in `ids` order, from the cache when the files are unchanged.

    Missing and unreadable images are problems (missing ones reported before any decoding),
    unless `skip_bad`: then they stay zeros, listed in `bad`.
    """
    problems = problems or Problems()
    if not 1 <= comp.channels <= MAX_CHANNELS or not isinstance(comp.image_size, int) or comp.image_size < 1:
        raise PipelineError(f"competition/{comp.name}.yaml: channels must be 1 (gray), 3 (RGB) or up to "
                            f"{MAX_CHANNELS} bands, and image_size a positive number of pixels; it says "
                            f"{comp.channels} and {comp.image_size!r}.")
    if not ids:
        return Decoded(np.zeros((0, comp.image_size, comp.image_size, comp.channels), np.uint8))
    paths = image_paths(comp, split, folder, ids)
    missing = [i for i, path in enumerate(paths) if not all(map(data.exists, files_of(path)))]
    if missing and not skip_bad:
        problems.report(_bad_message(comp, data, paths, ids, missing, {i: NOT_FOUND for i in missing}, split))
    cache = _cache_file(comp, data, paths, ids, split)
    decoded = _read_cache(cache)
    if decoded is None:
        with made_once(cache.with_suffix(".lock")):  # another command decoding them: wait, then read
            if _read_cache(cache) is None:
                _decode_all(comp, data, paths, set(missing), cache)
        decoded = _read_cache(cache)
    unreadable = [i for i in sorted(decoded.bad) if decoded.bad[i] != NOT_FOUND]
    if unreadable and not skip_bad:
        problems.report(_bad_message(comp, data, paths, ids, unreadable, decoded.bad, split))
    return decoded


@dataclass
class TrainingSet:
    """The labelled images, decoded, with their class indices and the checked tables (not a
    torch Dataset: batches are drawn by index from the store, batches.py)."""
    tables: Tables
    train_images: ImageFile        # (N, H, W, C) uint8, in training order, read by rows
    train_targets: np.ndarray      # encoded by `target`: (N,) class indices, (N, tags) 0/1, (N,) numbers
    skipped: int = 0               # unreadable training images dropped
    groups: np.ndarray | None = None  # (N,) group of each image, kept on one side of every split
    target: Target | None = None   # the target kind, fitted to the training labels

    @property
    def strata(self) -> np.ndarray:
        """One group per image (class, rarest tag, grade) for stratified splits."""
        return self.target.strata(self.train_targets)


def load_train(comp: Competition, data: DataDir, skip_bad: bool = False) -> TrainingSet:
    """The training set, after checking every input; the test images are decoded too (and
    cached for predict), so a broken test image stops us now rather than after training."""
    tables = load_tables(comp, data)
    train = load_images(comp, data, comp.train_images, tables.train_ids, "train", skip_bad)
    load_images(comp, data, comp.test_images, tables.test_ids, "test")
    target = fit_target(target_settings(comp), tables.train_labels)
    targets = target.encode(tables.train_labels)
    images = train.images
    if train.bad:
        skipped = sorted(train.bad)
        print(f"Skipping {len(skipped)} unreadable training image(s) (--skip-bad-images): "
              f"{examples([f'{tables.train_ids[i]!r} ({train.bad[i]})' for i in skipped])}")
        keep = np.setdiff1d(np.arange(len(targets)), skipped)
        images, targets = images.subset(keep), targets[keep]
        tables.keep_train(keep)
    groups = train_groups(comp, data, tables.train_ids, images)
    return TrainingSet(tables, images, targets, skipped=len(train.bad), groups=groups, target=target)


def training_dataset(comp: Competition, run: RunConfig, data_dir: Path, skip_bad: bool = False) -> TrainingSet:
    """The training images a run uses: the competition's, or the run's stratified subset of them."""
    return stratified_subset(load_train(comp, DataDir(data_dir), skip_bad), run.subset, run.seed)


def load_test(comp: Competition, data: DataDir) -> tuple[Tables, ImageFile]:
    tables = load_tables(comp, data)
    return tables, load_images(comp, data, comp.test_images, tables.test_ids, "test").images


def stratified_subset(dataset: TrainingSet, size: int, seed: int) -> TrainingSet:
    """A smaller training set with the same class (stratum) proportions, for quick experiments."""
    if not 0 < size < len(dataset.train_targets):
        return dataset
    keep, _ = train_test_split(np.arange(len(dataset.train_targets)), train_size=size,
                               random_state=seed, stratify=dataset.strata)
    keep = np.sort(keep)
    tables = dataset.tables
    tables.keep_train(keep)
    groups = None if dataset.groups is None else dataset.groups[keep]
    return TrainingSet(tables, dataset.train_images.subset(keep), dataset.train_targets[keep], dataset.skipped,
                       groups, dataset.target)
