"""What can leak across a split: duplicate and near-duplicate images, found before they inflate a
validation score, and the groups of images (a column, or near-duplicate clusters) that must stay
on one side of every split.

Exact duplicates share the SHA-1 of their decoded pixels: the arrays the models see, read from
the decoded cache, so the same picture saved twice (another PNG compression, other metadata, a
lossless re-save) counts as one, and nothing is read from disk again.
Near duplicates (a re-encoded JPEG, a slightly resized or brightened copy) have perceptual hashes
a few bits apart: pHash-style, the lowest 16 x 16 DCT frequencies of a 32 x 32 gray thumbnail
compared with their median. pHash's usual 8 x 8 (64 bits) is too coarse for small images: on
apparel (Fashion-MNIST) 30% of the test images have a training image within 4 of 64 bits, mostly
other garments; within 16 of 256 bits, 17 do, most of them the same photograph. Flat or
mirror-symmetric images have many frequencies near the median, and less stable hashes.
Hashes are compared by multi-index hashing: cut into max_distance + 1 bands, two hashes at most
max_distance bits apart agree on a whole band, so only images sharing a band value are compared.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.fft
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .config import Competition
from .errors import PipelineError
from .files import DataDir, Problems, examples
from .tables import MISSING_LABELS

THUMBNAIL = 32          # side of the gray thumbnail the DCT is taken of
FREQUENCIES = 16        # lowest DCT frequencies kept per axis: 16 x 16 = 256 hash bits
HASH_PIXELS = 1 << 22   # pixels transformed at once (16 MB of float32; the DCT needs a few times that)
PAIR_CHUNK = 2_000_000  # candidate pairs verified at once (bounds the index memory)
BAND_SEED = 0           # fixed shuffle of the bits before banding: every band mixes frequencies
NEAR_DUPLICATES = "near_duplicates"  # the `groups` setting that clusters near-duplicate images


def image_hashes(images) -> tuple[np.ndarray, np.ndarray]:
    """Exact and perceptual hashes of (N, H, W, C) uint8 images, an array or an on-disk store
    (imagestore.ImageFile) read once, a chunk at a time."""
    chunk = max(1, HASH_PIXELS // int(np.prod(images.shape[1:3])))
    parts = [(exact_hashes(rows), perceptual_hashes(rows))
             for rows in (images[start:start + chunk] for start in range(0, len(images), chunk))]
    if not parts:
        return np.zeros(0, "S20"), perceptual_hashes(images[:0])
    return np.concatenate([d for d, _ in parts]), np.concatenate([w for _, w in parts])


def exact_hashes(images: np.ndarray) -> np.ndarray:
    """SHA-1 of each image's decoded pixels, (N,) 20-byte strings."""
    return np.array([hashlib.sha1(image.tobytes()).digest() for image in images], dtype="S20")


def perceptual_hashes(images: np.ndarray) -> np.ndarray:
    """pHash of each (N, H, W, C) uint8 image: (N, 4) uint64 words holding 256 bits."""
    words = np.zeros((len(images), FREQUENCIES * FREQUENCIES // 64), dtype=np.uint64)
    rows, cols = _resize_matrix(images.shape[1]), _resize_matrix(images.shape[2])
    chunk = max(1, HASH_PIXELS // (images.shape[1] * images.shape[2]))
    for start in range(0, len(images), chunk):
        thumbnails = rows @ _gray(images[start:start + chunk]) @ cols.T
        dct = scipy.fft.dctn(thumbnails, type=2, axes=(1, 2), norm="ortho")
        low = dct[:, :FREQUENCIES, :FREQUENCIES].reshape(len(thumbnails), -1)
        median = np.median(low[:, 1:], axis=1, keepdims=True)  # the mean (DC) term left out
        bits = np.packbits(low > median, axis=1, bitorder="little")
        words[start:start + len(thumbnails)] = bits.view("<u8")
    return words


def _gray(images: np.ndarray) -> np.ndarray:
    """(N, H, W) float32 luma (ITU-R 601 weights, as Pillow's "L"); bands other than RGB: their mean."""
    if images.shape[-1] == 1:
        return images[..., 0].astype(np.float32)
    if images.shape[-1] != 3:
        return images.mean(-1, dtype=np.float32)
    return images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _resize_matrix(size: int) -> np.ndarray:
    """(THUMBNAIL, size) weights of Pillow's bilinear (antialiased) resize along one axis, so the
    whole batch is resized by two matrix products."""
    columns = [np.asarray(Image.fromarray(row[None, :]).resize((THUMBNAIL, 1), Image.BILINEAR))[0]
               for row in np.eye(size, dtype=np.float32)]
    return np.stack(columns, axis=1)


def hamming(hashes: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Bits that differ between the hashes of rows `first` and rows `second`."""
    return np.bitwise_count(hashes[first] ^ hashes[second]).sum(axis=1, dtype=np.int64)


def near_pairs(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of rows (first < second) whose hashes are at most `max_distance` bits apart,
    with that distance; sorted by (first, second)."""
    bits = np.unpackbits(hashes.view(np.uint8), axis=1, bitorder="little")
    order = np.random.default_rng(BAND_SEED).permutation(bits.shape[1])
    found = []
    for band in np.array_split(order, max_distance + 1):
        for first, second in _same_key_pairs(_band_keys(bits[:, band])):
            close = hamming(hashes, first, second) <= max_distance
            found.append(np.minimum(first, second)[close] * len(hashes) + np.maximum(first, second)[close])
    codes = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
    first, second = np.divmod(codes, len(hashes))
    return first, second, hamming(hashes, first, second)


def _band_keys(bits: np.ndarray) -> np.ndarray:
    """One number per row for its bits: equal bits, equal number."""
    packed = np.packbits(bits, axis=1, bitorder="little")
    if packed.shape[1] <= 8:  # 64 bits or fewer: the bytes read as one integer
        return np.ascontiguousarray(np.pad(packed, ((0, 0), (0, 8 - packed.shape[1])))).view("<u8").ravel()
    return np.unique(packed, axis=0, return_inverse=True)[1].ravel()


def _same_key_pairs(key_ids: np.ndarray):
    """All pairs of rows with equal keys, as (first, second) arrays of at most about PAIR_CHUNK."""
    order = np.argsort(key_ids, kind="stable")
    starts = np.flatnonzero(np.r_[True, key_ids[order][1:] != key_ids[order][:-1]])
    lengths = np.diff(np.r_[starts, len(order)])
    starts, lengths = starts[lengths > 1], lengths[lengths > 1]
    counts = lengths * (lengths - 1) // 2
    batch = np.cumsum(counts) // PAIR_CHUNK  # runs of keys cut into batches of about PAIR_CHUNK pairs
    for b in np.unique(batch):
        first, second = _pairs_within(starts[batch == b], lengths[batch == b])
        yield order[first], order[second]


def _pairs_within(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (i, j), i < j, of every pair inside each run [start, start + length)."""
    positions = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    later = np.repeat(starts + lengths, lengths) - positions - 1  # partners after each position
    first = np.repeat(positions, later)
    step = np.arange(len(first)) - np.repeat(np.cumsum(later) - later, later) + 1
    return first, first + step


def clusters(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Connected components of the pairs over n rows: a component id per row."""
    graph = coo_matrix((np.ones(len(first), np.int8), (first, second)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def near_duplicate_groups(images: np.ndarray, max_distance: int) -> np.ndarray:
    """A group id per image: clusters of exact and near-duplicate images (singletons otherwise)."""
    found = find_duplicates(images, images[:0], max_distance)
    return clusters(len(images), np.r_[found.exact.first, found.near.first],
                    np.r_[found.exact.second, found.near.second])


def _copy_pairs(copies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each image paired with the first image of identical pixels, where that is another one."""
    _, first_of = np.unique(copies, return_index=True)
    rows = np.arange(len(copies))
    copy = first_of[copies] != rows
    return first_of[copies][copy], rows[copy]


@dataclass
class Pairs:
    """Duplicate pairs of one kind, as rows of the images searched (first < second)."""
    first: np.ndarray
    second: np.ndarray
    distance: np.ndarray  # differing hash bits; 0 for exact copies


@dataclass
class Duplicates:
    """What a search of train and test found: rows index the training images, then the test ones."""
    exact: Pairs  # identical pixels: each copy paired with the first image showing them
    near: Pairs   # within max_distance bits, pixels not identical


def find_duplicates(train_images, test_images, max_distance: int) -> Duplicates:
    """Exact and near-duplicate pairs within train, within test and across them. Each split is
    an array or an on-disk image store (imagestore.ImageFile): only hashes are joined, so memory
    does not grow with the number of images."""
    (train_digests, train_words), (test_digests, test_words) = image_hashes(train_images), image_hashes(test_images)
    digests, hashes = np.concatenate([train_digests, test_digests]), np.concatenate([train_words, test_words])
    _, copies = np.unique(digests, return_inverse=True)
    exact_first, exact_second = _copy_pairs(copies)
    first, second, distance = near_pairs(hashes, max_distance)
    near = digests[first] != digests[second]
    return Duplicates(Pairs(exact_first, exact_second, np.zeros(len(exact_first), np.int64)),
                      Pairs(first[near], second[near], distance[near]))


def pairs_table(found: Duplicates, images: pd.DataFrame) -> pd.DataFrame:
    """Every pair found, one row each: which kind, how many hash bits apart, and both images
    (`images`: one row per searched image, columns split, id, file, label)."""
    frames = []
    for kind, pairs in (("exact", found.exact), ("near", found.near)):
        first, second = (images.iloc[rows].reset_index(drop=True) for rows in (pairs.first, pairs.second))
        frame = pd.concat([first.add_prefix("first_"), second.add_prefix("second_")], axis=1)
        frames.append(frame.assign(kind=kind, bits=pairs.distance))
    table = pd.concat(frames, ignore_index=True)
    return table[["kind", "bits"] + [c for c in table.columns if c not in ("kind", "bits")]]


def report_duplicates(table: pd.DataFrame, max_distance: int, problems: Problems, fix: str) -> None:
    """Warnings naming the duplicate images of a `pairs_table` within train (labels that disagree
    called out) and across train and test; `fix` says how to keep copies on one side of a split."""
    within = (table.first_split == "train") & (table.second_split == "train")
    across = (table.first_split == "train") & (table.second_split == "test")
    exact, near = table.kind == "exact", f"({max_distance} of 256 perceptual hash bits apart at most)"
    in_train = f"A copy on each side of a split inflates the validation score: {fix}"
    in_test = "A model that remembers them scores higher on the leaderboard than on a hold-out without copies."
    findings = (
        (within & exact, "train: {} training image(s) have the same pixels as another one", in_train),
        (within & ~exact, f"train: {{}} training image(s) are near-duplicates of another one {near}", in_train),
        (across & exact, "test: {} test image(s) have the same pixels as a training image", in_test),
        (across & ~exact, f"test: {{}} test image(s) have a near-duplicate training image {near}", in_test))
    for mask, what, why in findings:
        if mask.any():
            pairs = table[mask]
            conflicts = _conflicts(pairs) if why is in_train else ""
            problems.warn(f"{what.format(pairs.second_id.nunique())}: {_listed(pairs)}.{conflicts} {why}")


def _listed(pairs: pd.DataFrame) -> str:
    named = [f"{row.first_split} {row.first_id!r} ({row.first_file}) = {row.second_split} "
             f"{row.second_id!r} ({row.second_file})" for row in pairs.itertuples()]
    return examples(named, sep="; ")


def _conflicts(pairs: pd.DataFrame) -> str:
    conflicting = pairs[pairs.first_label != pairs.second_label]
    if conflicting.empty:
        return ""
    named = [f"{row.first_id!r} is {row.first_label!r} but {row.second_id!r} is {row.second_label!r}"
             for row in conflicting.itertuples()]
    return f" {len(conflicting)} of them have conflicting labels: {examples(named, sep='; ')}."


def train_groups(comp: Competition, data: DataDir, ids: list[str], images: np.ndarray,
                 problems: Problems | None = None) -> np.ndarray | None:
    """The group of each training image (integer codes), or None when the competition has none:
    its `group_column`, or clusters of near-duplicate images (`groups: near_duplicates`)."""
    if comp.groups not in (None, NEAR_DUPLICATES) or (comp.groups and comp.group_column):
        raise PipelineError(f"competition/{comp.name}.yaml: set either group_column (a column of "
                            f"{comp.train_csv}) or groups: {NEAR_DUPLICATES}, not both; groups "
                            f"says {comp.groups!r}.")
    if comp.groups == NEAR_DUPLICATES:
        return near_duplicate_groups(images, comp.near_duplicate_bits)
    if comp.group_column:
        return _column_groups(comp, data, ids, problems or Problems())
    return None


def _column_groups(comp: Competition, data: DataDir, ids: list[str], problems: Problems) -> np.ndarray | None:
    frame = data.read_csv(comp.train_csv)
    where = data.describe(comp.train_csv)
    if comp.group_column not in frame.columns:
        problems.report(f"{where}: no column {comp.group_column!r} (group_column in competition/"
                        f"{comp.name}.yaml); it has {', '.join(map(repr, frame.columns))}.")
        return None
    group_of = dict(zip(frame[comp.id_column], frame[comp.group_column]))
    names = [group_of.get(image_id, "") for image_id in ids]
    empty = [image_id for image_id, name in zip(ids, names) if name in MISSING_LABELS]
    if empty:
        problems.report(f"{where}: {len(empty)} row(s) have no {comp.group_column!r} (ids "
                        f"{examples(list(map(repr, empty)))}): fill in their groups.")
    names = [name if name not in MISSING_LABELS else f"\0{i}" for i, name in enumerate(names)]
    return np.unique(names, return_inverse=True)[1]  # an empty cell is a group of its own
