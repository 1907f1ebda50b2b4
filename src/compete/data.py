"""Images as uint8 arrays: decoding (folder or zip), the decoded-array cache, label encoding,
stratified splits and normalization statistics.

Each PNG is decoded once: the arrays are cached under inputs/.cache/ keyed by the input files'
sizes and times, so later epochs and later runs never touch a PNG again.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import StratifiedKFold, train_test_split
from tqdm import tqdm

from .config import Competition, cache_dir, PipelineError
from .files import DataDir, Tables, load_tables

CACHE_VERSION = 1  # bump when decoding changes, so old caches are not reused


def decode_png(raw: bytes, channels: int, size: int) -> np.ndarray:
    """Any PNG (gray, RGB, RGBA, palette, 16-bit) to a uint8 array of shape (size, size, channels)."""
    image = Image.open(io.BytesIO(raw))
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.uint32)
        peak = 65535 if array.max() > 255 else 255
        image = Image.fromarray((array * 255 // peak).astype(np.uint8), mode="L")
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if channels == 1 else array


def image_path(comp: Competition, folder: str, image_id: str) -> str:
    return f"{folder}/{comp.image_template.format(id=image_id)}"


def _cache_file(comp: Competition, data: DataDir, paths: list[str], ids: list[str], tag: str):
    key = json.dumps([CACHE_VERSION, comp.channels, comp.image_size, ids, data.fingerprint(paths)])
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return cache_dir() / comp.name / f"{tag}-{digest}.npy"


def load_images(comp: Competition, data: DataDir, folder: str, ids: list[str], tag: str,
                skip_bad: bool = False) -> tuple[np.ndarray, list[int]]:
    """Decoded images (N, H, W, C) uint8 in `ids` order, and the indices of unreadable ones.

    Unreadable images raise, unless `skip_bad`: then they come back as zeros and are listed.
    """
    paths = [image_path(comp, folder, image_id) for image_id in ids]
    missing = [(i, p) for i, p in enumerate(paths) if not data.exists(p)]
    if missing and not skip_bad:
        row, path = missing[0]
        raise PipelineError(
            f"Image for id {ids[row]!r} not found: {data.describe(path)} ({len(missing)} missing "
            f"in all). Check image_template and {'train' if tag == 'train' else 'test'}_images "
            f"in competition/{comp.name}.yaml, or pass --skip-bad-images for training data.")
    cache = _cache_file(comp, data, paths, ids, tag)
    if cache.is_file():
        images = np.load(cache)
        bad = json.loads(cache.with_suffix(".bad.json").read_text())
        if not bad or skip_bad:
            return images, bad
    images, bad = _decode_all(comp, data, paths, ids, skip_bad)
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(partial, images)
    cache.with_suffix(".bad.json").write_text(json.dumps(bad))
    os.replace(partial, cache)  # a run killed mid-write leaves no truncated cache behind
    return images, bad


def _decode_all(comp, data, paths, ids, skip_bad):
    shape = (len(paths), comp.image_size, comp.image_size, comp.channels)
    images = np.zeros(shape, dtype=np.uint8)
    bad = []
    for i, path in enumerate(tqdm(paths, desc=f"decode {paths[0].split('/')[0]}", unit="img",
                                  leave=False, mininterval=1.0)):
        try:
            images[i] = decode_png(data.read_bytes(path), comp.channels, comp.image_size)
        except (PipelineError, UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
            if not skip_bad:
                raise PipelineError(
                    f"Cannot read image {data.describe(path)} (id {ids[i]!r}): {error}. "
                    f"Download it again, remove its row, or pass --skip-bad-images.") from None
            bad.append(i)
    return images, bad


@dataclass
class Dataset:
    """Everything training and prediction need, decoded."""
    tables: Tables
    train_images: np.ndarray       # (N, H, W, C) uint8
    train_targets: np.ndarray      # (N,) int64 class indices into tables.classes
    skipped: int = 0               # unreadable training images dropped


def load_train(comp: Competition, data: DataDir, skip_bad: bool = False) -> Dataset:
    tables = load_tables(comp, data)
    images, bad = load_images(comp, data, comp.train_images, tables.train_ids, "train", skip_bad)
    index = {label: i for i, label in enumerate(tables.classes)}
    targets = np.array([index[label] for label in tables.train_labels], dtype=np.int64)
    if bad:
        keep = np.setdiff1d(np.arange(len(targets)), bad)
        images, targets = images[keep], targets[keep]
        tables.train_ids = [tables.train_ids[i] for i in keep]
        tables.train_labels = [tables.train_labels[i] for i in keep]
    return Dataset(tables, images, targets, skipped=len(bad))


def load_test(comp: Competition, data: DataDir) -> tuple[Tables, np.ndarray]:
    tables = load_tables(comp, data)
    images, _ = load_images(comp, data, comp.test_images, tables.test_ids, "test")
    return tables, images


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, on the [0, 1] scale."""
    flat = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return flat.mean(axis=0).tolist(), np.maximum(flat.std(axis=0), 1e-3).tolist()


def _rare(targets: np.ndarray, minimum: int) -> np.ndarray:
    counts = np.bincount(targets)
    return np.isin(targets, np.flatnonzero(counts < minimum))


def holdout_split(targets: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation indices. Classes too small to split stay in training."""
    rare = _rare(targets, 2)
    common = np.flatnonzero(~rare)
    train_idx, val_idx = train_test_split(
        common, test_size=fraction, random_state=seed, stratify=targets[common])
    return np.sort(np.concatenate([train_idx, np.flatnonzero(rare)])), np.sort(val_idx)


def kfold_splits(targets: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold indices. Classes with fewer images than folds train in every fold."""
    rare = _rare(targets, folds)
    common = np.flatnonzero(~rare)
    if len(common) < folds:
        raise PipelineError(f"{folds} folds need at least {folds} images per class; use fewer folds.")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = []
    for train_part, val_part in splitter.split(common, targets[common]):
        train_idx = np.concatenate([common[train_part], np.flatnonzero(rare)])
        splits.append((np.sort(train_idx), np.sort(common[val_part])))
    return splits
