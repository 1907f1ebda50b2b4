"""Run folders: the one owner of their layout (config, summary, log, member checkpoints, resume
states, out-of-fold probabilities), of finding runs again, and of checkpoints, which describe
themselves so that a run folder alone rebuilds every model. history.py builds on it: where a
run came from, the table of runs, and the manifest beside a submission.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
import time
from pathlib import Path

import torch

from . import modelfiles
from .atomic import held_by_this_process, holder, write_atomically
from .config import Member, member_from_dict, submissions_dir
from .errors import PipelineError
from .models import NetSpec, build_model

RUN_FORMAT = 3  # what a run folder and its checkpoints hold; raised whenever that changes, so that
                # a run written otherwise is refused (check_format) instead of half-read.
                # 3: checkpoints are safetensors and resume states plain tensors (modelfiles.py);
                # 2 and before held pickles, which are never loaded.

TRAINING_LOCK = ".training.lock"  # held by the process training a run folder (atomic.py)


class RunFolder:
    """Where everything of one run lives. A summary.json marks a finished run."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.name = self.path.name
        self.config_path = self.path / "config.json"    # competition, run settings, shape, classes
        self.summary_path = self.path / "summary.json"  # written last
        self.log_path = self.path / "log.jsonl"         # one line per epoch of every member and fold
        self.members_dir = self.path / "members"
        self.uploads_path = self.path / "uploads.json"  # each upload of its predictions, public score

    def member_path(self, m: int, f: int | None) -> Path:
        """The finished checkpoint of member m on fold f; f None: its refit on every labelled image."""
        name = f"m{m}_full" if f is None else f"m{m}_f{f}"
        return self.members_dir / (name + modelfiles.SUFFIX)

    def resume_path(self, m: int, f: int | None) -> Path:
        """Training state after the last complete epoch of an unfinished member m, fold f (None:
        the refit)."""
        return self.members_dir / (f"resume_m{m}_full.pt" if f is None else f"resume_m{m}_f{f}.pt")

    def oof_path(self, m: int) -> Path:
        """Member m's out-of-fold probabilities (all-zero rows where never validated)."""
        return self.path / f"oof_m{m}.npy"

    @property
    def test_probs_path(self) -> Path:
        """The blended, calibrated test outputs `predict` wrote last (its submission's source; a
        teacher's for `train --pseudo/--distill`)."""
        return self.path / "test_probs.npy"

    @property
    def test_fold_probs_path(self) -> Path:
        """The same test outputs once per fold (ensemble.blend_per_fold), written beside them
        where every weighted member predicted with all its fold models."""
        return self.path / "test_probs_folds.npy"

    @property
    def oof_folds_path(self) -> Path:
        """The fold model that validated each training image (-1: none): whose temperature
        calibrates its out-of-fold row."""
        return self.path / "oof_folds.npy"

    @property
    def crossfit_path(self) -> Path:
        """The ensemble's cross-fitted out-of-fold predictions (ensemble.CrossFit) and the training
        rows they are of: what the reported score scores and the report analyses."""
        return self.path / "oof_crossfit.npz"

    def oof_paths(self) -> list[Path]:
        return sorted(self.path.glob("oof_m*.npy"), key=lambda p: int(p.stem[len("oof_m"):]))

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(member index, path) of every finished fold checkpoint, member by member."""
        return self._members(sorted(self.members_dir.glob(f"m*_f[0-9]*{modelfiles.SUFFIX}")))

    @staticmethod
    def _members(paths: list[Path]) -> list[tuple[int, Path]]:
        """Each checkpoint path m{m}_... with its member index m."""
        return [(int(path.stem.split("_")[0][1:]), path) for path in paths]

    @staticmethod
    def checkpoint_fold(path: Path) -> int | None:
        """The fold of a member checkpoint m{m}_f{f}.safetensors; None for one refit on all
        images (m{m}_full.safetensors)."""
        part = Path(path).stem.split("_")[1]
        return int(part[1:]) if part[1:].isdigit() else None

    def refits(self) -> list[tuple[int, Path]]:
        """(member index, path) of every finished refit on all labelled images (train --refit)."""
        return sorted(self._members(list(self.members_dir.glob(f"m*_full{modelfiles.SUFFIX}"))),
                      key=lambda pair: pair[0])

    @property
    def finished(self) -> bool:
        return self.summary_path.is_file()

    def config(self) -> dict:
        """config.json, once its run format is this version's (check_format)."""
        return check_format(read_json(self.config_path), self.path)

    def summary(self) -> dict | None:
        return read_json(self.summary_path) if self.finished else None

    def epochs_logged(self) -> int:
        return sum(1 for _ in self.log_path.open()) if self.log_path.is_file() else 0


def runs_dir(competition: str) -> Path:
    return submissions_dir() / competition / "runs"


def new_run_dir(competition: str, preset: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = runs_dir(competition) / f"{stamp}-{preset}"
    suffix = 1
    while path.exists():
        path = runs_dir(competition) / f"{stamp}-{preset}-{suffix}"
        suffix += 1
    RunFolder(path).members_dir.mkdir(parents=True)
    claim_run(path)
    return path


def claim_run(run_dir: Path) -> None:
    """Make this process the one that trains `run_dir` until it ends (a second `train --resume`
    of it, or one while it is still being trained, is refused rather than writing it too).
    Under torchrun rank 0 holds it for every rank."""
    if os.environ.get("RANK", "0") != "0":
        return
    lock = run_dir / TRAINING_LOCK
    if not held_by_this_process(lock):
        raise PipelineError(
            f"Run {run_dir.name} is being trained by another process (pid {holder(lock)}), so this one "
            f"leaves it alone. Wait for it to end, or stop it (Ctrl-C) and then continue with "
            f"./run.sh train {run_dir.parent.parent.name} --resume --run {run_dir.name}.")


def run_folders(competition: str) -> list[RunFolder]:
    """Every run folder of the competition that has its config.json, finished or not."""
    root = runs_dir(competition)
    return [RunFolder(p.parent) for p in sorted(root.glob("*/config.json"))] if root.is_dir() else []


def find_run(competition: str, run_id: str | None = None) -> Path:
    """The named run, or the latest finished one (a summary.json marks a finished run)."""
    root = runs_dir(competition)
    if run_id:
        path = root / run_id if not Path(run_id).is_dir() else Path(run_id)
        if not RunFolder(path).finished:
            raise PipelineError(f"Run {run_id} not found or not finished in {root}. "
                                f"List runs with ./run.sh runs {competition}.")
        return path
    finished = [folder.path for folder in run_folders(competition) if folder.finished]
    if not finished:
        raise PipelineError(f"No trained run for '{competition}' in {root}: run "
                            f"./run.sh train {competition} first.")
    return max(finished, key=lambda p: RunFolder(p).summary_path.stat().st_mtime)


def find_unfinished(competition: str, run_id: str | None = None) -> Path:
    """The named run, or the latest run without a summary.json, to continue with --resume."""
    root = runs_dir(competition)
    candidates = [RunFolder(root / run_id)] if run_id else run_folders(competition)
    unfinished = [c.path for c in candidates if c.config_path.is_file() and not c.finished]
    if not unfinished:
        raise PipelineError(f"No interrupted run of '{competition}' to resume in {root}"
                            f"{' named ' + run_id if run_id else ''}: start one with "
                            f"./run.sh train {competition}.")
    return max(unfinished, key=lambda p: RunFolder(p).config_path.stat().st_mtime)


def write_json(path: Path, value) -> None:
    write_atomically(path, lambda file: file.write(json.dumps(value, indent=2).encode()))


def read_json(path: Path):
    return json.loads(path.read_text())


def check_format(saved: dict, run_dir: Path) -> dict:
    """`saved` (a run's config.json, or one of its checkpoints), refused unless this version
    wrote its format: the one place a run's format is checked. The message names the command
    that trains the run again."""
    if saved.get("format") == RUN_FORMAT:
        return saved
    raise PipelineError(f"Run {Path(run_dir).name} was written in an older run format "
                        f"({saved.get('format', 1)}; this version reads {RUN_FORMAT}): train it again with "
                        f"{rebuild_command(Path(run_dir))}.")


def rebuild_command(run_dir: Path) -> str:
    """The `./run.sh train` command that trains the run in `run_dir` again, as far as its
    config.json says (the competition, preset, seed, folds and refit)."""
    try:
        config = read_json(run_dir / "config.json")
        name, run = config["competition"]["name"], config["run"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"./run.sh train {run_dir.parent.parent.name}"
    words = [f"./run.sh train {name} --preset {run.get('preset', 'default')} --seed {run.get('seed', 0)}"]
    words += [f"--folds {run['folds']}"] if run.get("folds", 0) > 1 else []
    words += ["--refit"] if run.get("refit") else []
    return " ".join(words)


def save_checkpoint(path: Path, state_dict: dict, member: Member, shape: NetSpec, extra: dict) -> None:
    """Weights plus everything needed to rebuild the model without the competition yaml."""
    state = {"format": RUN_FORMAT, "member": asdict(member), "shape": asdict(shape), "state_dict": state_dict,
             **extra}
    modelfiles.save_model_file(path, state)  # safetensors: reading it runs no code


def read_checkpoint(path: Path) -> dict:
    """A checkpoint as save_checkpoint was given it (member, shape, state_dict and the extras),
    once its run format is this version's."""
    return check_format(modelfiles.load_model_file(path), Path(path).parent.parent)


def load_checkpoint(path: Path, device: torch.device):
    """The member's model, rebuilt from its checkpoint alone and in eval mode, and its settings."""
    checkpoint = read_checkpoint(path)
    member = member_from_dict(checkpoint["member"], str(path))
    model = build_model(member, NetSpec(**checkpoint["shape"]), load_weights=False)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), member
