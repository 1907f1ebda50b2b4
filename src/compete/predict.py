"""`predict`: a run folder's members, their folds and TTA views, blended into a validated
submission file."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .atomic import write_atomically
from .batches import open_images, with_rows
from .config import PREDICTING_MODELS, Competition, run_from_dict, submissions_dir, target_settings
from .errors import PipelineError
from .data import load_test
from .ensemble import blend_per_fold, blend_run
from .files import DataDir
from .history import write_manifest
from .inference import tta_probs
from .predictplan import (Plan, RESERVE, checkpoints_kept, plan_within, seconds_per_view,
                          summary_of_kept)
from .runs import RunFolder, find_run, load_checkpoint
from .runtime import Runtime, choose_device, process_seconds
from .submission import build_submission, validate_submission, write_submission
from .targets import SINGLE_LABEL, Target, fit_target, target_of_run


def fold_outputs(run_dir: Path, images, runtime: Runtime, target: Target = SINGLE_LABEL,
                 checkpoints: list[tuple[int, Path]] | None = None,
                 views: dict[int, list[str]] | None = None) -> list[list[tuple[int | None, np.ndarray]]]:
    """Per member, a (fold, test outputs averaged over the member's TTA views) pair per model
    (`checkpoints`, (member, path) pairs; default: its fold models; fold None: a model refit on
    all images); `images` a batch source (batches.py) or a uint8 (N, C, H, W) tensor; `views`
    replaces a member's TTA views (predict --time-limit).
    ensemble.blend_run calibrates each before they are averaged."""
    outputs = {}
    folder = RunFolder(run_dir)
    for index, path in folder.checkpoints() if checkpoints is None else checkpoints:
        model, member = load_checkpoint(path, runtime.device)
        tta = member.tta if views is None else views[index]
        probs = tta_probs(model, images, tta, runtime, target)
        outputs.setdefault(index, []).append((folder.checkpoint_fold(path), probs))
    return [outputs[m] for m in sorted(outputs)]


def predict_competition(comp: Competition, data_dir: Path, run_id: str | None = None,
                        device_name: str = "auto", models: str | None = None,
                        time_limit: float | None = None) -> Path:
    """Write the submission of run `run_id` (default: the latest); within `time_limit` seconds
    of the process's start where given (predictplan.py: views, then members, dropped to fit)."""
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
    run = run_from_dict(config["run"])
    runtime = Runtime(choose_device(device_name), run.precision)
    images = with_rows(open_images(test_images, run, runtime.device), tables.test_metadata)
    started = time.perf_counter()
    probs, used, summary = predicting_models(run_dir, run, images, runtime, models,
                                             None if time_limit is None else time_limit - process_seconds())
    seconds = time.perf_counter() - started
    final = blend_run(probs, summary, target)
    write_test_outputs(RunFolder(run_dir), final, blend_per_fold(probs, summary, target))
    frame = build_submission(tables.sample, comp.id_column, comp.label_column, target.classes, final,
                             target, comp.metric, summary.get("decisions"))
    validate_submission(frame, tables.sample, comp.id_column, comp.label_column, target.classes,
                        target, comp.metric)
    path = write_submission(frame, submissions_dir() / comp.name)
    write_manifest(path, run_dir, summary, used)  # which run and models made this file
    print(f"Wrote {path} ({len(frame)} rows) from run {run_dir.name} ({PREDICTING_MODELS[used]}); inference "
          f"{len(frame) / seconds:.0f} images/s ({len(probs)} member(s), TTA included)")
    return path


def write_test_outputs(folder: RunFolder, final: np.ndarray, per_fold: np.ndarray | None) -> None:
    """What a teacher offers (teaching.py): the blended test outputs, and the same per fold where
    every weighted member's fold models predicted; an earlier predict's per-fold file, which no
    longer matches, is removed."""
    folder.test_fold_probs_path.unlink(missing_ok=True)  # first: never beside outputs it did not come with
    write_atomically(folder.test_probs_path, lambda file: np.save(file, final))
    if per_fold is not None:
        write_atomically(folder.test_fold_probs_path, lambda file: np.save(file, per_fold))


def predicting_models(run_dir: Path, run, images, runtime: Runtime, models: str | None = None,
                      seconds: float | None = None):
    """Per member, the (fold, test outputs) pairs of the models that predict, which they are
    (a name in PREDICTING_MODELS), and the summary to blend them with. `models` chooses; by
    default the refit on every labelled image where the run has one (with run.refit_blend,
    averaged half and half with the fold models' average, see ensemble.blend_run), else the
    fold models. With `seconds` left, views and members are dropped to end in time."""
    folder = RunFolder(run_dir)
    target, summary = target_of_run(folder.config()), folder.summary()
    chosen, models = chosen_checkpoints(run_dir, run, models)
    if seconds is None:
        return fold_outputs(run_dir, images, runtime, target, chosen), models, summary
    plan = _plan(chosen, images, runtime, seconds, summary)
    outputs = fold_outputs(run_dir, images, runtime, target, checkpoints_kept(chosen, plan), plan.views)
    return _with_placeholders(outputs, plan), models, summary_of_kept(summary, plan)


def chosen_checkpoints(run_dir: Path, run, models: str | None = None) -> tuple[list[tuple[int, Path]], str]:
    """(member, checkpoint) pairs of the models that predict, and which they are (`models`)."""
    folder = RunFolder(run_dir)
    refits = folder.refits()
    if models is None:
        models = "folds" if not refits else "blend" if run.refit_blend else "refit"
    if models != "folds" and not refits:
        raise PipelineError(f"Run {run_dir.name} has no refit models, so --models {models} has nothing "
                            f"to use. Train with --refit, or predict with --models folds.")
    chosen = {"folds": folder.checkpoints(), "refit": refits,
              "blend": sorted(folder.checkpoints() + refits, key=lambda pair: pair[0])}[models]
    return chosen, models


def _plan(chosen, images, runtime: Runtime, seconds: float, summary: dict) -> Plan:
    """The views and members that end within `seconds` (measuring included), from each model's
    measured rate."""
    started = time.perf_counter()
    loaded = [(m, load_checkpoint(path, runtime.device)) for m, path in chosen]
    per_view = seconds_per_view([(m, model) for m, (model, _) in loaded], images, runtime)
    views = {m: member.tta for m, (_, member) in loaded}
    left = seconds - (time.perf_counter() - started)
    plan = plan_within(left * (1 - RESERVE), per_view, views, summary["weights"])
    print(f"--time-limit: {plan.says()}")
    return plan


def _with_placeholders(outputs: list, plan: Plan) -> list:
    """Kept members' outputs at their member index; a dropped member's weight is zero, so a
    uniform placeholder only keeps the indices aligned."""
    placeholder = [(None, np.full_like(outputs[0][0][1], 1.0 / outputs[0][0][1].shape[1]))]
    kept = dict(zip(plan.members, outputs))
    return [kept.get(m, placeholder) for m in range(max(plan.views) + 1)]
