"""Files written whole or not at all, and things made by one process at a time.

A write goes to a temporary file beside its target, is flushed to the disk (fsync), then renamed
over the target, and the folder is synced so that the rename itself survives a power cut:
readers see the old content or the new, never a truncated or empty file.

What two commands may both want to make (the embedded digits competition, a decoded-image
cache, a run folder being trained) is guarded by an advisory lock file (`fcntl.flock`): one
process makes it while the other waits for it (`made_once`) or is refused (`held_by_this_process`).
The kernel drops a lock when its process dies, so a killed command never leaves a stale one.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

_held: dict[str, int] = {}  # lock files this process holds until it ends: path -> descriptor


def write_atomically(path: Path, write, check=None) -> None:
    """Call write(file) on a temporary file beside `path`, then rename it over `path`:
    readers see the old content or the new, never a truncated file. `check(partial_path)` may
    raise to keep the new content from landing at all."""
    partial = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(partial, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())  # the data on disk before the name points at it
        if check is not None:
            check(partial)
        os.replace(partial, path)
        sync_folder(path.parent)
    finally:
        partial.unlink(missing_ok=True)


def sync_folder(folder: Path) -> None:
    """Make a rename or a new entry in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename is still atomic
    finally:
        os.close(fd)


def _lock_file(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


@contextmanager
def made_once(lock_path: Path):
    """Hold the lock `lock_path` within the with-block, waiting while another process holds it.
    The block checks whether the thing exists (another process may have just made it) and makes
    it otherwise."""
    try:
        fd = _lock_file(lock_path)
    except OSError:  # a read-only folder: nothing can be made there, and making it will say so
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def held_by_this_process(lock_path: Path) -> bool:
    """Take the lock `lock_path` for the rest of this process (a second call in the same process
    is a no-op); False when another process holds it. The holder's pid is written in the file."""
    key = str(Path(lock_path).resolve())
    if key in _held:
        return True
    fd = _lock_file(lock_path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[key] = fd
    return True


def release_all() -> None:
    """Give up every lock taken by held_by_this_process (at the end of the command that took it)."""
    while _held:
        os.close(_held.popitem()[1])


def holder(lock_path: Path) -> str:
    """The pid written in a lock file, for messages ('?' when unknown)."""
    try:
        return Path(lock_path).read_text().strip() or "?"
    except OSError:
        return "?"
