"""`predict`: a run folder's members, their folds and TTA views, blended into a validated
submission file."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .atomic import write_atomically
from .batches import open_images
from .config import (PREDICTING_MODELS, Competition, PipelineError, run_from_dict, submissions_dir,
                     target_settings)
from .data import load_test
from .ensemble import blend_run
from .files import DataDir
from .history import write_manifest
from .inference import tta_probs
from .runs import RunFolder, find_run, load_checkpoint
from .runtime import choose_device
from .submission import build_submission, validate_submission, write_submission
from .targets import Target, fit_target, target_of_run


def fold_outputs(run_dir: Path, images, device: torch.device, precision: str,
                 target: Target | None = None,
                 checkpoints: list[tuple[int, Path]] | None = None) -> list[list[tuple[int | None, np.ndarray]]]:
    """Per member, a (fold, test outputs averaged over the member's TTA views) pair per model
    (`checkpoints`, (member, path) pairs; default: its fold models; fold None: a model refit on
    all images); `images` a batch source (batches.py) or a uint8 (N, C, H, W) tensor.
    ensemble.blend_run calibrates each before they are averaged."""
    outputs = {}
    folder = RunFolder(run_dir)
    for index, path in folder.checkpoints() if checkpoints is None else checkpoints:
        model, member = load_checkpoint(path, device)
        probs = tta_probs(model, images, member.tta, device, precision, target)
        outputs.setdefault(index, []).append((folder.checkpoint_fold(path), probs))
    return [outputs[m] for m in sorted(outputs)]


def predict_competition(comp: Competition, data_dir: Path, run_id: str | None = None,
                        device_name: str = "auto", models: str | None = None) -> Path:
    run_dir = find_run(comp.name, run_id)
    config, summary = RunFolder(run_dir).config(), RunFolder(run_dir).summary()
    target = target_of_run(config)
    tables, test_images = load_test(comp, DataDir(data_dir))
    classes = fit_target(target_settings(comp), tables.train_labels).classes
    if classes != config["classes"]:
        missing = sorted(set(config["classes"]) ^ set(classes))
        raise PipelineError(
            f"The training labels changed since run {run_dir.name} (classes differ: {missing[:5]}). "
            f"Train again.")
    device = choose_device(device_name)
    run = run_from_dict(config["run"])
    images = open_images(test_images, run, device)
    started = time.perf_counter()
    probs, used = predicting_models(run_dir, run, images, device, target, models)
    seconds = time.perf_counter() - started
    final = blend_run(probs, summary, target)
    write_atomically(run_dir / "test_probs.npy", lambda file: np.save(file, final))
    frame = build_submission(tables.sample, comp.id_column, comp.label_column, target.classes, final,
                             target, comp.metric, summary.get("decisions"))
    validate_submission(frame, tables.sample, comp.id_column, comp.label_column, target.classes,
                        target, comp.metric)
    path = write_submission(frame, submissions_dir() / comp.name)
    write_manifest(path, run_dir, summary, used)  # which run and models made this file
    print(f"Wrote {path} ({len(frame)} rows) from run {run_dir.name} ({PREDICTING_MODELS[used]}); inference "
          f"{len(frame) / seconds:.0f} images/s ({len(probs)} member(s), TTA included)")
    return path


def predicting_models(run_dir: Path, run, images, device: torch.device, target: Target,
                      models: str | None = None):
    """Per member, the (fold, test outputs) pairs of the models that predict, and which they are
    (a name in PREDICTING_MODELS). `models` chooses; by default the refit on every labelled image
    where the run has one (with run.refit_blend, averaged half and half with the fold models'
    average, see ensemble.blend_run), else the fold models."""
    folder = RunFolder(run_dir)
    refits = folder.refits()
    if models is None:
        models = "folds" if not refits else "blend" if run.refit_blend else "refit"
    if models != "folds" and not refits:
        raise PipelineError(f"Run {run_dir.name} has no refit models, so --models {models} has nothing "
                            f"to use. Train with --refit, or predict with --models folds.")
    chosen = {"folds": folder.checkpoints(), "refit": refits,
              "blend": sorted(folder.checkpoints() + refits, key=lambda pair: pair[0])}[models]
    return fold_outputs(run_dir, images, device, run.precision, target, chosen), models
