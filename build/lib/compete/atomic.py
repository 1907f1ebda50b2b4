"""Writing files so that a run killed mid-write never leaves half of one behind."""
from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, write, check=None) -> None:
    """Call write(file) on a temporary file beside `path`, then rename it over `path`:
    readers see the old content or the new, never a truncated file. `check(partial_path)` may
    raise to keep the new content from landing at all."""
    partial = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(partial, "wb") as file:
            write(file)
        if check is not None:
            check(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
