"""`train`: every member (hold-out or k-fold) fitted into a run folder, then the ensemble's
weights, the summary and the analysis."""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .atomic import write_atomically
from .augment import check_tta, has_photo_augment, photo_on_loader, photo_plan
from .batches import open_images
from .check import split_notes
from .budget import Deadlines, apply_plan, describe, plan_time_limit, process_seconds
from .config import Competition, Member, PipelineError, RunConfig
from .data import training_dataset, validation_splits
from .ensemble import CrossFit, Ensemble, crossfit_parts, cross_fitted, fit_ensemble, member_score
from .history import provenance
from .metrics import check_metric, score
from .models import input_shape, member_model
from .report import analyse_run
from .runs import RunFolder, new_run_dir, read_checkpoint, save_checkpoint, write_json
from .runtime import Runtime, choose_device, configure_threads
from .submission import submission_format
from .targets import Target
from .train import FitLog, Fold, LabelledImages, fit, selects_best


def train_competition(comp: Competition, run: RunConfig, data_dir: Path, skip_bad: bool = False,
                      resume_dir: Path | None = None) -> Path:
    """Train all members into a new run folder, or finish the run in `resume_dir`."""
    started = time.perf_counter()
    configure_threads(run)
    for member in run.members:
        check_tta(member.tta, comp.hflip, comp.vflip)
    dataset = training_dataset(comp, run, data_dir, skip_bad)
    target = dataset.target
    check_metric(comp.metric, target)
    submission_format(dataset.tables.sample, comp.id_column, comp.label_column, target, comp.metric)
    device = distributed.setup(choose_device(run.device, run.deterministic))
    targets = dataset.train_targets
    splits = validation_splits(dataset.strata, run, dataset.groups)
    shapes = [input_shape(comp, dataset, train_idx, run.members) for train_idx, _ in splits]  # statistics per fold
    shape = shapes[0]
    images = training_images(dataset.train_images, run, device)
    labels = torch.from_numpy(targets).to(device)
    data, runtime = LabelledImages(images, labels, target), Runtime(device, run.precision)
    plan = _time_plan(comp, run, splits, shape, data, runtime, resume_dir)
    refit = run.refit and (not plan or plan["folds"] > len(splits))  # the plan counts it as a last fold
    deadlines = Deadlines(plan) if plan and resume_dir is None else None  # a resumed run has no clock to meet
    splits = splits[:plan["folds"]] if plan else splits
    run_dir = _open_run_dir(comp, run, data_dir, shape, target, resume_dir, plan)
    if distributed.is_main():
        print(f"{comp.name}: {len(targets)} training images ({dataset.skipped} unreadable skipped), "
              f"{target.kind} target, {target.outputs} output(s), device {device}, run {run_dir.name}")
        for note in split_notes(target, targets, run):
            print(f"note: {note}")
        if run.refit and not refit:
            print("note: the refit on every image does not fit the time limit: predict uses the fold models")
    folds = validated_by(splits, len(targets))
    covered = np.flatnonzero(folds >= 0)
    parts = crossfit_parts(folds[covered], dataset.strata[covered], run.seed,
                           None if dataset.groups is None else dataset.groups[covered])
    if distributed.is_main():
        np.save(RunFolder(run_dir).oof_folds_path, folds)
    oof_all, rows = [], []
    for m, member in enumerate(run.members):
        member_started = time.perf_counter()
        oof = np.zeros((len(targets), shape.num_classes), dtype=np.float32)
        for f, (train_idx, val_idx) in enumerate(splits):
            fold = Fold(f, train_idx, val_idx, run.seed + f)
            val_probs = _train_fold(comp, run, m, fold, len(splits), shapes[f], data, runtime, RunFolder(run_dir),
                                    deadlines and deadlines.of(m, f))
            if val_probs is not None:
                oof[val_idx] = val_probs
        if distributed.is_main():
            np.save(RunFolder(run_dir).oof_path(m), oof)
        oof_all.append(oof[covered])
        rows.append({"member": m, "model": member.model,
                     "score": member_score(oof[covered], targets[covered], parts, target, comp.metric)
                     if len(covered) else None,
                     "selected": selects_best(member) and bool(len(covered)),  # see print_summary
                     "seconds": round(time.perf_counter() - member_started, 1)})
    if refit:
        _refit(comp, run, input_shape(comp, dataset, None, run.members), data, runtime, RunFolder(run_dir),
               len(splits), rows, deadlines)
    summary, crossed = _summarize(comp, target, oof_all, targets[covered], folds[covered], parts, rows,
                                  len(splits), dataset.skipped, started)
    summary["selected_on_validation"] = any(row["selected"] for row in rows)
    summary["refit"] = refit
    if distributed.is_main():
        if crossed is not None:  # what the report analyses: predictions no fit saw
            write_atomically(RunFolder(run_dir).crossfit_path, lambda file: np.savez(
                file, rows=covered, outputs=crossed.outputs, decided=crossed.decided))
        write_json(RunFolder(run_dir).summary_path, summary)  # written last: marks the run as finished
        print_summary(summary)
        analyse_run(run_dir, dataset.train_images, targets)  # plots and analysis.json for the report
        summary["command_seconds"] = round(process_seconds(), 1)  # start-up and plots included
        write_json(RunFolder(run_dir).summary_path, summary)
        print(f"Run saved in {run_dir}")
    distributed.teardown()
    return run_dir


def _time_plan(comp, run, splits, shape, data: LabelledImages, runtime: Runtime,
               resume_dir: Path | None) -> dict | None:
    """The run's time plan (budget.py): made now by measuring every member, and applied to
    `run`; or the resumed run's own. None without a time limit."""
    if resume_dir is not None:
        return RunFolder(resume_dir).config().get("time_plan")
    if not run.time_limit:
        return None
    plan = distributed.share(plan_time_limit(
        run, comp, splits, data.images, data.labels, runtime.device,
        lambda member: member_model(member, shape, runtime.device, run.seed), data.target))
    if distributed.is_main():
        print(describe(plan, run.members, len(splits)))
    apply_plan(plan, run)
    return asdict(plan)


def training_images(images, run: RunConfig, device: torch.device):
    """The training images as a batch source: streamed when they exceed the run's memory budget,
    or when a member's photo augmentation runs per image on the loader threads."""
    stream = photo_on_loader(run.photo_augment, device) and any(map(has_photo_augment, run.members))
    return open_images(images, run, device, stream)


def _open_run_dir(comp, run, data_dir, shape, target: Target, resume_dir: Path | None,
                  plan: dict | None) -> Path:
    """A new run folder with its config.json, or the interrupted one being resumed."""
    if resume_dir is not None:
        if RunFolder(resume_dir).config()["classes"] != target.classes:
            raise PipelineError(f"The training labels changed since run {resume_dir.name} started: "
                                f"start a new run instead of --resume.")
        return resume_dir
    if not distributed.is_main():
        return distributed.share(None)
    run_dir = new_run_dir(comp.name, run.preset)
    write_json(RunFolder(run_dir).config_path, {"competition": asdict(comp), "run": asdict(run),
                                         "data": str(data_dir), "shape": asdict(shape), "classes": target.classes,
                                         "target": target.to_dict(),
                                         "provenance": provenance(comp, data_dir), "time_plan": plan})
    return distributed.share(run_dir)


def validated_by(splits, count: int) -> np.ndarray:
    """The fold model that validated each image (-1: none)."""
    folds = np.full(count, -1, np.int64)
    for f, (_, val_idx) in enumerate(splits):
        folds[val_idx] = f
    return folds


def _summarize(comp, target: Target, oof_all, targets, folds, parts, rows, count, skipped,
               started) -> tuple[dict, CrossFit | None]:
    """Members' scores, the ensemble fitted on all out-of-fold rows (temperatures per member and
    fold model, weights, decisions such as thresholds or cut-points: what predict uses), and its
    score cross-fitted over `parts` (printed; the in-sample one for reference), timing; and the
    cross-fitted predictions that score is of (None without two parts)."""
    def fit(oof, fit_targets, fit_folds) -> Ensemble:
        return fit_ensemble(oof, fit_targets, fit_folds, count, target, comp.metric)

    ensemble_score = undecided = in_sample = crossed = None
    if len(targets):
        fitted = fit(oof_all, targets, folds)
        crossed = cross_fitted(fit, oof_all, targets, folds, parts, target)
        if crossed is not None:
            ensemble_score = crossed.score(comp.metric, target, targets)
            undecided = score(comp.metric, target, targets, crossed.outputs)
        in_sample = score(comp.metric, target, targets, fitted.outputs(oof_all, folds, target), fitted.decisions)
    else:  # no validation data: equal weights, no scores
        fitted = Ensemble([[1.0] * count for _ in oof_all], np.full(len(oof_all), 1 / len(oof_all)),
                          target.default_decisions())
    return {"metric": comp.metric, "target": target.kind, "members": rows,
            "weights": np.asarray(fitted.weights).tolist(), "temperatures": fitted.temperatures,
            "decisions": fitted.decisions, "ensemble_score": ensemble_score,
            "ensemble_score_in_sample": in_sample, "score_default_decisions": undecided,
            "crossfit_parts": int(len(np.unique(parts))), "folds": count,
            "validated": int(len(targets)), "skipped_images": skipped,
            "seconds": round(time.perf_counter() - started, 1)}, crossed


def _refit(comp, run, shape, data: LabelledImages, runtime: Runtime, folder: RunFolder, folds: int,
           rows: list[dict], deadlines: Deadlines | None = None) -> None:
    """train --refit: every member again on every labelled image (normalised by their
    statistics), seeded apart from its folds; its epochs and seconds go into its summary row."""
    everything = np.arange(len(data.labels))
    fold = Fold(None, everything, everything[:0], run.seed + folds)
    for m, row in enumerate(rows):
        started = time.perf_counter()
        _train_fold(comp, run, m, fold, folds, shape, data, runtime, folder, deadlines and deadlines.of(m, folds))
        row.update(refit_epochs=_member_on(run, m, fold, folder, folds).epochs,
                   refit_seconds=round(time.perf_counter() - started, 1))


def _member_on(run, m: int, fold: Fold, folder: RunFolder, folds: int) -> Member:
    """Member m as it trains on `fold`. The refit (fold index None) runs the same schedule; a
    member that kept its best epoch refits for its folds' mean best epoch, rounded."""
    member = run.members[m]
    if fold.index is not None or not selects_best(member):
        return member
    kept = distributed.share([read_checkpoint(folder.member_path(m, f))["epoch"]
                              for f in range(folds)] if distributed.is_main() else None)  # main writes them
    return replace(member, epochs=max(1, int(np.mean(kept) + 0.5)))


def _train_fold(comp, run, m: int, fold: Fold, folds: int, shape, data: LabelledImages,
                runtime: Runtime, folder: RunFolder, deadline: float | None = None):
    """Fit member m on `fold` (of `folds`; index None: the refit on every image) unless a
    finished checkpoint exists; returns the validation probabilities (None for the refit). A
    time-limited run gives each fit a `deadline` (budget.Deadlines)."""
    final = folder.member_path(m, fold.index)
    if final.is_file():  # finished before an interruption
        return read_checkpoint(final).get("val_probs")
    member = _member_on(run, m, fold, folder, folds)
    model = member_model(member, shape, runtime.device, fold.seed + 1000 * m)
    if run.compile:
        model.compile()
    resume = folder.resume_path(m, fold.index)  # state after the last complete epoch
    photo = photo_plan(member, member.image_size or comp.image_size, run.photo_augment, runtime.device,
                       data.images.streamed)
    name = f"refit on all {len(fold.train_idx)} images" if fold.index is None else f"fold {fold.index + 1}/{folds}"
    log = FitLog(f"m{m}:{member.model} {name}", folder.log_path, resume)
    result = fit(model, member, comp, data, fold, runtime, log, photo, deadline)  # scored with the TTA views
    if distributed.is_main():
        save_checkpoint(final, result.state_dict, member, shape,
                        {"epoch": result.epoch, "score": result.score, "selected": result.selected,
                         "classes": data.target.classes, "fold": fold.index, "val_probs": result.val_probs,
                         "seconds": result.seconds})
        resume.unlink(missing_ok=True)
    return result.val_probs


def print_summary(summary: dict) -> None:
    print(f"{'member':<24}{summary['metric']:>12}{'weight':>9}{'seconds':>10}")
    for row, weight in zip(summary["members"], summary["weights"]):
        value = "-" if row["score"] is None else f"{row['score']:.4f}"
        print(f"{'m%d ' % row['member'] + row['model']:<24}{value:>12}{weight:>9.3f}{row['seconds']:>10}")
    if summary["ensemble_score"] is not None:
        print(f"{'ensemble':<24}{summary['ensemble_score']:>12.4f}  cross-fitted over "
              f"{summary['crossfit_parts']} parts (fitted on all rows: {summary['ensemble_score_in_sample']:.4f})")
    if summary["decisions"] and summary["score_default_decisions"] is not None:  # cross-fitted too
        print(f"{'  at 0.5 / rounding':<24}{summary['score_default_decisions']:>12.4f}  "
              f"fitted: {summary['decisions']}")
    refits = [f"m{row['member']} {row['refit_epochs']} epochs ({row['refit_seconds']} s)"
              for row in summary["members"] if "refit_epochs" in row]
    if refits:
        print(f"refit on every labelled image: {', '.join(refits)}; predict uses them; the scores "
              f"above are the fold models', on their validation data")
    selected = [f"m{row['member']}" for row in summary["members"] if row.get("selected")]
    if selected:
        held = "the hold-out" if summary["folds"] == 1 else "the validation folds"
        print(f"note: {', '.join(selected)} kept the best epoch (select: best or patience), selected on "
              f"{held} that reports the score: optimistic; select: last reports what the leaderboard will see.")

