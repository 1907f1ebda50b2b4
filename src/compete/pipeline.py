"""`train`: every member (hold-out or k-fold) fitted into a run folder, then the ensemble's
weights, the summary and the analysis."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .atomic import write_atomically
from .augment import check_tta, has_photo_augment, photo_on_loader
from .batches import open_images, with_rows
from .check import split_notes
from .budget import Deadlines, apply_plan, describe, plan_time_limit, process_seconds
from .config import Member, RunConfig
from .data import training_dataset
from .ensemble import CrossFit, Ensemble, add_intervals, crossfit_parts, cross_fitted, fit_ensemble, member_score
from .history import provenance
from .intervals import Bootstrap, format_interval
from .metrics import check_metric, score
from .errors import PipelineError
from .models import NetSpec, member_model, member_seed, net_spec
from .report import analyse_run
from .runs import RUN_FORMAT, RunFolder, new_run_dir, read_checkpoint, save_checkpoint, write_json
from .runtime import Session
from .splits import validated_by, validation_splits
from .submission import submission_format
from .targets import Target
from .teaching import Lesson, start_note, taught_metadata, taught_rows
from .train import FitLog, Fold, LabelledImages, fit, selects_best


@dataclass
class TrainingRun:
    """One `train` command under way: its session, the labelled images, its splits and what
    each fold's models are built for (statistics per fold), the run folder, the time plan's
    deadlines (None without a limit to meet) and a teacher's lesson (teaching.py; None: none)."""
    session: Session
    data: LabelledImages
    splits: list[tuple[np.ndarray, np.ndarray]]
    specs: list[NetSpec]
    folder: RunFolder
    deadlines: Deadlines | None = None
    lesson: Lesson | None = None


@dataclass
class OutOfFold:
    """The members' out-of-fold outputs on the validated rows, and what the ensemble is fitted
    and cross-fitted with: those rows' targets, the fold model that validated each, and the
    cross-fitting parts."""
    rows: np.ndarray                 # the validated training rows
    outputs: list[np.ndarray]
    targets: np.ndarray
    folds: np.ndarray
    parts: np.ndarray
    groups: np.ndarray | None = None  # kept whole by the splits and the intervals' resamples


def train_competition(session: Session, data_dir: Path, skip_bad: bool = False,
                      resume_dir: Path | None = None) -> Path:
    """Train all members into a new run folder, or finish the run in `resume_dir`."""
    started = time.perf_counter()
    comp, run = session.comp, session.run
    dataset = _checked_dataset(session, data_dir, skip_bad)
    splits = validation_splits(dataset.strata, run, dataset.groups)
    metadata = dataset.tables.train_metadata  # each fold's models encode it as their training part says
    specs = [net_spec(comp, dataset.train_images, dataset.target.outputs, train_idx, run.members, metadata)
             for train_idx, _ in splits]  # statistics (and metadata encoders) per fold, of the labelled images
    taught = taught_rows(run, comp, data_dir, dataset, splits)
    splits, device = taught.splits, session.runtime.device
    images = with_rows(training_images(taught.images, run, device), taught_metadata(dataset.tables, taught))
    data = LabelledImages(images, torch.from_numpy(taught.targets).to(device), dataset.target,
                          None if taught.lesson is None else taught.lesson.soft_targets(device))
    plan = _time_plan(session, data, splits, specs[0], resume_dir)
    refit = run.refit and (not plan or plan["folds"] > len(splits))  # the plan counts it as a last fold
    deadlines = Deadlines(plan) if plan and resume_dir is None else None  # a resumed run has no clock to meet
    splits = splits[:plan["folds"]] if plan else splits
    if resume_dir is None and plan is None:  # (a time plan has built them all already)
        build_members(run, specs[0])  # a setting that cannot work stops before the run folder exists
    run_dir = _open_run_dir(session, data_dir, specs[0], dataset.target, resume_dir, plan)
    job = TrainingRun(session, data, splits, specs, RunFolder(run_dir), deadlines, taught.lesson)
    if distributed.is_main():
        _print_start(job, dataset, run.refit and not refit)
        if start_note(taught):
            print(start_note(taught))
    oof, rows = _train_members(job, dataset)
    if refit:
        _refit(job, net_spec(comp, dataset.train_images, dataset.target.outputs, None, run.members, metadata), rows)
    summary, crossed = _summarize(job, oof, rows, dataset.skipped, started)
    summary["refit"] = refit
    if taught.lesson is not None:  # which run taught this one (runs, the report)
        summary["teacher"] = taught.describe()
    if distributed.is_main():
        _finish(job, summary, (oof, crossed), dataset)
    distributed.teardown()
    return run_dir


def _checked_dataset(session: Session, data_dir: Path, skip_bad: bool):
    """The run's training set, once the members' TTA views, the metric and the submission
    format are known to fit the competition."""
    comp, run = session.comp, session.run
    for member in run.members:
        check_tta(member.tta, comp.hflip, comp.vflip)
    dataset = training_dataset(comp, run, data_dir, skip_bad)
    check_metric(comp.metric, dataset.target)
    submission_format(dataset.tables.sample, comp.id_column, comp.label_column, dataset.target, comp.metric)
    return dataset


def _print_start(job: TrainingRun, dataset, refit_left_out: bool) -> None:
    comp, run, target, targets = job.session.comp, job.session.run, dataset.target, dataset.train_targets
    print(f"{comp.name}: {len(targets)} training images ({dataset.skipped} unreadable skipped), "
          f"{target.kind} target, {target.outputs} output(s), device {job.session.runtime.device}, "
          f"run {job.folder.name}")
    for note in split_notes(target, targets, run):
        print(f"note: {note}")
    if refit_left_out:
        print("note: the refit on every image does not fit the time limit: predict uses the fold models")


def _train_members(job: TrainingRun, dataset) -> tuple[OutOfFold, list[dict]]:
    """Every member on every fold: its out-of-fold outputs saved, its cross-fitted score and
    timing in its summary row."""
    comp, run, target, targets = job.session.comp, job.session.run, dataset.target, dataset.train_targets
    folds = validated_by(job.splits, len(targets))
    covered = np.flatnonzero(folds >= 0)
    groups = None if dataset.groups is None else dataset.groups[covered]
    parts = crossfit_parts(folds[covered], dataset.strata[covered], run.seed, groups)
    if distributed.is_main():
        np.save(job.folder.oof_folds_path, folds)
    oof = OutOfFold(covered, [], targets[covered], folds[covered], parts, groups)
    rows = []
    for m, member in enumerate(run.members):
        member_started = time.perf_counter()
        member_oof = np.zeros((len(targets), job.specs[0].num_classes), dtype=np.float32)
        for f, (train_idx, val_idx) in enumerate(job.splits):
            val_probs = _train_fold(job, m, Fold(f, train_idx, val_idx, run.seed + f), job.specs[f])
            if val_probs is not None:
                member_oof[val_idx] = val_probs
        if distributed.is_main():
            np.save(job.folder.oof_path(m), member_oof)
        oof.outputs.append(member_oof[covered])
        rows.append({"member": m, "model": member.model,
                     "score": member_score(member_oof[covered], oof.targets, parts, target, comp.metric)
                     if len(covered) else None,
                     "selected": selects_best(member) and bool(len(covered)),  # see print_summary
                     "seconds": round(time.perf_counter() - member_started, 1)})
    return oof, rows


def _finish(job: TrainingRun, summary: dict, crossfit: tuple[OutOfFold, CrossFit | None], dataset) -> None:
    """The summary written (marking the run finished) and printed, the cross-fitted
    predictions of the validated rows saved (with their truth and groups: what the report
    analyses and compare resamples), the analysis plots drawn."""
    folder, (oof, crossed) = job.folder, crossfit
    if crossed is not None:  # predictions no fit saw
        write_atomically(folder.crossfit_path, lambda file: np.savez(
            file, rows=oof.rows, outputs=crossed.outputs, decided=crossed.decided, targets=oof.targets,
            **({} if oof.groups is None else {"groups": oof.groups})))
    write_json(folder.summary_path, summary)  # written last: marks the run as finished
    print_summary(summary)
    analyse_run(folder.path, dataset.train_images, dataset.train_targets)  # plots and analysis.json for the report
    summary["command_seconds"] = round(process_seconds(), 1)  # start-up and plots included
    write_json(folder.summary_path, summary)
    print(f"Run saved in {folder.path}")


def _time_plan(session: Session, data: LabelledImages, splits, spec: NetSpec,
               resume_dir: Path | None) -> dict | None:
    """The run's time plan (budget.py): made now by measuring every member, and applied to
    the run; or the resumed run's own. None without a time limit."""
    run, device = session.run, session.runtime.device
    if resume_dir is not None:
        return RunFolder(resume_dir).config().get("time_plan")
    if not run.time_limit:
        return None
    plan = distributed.share(plan_time_limit(
        session, data, splits, lambda member: member_model(member, spec, device, run.seed)))
    if distributed.is_main():
        print(describe(plan, run.members, len(splits)))
    apply_plan(plan, run)
    return asdict(plan)


def training_images(images, run: RunConfig, device: torch.device):
    """The training images as a batch source: streamed when they exceed the run's memory budget,
    or when a member's photo augmentation runs per image on the loader threads."""
    stream = photo_on_loader(run.photo_augment, device) and any(map(has_photo_augment, run.members))
    return open_images(images, run, device, stream)


def _open_run_dir(session: Session, data_dir: Path, spec: NetSpec, target: Target, resume_dir: Path | None,
                  plan: dict | None) -> Path:
    """A new run folder with its config.json, or the interrupted one being resumed."""
    comp, run = session.comp, session.run
    if resume_dir is not None:
        if RunFolder(resume_dir).config()["classes"] != target.classes:
            raise PipelineError(f"The training labels changed since run {resume_dir.name} started: "
                                f"start a new run instead of --resume.")
        return resume_dir
    if not distributed.is_main():
        return distributed.share(None)
    run_dir = new_run_dir(comp.name, run.preset)
    write_json(RunFolder(run_dir).config_path, {
        "format": RUN_FORMAT, "competition": asdict(comp), "run": asdict(run), "data": str(data_dir),
        "shape": asdict(spec), "classes": target.classes, "target": target.to_dict(),
        "provenance": provenance(comp, data_dir), "time_plan": plan})
    return distributed.share(run_dir)


def build_members(run: RunConfig, spec: NetSpec) -> None:
    """Build every member once on the CPU, its weights file read: a setting that cannot work
    (an unreadable weights: file, wrong model_args) stops `train` before a run folder exists."""
    for member in run.members:
        member_model(member, spec, torch.device("cpu"), run.seed)


def _summarize(job: TrainingRun, oof: OutOfFold, rows: list[dict], skipped: int,
               started: float) -> tuple[dict, CrossFit | None]:
    """Members' scores, the ensemble fitted on all out-of-fold rows (temperatures per member and
    fold model, weights, decisions such as thresholds or cut-points: what predict uses), and its
    score cross-fitted over the parts (printed; the in-sample one for reference), timing; and
    the cross-fitted predictions that score is of (None without two parts)."""
    metric_name, target, count = job.session.comp.metric, job.data.target, len(job.splits)
    targets = oof.targets

    def fit(outputs, fit_targets, fit_folds) -> Ensemble:
        return fit_ensemble(outputs, fit_targets, fit_folds, count, target, metric_name)

    ensemble_score = undecided = in_sample = crossed = None
    if len(targets):
        fitted = fit(oof.outputs, targets, oof.folds)
        crossed = cross_fitted(fit, oof.outputs, targets, oof.folds, oof.parts, target)
        if crossed is not None:
            ensemble_score = crossed.score(metric_name, target, targets)
            undecided = score(metric_name, target, targets, crossed.outputs)
        in_sample = score(metric_name, target, targets, fitted.outputs(oof.outputs, oof.folds, target),
                          fitted.decisions)
    else:  # no validation data: equal weights, no scores
        fitted = Ensemble([[1.0] * count for _ in oof.outputs], np.full(len(oof.outputs), 1 / len(oof.outputs)),
                          target.default_decisions())
    summary = {"metric": metric_name, "target": target.kind, "members": rows,
               "weights": np.asarray(fitted.weights).tolist(), "temperatures": fitted.temperatures,
               "decisions": fitted.decisions, "ensemble_score": ensemble_score,
               "ensemble_score_in_sample": in_sample, "score_default_decisions": undecided,
               "crossfit_parts": int(len(np.unique(oof.parts))), "folds": count,
               "validated": int(len(targets)), "skipped_images": skipped,
               "seconds": round(time.perf_counter() - started, 1),
               "selected_on_validation": any(row["selected"] for row in rows)}
    add_intervals(summary, oof, crossed, target,
                  Bootstrap(target.strata(targets), oof.groups, job.session.run.seed))  # intervals.py
    return summary, crossed


def _refit(job: TrainingRun, spec: NetSpec, rows: list[dict]) -> None:
    """train --refit: every member again on every labelled image (normalised by their
    statistics), seeded apart from its folds; its epochs and seconds go into its summary row."""
    everything = np.arange(len(job.data.labels))
    fold = Fold(None, everything, everything[:0], job.session.run.seed + len(job.splits))
    for m, row in enumerate(rows):
        started = time.perf_counter()
        _train_fold(job, m, fold, spec)
        row.update(refit_epochs=_member_on(job, m, fold).epochs,
                   refit_seconds=round(time.perf_counter() - started, 1))


def _member_on(job: TrainingRun, m: int, fold: Fold) -> Member:
    """Member m as it trains on `fold`. The refit (fold index None) runs the same schedule; a
    member that kept its best epoch refits for its folds' mean best epoch, rounded."""
    member, folder = job.session.run.members[m], job.folder
    if fold.index is not None or not selects_best(member):
        return member
    kept = distributed.share([read_checkpoint(folder.member_path(m, f))["epoch"]
                              for f in range(len(job.splits))] if distributed.is_main() else None)  # main writes them
    return replace(member, epochs=max(1, int(np.mean(kept) + 0.5)))


def _train_fold(job: TrainingRun, m: int, fold: Fold, spec: NetSpec):
    """Fit member m on `fold` (index None: the refit on every image) unless a finished
    checkpoint exists; returns the validation probabilities (None for the refit). A
    time-limited run gives each fit a deadline (budget.Deadlines)."""
    folds, folder, session = len(job.splits), job.folder, job.session
    if job.deadlines is not None:
        fold = replace(fold, deadline=job.deadlines.of(m, folds if fold.index is None else fold.index))
    final = folder.member_path(m, fold.index)
    if final.is_file():  # finished before an interruption
        return read_checkpoint(final).get("val_probs")
    member = _member_on(job, m, fold)
    model = member_model(member, spec, session.runtime.device, member_seed(fold.seed, m))
    if session.run.compile:
        model.compile()
    resume = folder.resume_path(m, fold.index)  # state after the last complete epoch
    name = f"refit on all {len(fold.train_idx)} images" if fold.index is None else f"fold {fold.index + 1}/{folds}"
    data = job.data if job.lesson is None else job.lesson.for_fold(job.data, fold.index)
    result = fit(model, member, session, data, fold, FitLog(f"m{m}:{member.model} {name}", folder.log_path, resume))
    if distributed.is_main():
        save_checkpoint(final, result.state_dict, member, spec,
                        {"epoch": result.epoch, "score": result.score, "selected": result.selected,
                         "classes": job.data.target.classes, "fold": fold.index, "val_probs": result.val_probs,
                         "seconds": result.seconds})
        resume.unlink(missing_ok=True)
    return result.val_probs


def print_summary(summary: dict) -> None:
    print(f"{'member':<24}{summary['metric']:>12}{'weight':>9}{'seconds':>10}  95% interval")
    for row, weight in zip(summary["members"], summary["weights"]):
        value = "-" if row["score"] is None else f"{row['score']:.4f}"
        print(f"{'m%d ' % row['member'] + row['model']:<24}{value:>12}{weight:>9.3f}{row['seconds']:>10}"
              f"  {format_interval(row.get('score_interval'))}")
    if summary["ensemble_score"] is not None:
        interval = format_interval(summary.get("score_interval"))
        print(f"{'ensemble':<24}{summary['ensemble_score']:>12.4f}  95% {interval} on {summary['validated']} images; "
              f"cross-fitted over "
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

