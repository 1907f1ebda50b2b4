"""What runs inside the offline Kaggle notebook that `package` writes: the installed versions
checked against what the code needs, the packaged run laid out as a workspace under the working
folder, and `predict` on the competition's files, so that the notebook writes the same
submission.csv as `./run.sh predict` for the same run and files.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import sys
import time
from pathlib import Path

from .errors import PipelineError

CHECKED = ("torch", "torchvision", "timm", "numpy", "pandas", "Pillow")  # what a Kaggle image brings


def main(dataset: Path, data_dir: Path, working: Path, name: str, run_id: str,
         time_limit: float | None = None) -> int:
    """Predict with the packaged run `run_id` on the files in `data_dir`, within `time_limit`
    seconds where given; write `working`/submission.csv. Returns the exit status; a
    user-fixable problem is one line."""
    try:
        check_versions()
        path = predict_packaged(Path(dataset), Path(data_dir), Path(working), name, run_id, time_limit)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Wrote {path}")
    return 0


def check_versions(required: list[str] | None = None) -> None:
    """Each of CHECKED that the package requires is installed at its minimum version or later
    (importlib.metadata, before anything imports it): one line names the first that is not."""
    for line in importlib.metadata.requires("compete") if required is None else required:
        match = re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", line)
        if not match or match[1].lower() not in {name.lower() for name in CHECKED}:
            continue
        package, minimum = match[1], match[2]
        try:
            found = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            raise PipelineError(f"{package} is not installed; the code needs {package}>={minimum}: attach "
                                f"a dataset with its wheel and pip install it --no-index.") from None
        if _release(found) < _release(minimum):
            raise PipelineError(f"{package} {found} is too old; the code needs {package}>={minimum}: attach "
                                f"a dataset with a newer wheel and pip install it --no-index.")


def predict_packaged(dataset: Path, data_dir: Path, working: Path, name: str, run_id: str,
                     time_limit: float | None = None) -> Path:
    """The packaged run as a workspace under `working` (COMPETE_ROOT), then predict."""
    root = working / "compete"
    runs = root / "submissions" / name / "runs"
    shutil.rmtree(runs / run_id, ignore_errors=True)
    shutil.copytree(dataset / "run", runs / run_id)
    (root / "competition").mkdir(parents=True, exist_ok=True)
    shutil.copy(dataset / "competition.yaml", root / "competition" / f"{name}.yaml")
    os.environ["COMPETE_ROOT"] = str(root)
    # imported only now: the version check comes first, and these import torch and the rest
    from .config import load_competition
    from .predict import predict_competition
    print(f"compete from {Path(__file__).resolve().parent}; data {data_dir}; run {run_id}", flush=True)
    started = time.perf_counter()
    made = predict_competition(load_competition(name), data_dir, run_id, time_limit=time_limit)
    target = working / "submission.csv"
    shutil.copy(made, target)
    print(f"Predicted in {time.perf_counter() - started:.1f} s", flush=True)
    return target


def _release(version: str) -> tuple[int, ...]:
    """'2.14.1+cu130' -> (2, 14, 1): the release numbers, enough to compare minimums."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])
