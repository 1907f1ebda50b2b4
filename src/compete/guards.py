"""Paths and sizes that come from files and settings, kept inside their folder and under a limit.

Every path a competition's yaml names (a CSV, an image folder, a name template) is relative to
its data folder and stays inside it: absolute paths and '..' are refused when the yaml is loaded.
A symbolic link inside the data folder that points out of it is not followed. A file read whole
into memory (a CSV, an image; on disk or inside a zip, where a member may lie about its size) is
refused beyond MAX_FILE_MB, checked on the size it declares and counted while it is read, so
memory is bounded by what a command keeps, never by what a file claims.
"""
from __future__ import annotations

import numbers
import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

from .errors import PipelineError

MAX_FILE_MB_ENV = "COMPETE_MAX_FILE_MB"  # the environment variable that raises the limit
MAX_FILE_MB = 512      # default: largest file read whole (CSVs of a million rows are ~50 MB)
READ_CHUNK = 1 << 20   # bytes read at a time while counting
PATH_SETTINGS = ("train_csv", "test_csv", "sample_submission", "train_images", "test_images",
                 "image_template", "train_template", "test_template")  # Competition fields
PLACEHOLDER = re.compile(r"\{[^{}]*\}")  # "{id}" in a template
MAX_IMAGE_SIZE = 4096  # image_size: side in pixels images are decoded to (50 MB an RGB image)
SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a Kaggle competition's slug (it names SLUG.zip too)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_CHANNELS = 64      # channels: the most bands an image may have (a 64-band hyperspectral crop)


def escapes(path: str) -> bool:
    """Whether a relative path could leave the folder it is relative to: absolute (POSIX or
    Windows), '..' as a part, or control characters."""
    parts = path.replace("\\", "/").split("/")
    return (PurePosixPath(path).is_absolute() or bool(PureWindowsPath(path).drive)
            or path.startswith("\\") or ".." in parts or bool(CONTROL.search(path)))


def check_settings(values: object, where: str) -> None:
    """Refuse a competition setting naming a file or folder outside the data folder (templates
    are checked with their placeholders filled in), an image_size no image store could hold,
    and a Kaggle slug that is not one (the download is saved as SLUG.zip). `values` is the
    Competition."""
    named = [(key, getattr(values, key, None)) for key in PATH_SETTINGS]
    named += [("channel_files", value) for value in getattr(values, "channel_files", None) or []]
    for key, value in named:
        if isinstance(value, str) and escapes(PLACEHOLDER.sub("x", value)):
            raise PipelineError(
                f"{where}: {key}: {value!r} leaves the competition's data folder. Name a path inside "
                f"it, relative to it and without '..' (e.g. {key}: {PurePosixPath(value).name!r}), "
                f"or pass --data DIR for a competition whose files are elsewhere.")
    size = getattr(values, "image_size", None)
    if isinstance(size, int) and size > MAX_IMAGE_SIZE:
        raise PipelineError(f"{where}: image_size: {size} is over {MAX_IMAGE_SIZE} pixels a side: every image "
                            f"would decode to {size * size * 3 / 2 ** 20:.0f} MB. Use the side the models "
                            f"train at (e.g. image_size: 224).")
    slug = getattr(values, "kaggle", None)
    if isinstance(slug, str) and (not SLUG.fullmatch(slug) or ".." in slug):
        raise PipelineError(f"{where}: kaggle: {slug!r} is not a competition's slug: write the part of its "
                            f"address after kaggle.com/competitions/, e.g. kaggle: titanic.")


def inside(root: Path, path: Path) -> bool:
    """Whether `path`, its links followed, is inside the folder `root` (links followed too)."""
    try:
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))
    except (OSError, ValueError):
        return False


def max_file_bytes() -> int:
    """The largest file read whole: $COMPETE_MAX_FILE_MB, else MAX_FILE_MB (megabytes)."""
    given = os.environ.get(MAX_FILE_MB_ENV, "")
    try:
        return int(float(given) * 2 ** 20) if given else MAX_FILE_MB * 2 ** 20
    except ValueError:
        raise PipelineError(f"{MAX_FILE_MB_ENV}={given!r}: give a number of megabytes, e.g. "
                            f"{MAX_FILE_MB_ENV}=2048.") from None


def too_large(where: str, what: str) -> PipelineError:
    limit = max_file_bytes()
    return PipelineError(
        f"{where} {what}, over the limit of {limit / 2 ** 20:.0f} MB read into memory for one file: "
        f"it is damaged or not what it claims (a zip bomb). Download it again; if it really is "
        f"that large, raise the limit with {MAX_FILE_MB_ENV}=MEGABYTES.")


def check_declared(where: str, size: int) -> None:
    """Refuse a file by the size it declares (a zip member's header, a file's stat)."""
    if size > max_file_bytes():
        raise too_large(where, f"is {size / 2 ** 20:.0f} MB")


def read_limited(stream, where: str) -> bytes:
    """Read a binary stream whole, counting: more than the limit stops reading and raises."""
    limit, chunks, total = max_file_bytes(), [], 0
    while True:
        chunk = stream.read(min(READ_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise too_large(where, "holds more than it declares")


def check_scan_settings(channels, window, channel_files, where: str) -> None:
    """Refuse channels, window and channel_files that cannot describe an image, or disagree."""
    if not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
        raise PipelineError(f"{where}: channels: {channels!r} must be a number of channels from 1 to "
                            f"{MAX_CHANNELS} (1 gray, 3 RGB, 4 for RGBA or four bands).")
    windows = windows_of(window, where)
    if len(windows) > 1 and len(windows) != channels:
        raise PipelineError(f"{where}: window lists {len(windows)} windows, one channel each, but channels "
                            f"is {channels}: set channels: {len(windows)}.")
    if channel_files is None and len(windows) == 1 and channels not in (1, 3):
        raise PipelineError(f"{where}: one window gives a gray scan (channels 1, or 3 repeating it); channels "
                            f"is {channels}: list {channels} windows, or set channels: 1.")
    if channel_files is None:
        return
    if len(windows) > 1:
        raise PipelineError(f"{where}: with channel_files each file is one channel: give one window: "
                            f"[center, width], which every file's scan goes through.")
    if not all(isinstance(p, str) and "{id}" in p for p in channel_files) or len(channel_files) != channels:
        raise PipelineError(f"{where}: channel_files must list {channels} name patterns (channels: {channels}), "
                            f"each with {{id}} where the id goes, e.g. ['{{id}}_red.png', '{{id}}_green.png']; "
                            f"it says {channel_files!r}.")


def windows_of(window, where: str = "window") -> list[tuple[float, float]]:
    """The yaml's `window:` as a list of (center, width): [c, w] is one, [[c, w], ...] several."""
    if window is None:
        return []
    several = isinstance(window, list) and window and all(isinstance(w, list) for w in window)
    windows = window if several else [window]
    for pair in windows:
        if not (isinstance(pair, list) and len(pair) == 2 and all(_number(v) for v in pair) and pair[1] > 0):
            raise PipelineError(f"{where}: window: {window!r}: write [center, width] with a positive width, "
                                f"e.g. window: [40, 400] (a CT soft-tissue window), or a list of them.")
    return [(float(c), float(w)) for c, w in windows]


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
