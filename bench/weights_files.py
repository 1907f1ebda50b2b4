"""The local pretrained-weights files a competition's presets name (`weights: FILE`), one
absolute path a line: what bench/gpu_prepare.sh packs and bench/gpu.sh unpacks.

    PYTHONPATH=src python3 bench/weights_files.py NAME
"""
from __future__ import annotations

import sys
from pathlib import Path

from compete.config import load_competition, resolve_run


def weights_files(name: str) -> list[Path]:
    """Every local weights file the competition's presets name (absolute paths)."""
    competition = load_competition(name)
    return sorted({Path(member.weights) for preset in competition.presets
                   for member in resolve_run(competition, preset).members if member.weights})


if __name__ == "__main__":
    print(*weights_files(sys.argv[1]), sep="\n")
