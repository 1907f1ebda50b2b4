"""Run folders: where a training run keeps its config, checkpoints, logs and scores, and how
`predict` finds them again. Checkpoints describe themselves, so a run folder alone rebuilds
every model."""
from __future__ import annotations

import json
from dataclasses import asdict
import time
from pathlib import Path

import torch

from .atomic import write_atomically
from .config import Member, submissions_dir, PipelineError
from .models import InputShape, build_model


def runs_dir(competition: str) -> Path:
    return submissions_dir() / competition / "runs"


def new_run_dir(competition: str, preset: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = runs_dir(competition) / f"{stamp}-{preset}"
    suffix = 1
    while path.exists():
        path = runs_dir(competition) / f"{stamp}-{preset}-{suffix}"
        suffix += 1
    (path / "members").mkdir(parents=True)
    return path


def find_run(competition: str, run_id: str | None = None) -> Path:
    """The named run, or the latest finished one (a summary.json marks a finished run)."""
    root = runs_dir(competition)
    if run_id:
        path = root / run_id if not Path(run_id).is_dir() else Path(run_id)
        if not (path / "summary.json").is_file():
            raise PipelineError(f"Run {run_id} not found or not finished in {root}. "
                                f"List runs with ./run.sh runs {competition}.")
        return path
    finished = sorted(p.parent for p in root.glob("*/summary.json")) if root.is_dir() else []
    if not finished:
        raise PipelineError(f"No trained run for '{competition}' in {root}: run "
                            f"./run.sh train {competition} first.")
    return max(finished, key=lambda p: (p / "summary.json").stat().st_mtime)


def find_unfinished(competition: str, run_id: str | None = None) -> Path:
    """The named run, or the latest run without a summary.json, to continue with --resume."""
    root = runs_dir(competition)
    candidates = [root / run_id] if run_id else \
        sorted(p.parent for p in root.glob("*/config.json")) if root.is_dir() else []
    unfinished = [p for p in candidates if (p / "config.json").is_file() and not (p / "summary.json").is_file()]
    if not unfinished:
        raise PipelineError(f"No interrupted run of '{competition}' to resume in {root}"
                            f"{' named ' + run_id if run_id else ''}: start one with "
                            f"./run.sh train {competition}.")
    return max(unfinished, key=lambda p: (p / "config.json").stat().st_mtime)


def write_json(path: Path, value) -> None:
    write_atomically(path, lambda file: file.write(json.dumps(value, indent=2).encode()))


def read_json(path: Path):
    return json.loads(path.read_text())


def save_checkpoint(path: Path, model, member: Member, shape: InputShape, extra: dict) -> None:
    """Weights plus everything needed to rebuild the model without the competition yaml."""
    state = {"member": asdict(member), "shape": asdict(shape), "state_dict": model, **extra}
    write_atomically(path, lambda file: torch.save(state, file))


def load_checkpoint(path: Path, device: torch.device):
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    member = Member(**checkpoint["member"])
    shape = InputShape(**checkpoint["shape"])  # a dict with these keys, in old runs too
    model = build_model(member, shape.channels, shape.num_classes, shape.image_size,
                        shape.mean, shape.std, load_weights=False)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), member, checkpoint
