"""`train`: every member (hold-out or k-fold) fitted into a run folder, then the ensemble's
weights, the summary and the analysis."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .augment import check_tta
from .budget import apply_plan, describe, plan_time_limit, process_seconds
from .config import Competition, PipelineError, RunConfig
from .data import to_tensor, training_dataset, validation_splits
from .ensemble import blend, fit_blend
from .history import provenance
from .inference import tta_probs
from .metrics import score
from .models import input_shape, member_model
from .report import analyse_run
from .runs import RunFolder, new_run_dir, save_checkpoint, write_json
from .runtime import choose_device, configure_threads
from .train import fit


def train_competition(comp: Competition, run: RunConfig, data_dir: Path, skip_bad: bool = False,
                      resume_dir: Path | None = None) -> Path:
    """Train all members into a new run folder, or finish the run in `resume_dir`."""
    started = time.perf_counter()
    configure_threads(run)
    for member in run.members:
        check_tta(member.tta, comp.hflip, comp.vflip)
    dataset = training_dataset(comp, run, data_dir, skip_bad)
    device = distributed.setup(choose_device(run.device, run.deterministic))
    targets = dataset.train_targets
    splits = validation_splits(targets, run, dataset.groups)
    shape = input_shape(comp, dataset, splits[0][0])
    images = to_tensor(dataset.train_images, device)
    labels = torch.from_numpy(targets).to(device)
    plan = _time_plan(comp, run, splits, shape, images, labels, device, resume_dir)
    splits = splits[:plan["folds"]] if plan else splits
    run_dir = _open_run_dir(comp, run, data_dir, shape, dataset.tables.classes, resume_dir, plan)
    if distributed.is_main():
        print(f"{comp.name}: {len(targets)} training images ({dataset.skipped} unreadable skipped), "
              f"{len(dataset.tables.classes)} classes, device {device}, run {run_dir.name}")
    covered = np.unique(np.concatenate([val for _, val in splits]))
    oof_all, rows = [], []
    for m, member in enumerate(run.members):
        member_started = time.perf_counter()
        oof = np.zeros((len(targets), shape.num_classes), dtype=np.float32)
        for f, (train_idx, val_idx) in enumerate(splits):
            val_probs = _train_fold(comp, run, member, m, f, len(splits), shape, dataset.tables.classes,
                                    images, labels, train_idx, val_idx, device, run_dir)
            if val_probs is not None:
                oof[val_idx] = val_probs
        if distributed.is_main():
            np.save(RunFolder(run_dir).oof_path(m), oof)
        oof_all.append(oof[covered])
        rows.append({"member": m, "model": member.model,
                     "score": score(comp.metric, targets[covered], oof[covered]) if len(covered) else None,
                     "seconds": round(time.perf_counter() - member_started, 1)})
    summary = _summarize(comp, oof_all, targets[covered], rows, len(splits), dataset.skipped, started)
    if distributed.is_main():
        write_json(RunFolder(run_dir).summary_path, summary)  # written last: marks the run as finished
        print_summary(summary)
        analyse_run(run_dir, dataset.train_images, targets)  # plots and analysis.json for the report
        summary["command_seconds"] = round(process_seconds(), 1)  # start-up and plots included
        write_json(RunFolder(run_dir).summary_path, summary)
        print(f"Run saved in {run_dir}")
    distributed.teardown()
    return run_dir


def _time_plan(comp, run, splits, shape, images, labels, device, resume_dir: Path | None) -> dict | None:
    """The run's time plan (budget.py): made now by measuring every member, and applied to
    `run`; or the resumed run's own. None without a time limit."""
    if resume_dir is not None:
        return RunFolder(resume_dir).config().get("time_plan")
    if not run.time_limit:
        return None
    plan = distributed.share(plan_time_limit(
        run, comp, splits, images, labels, device, lambda member: member_model(member, shape, device, run.seed)))
    if distributed.is_main():
        print(describe(plan, run.members, len(splits)))
    apply_plan(plan, run)
    return asdict(plan)


def _open_run_dir(comp, run, data_dir, shape, classes, resume_dir: Path | None, plan: dict | None) -> Path:
    """A new run folder with its config.json, or the interrupted one being resumed."""
    if resume_dir is not None:
        if RunFolder(resume_dir).config()["classes"] != classes:
            raise PipelineError(f"The training labels changed since run {resume_dir.name} started: "
                                f"start a new run instead of --resume.")
        return resume_dir
    if not distributed.is_main():
        return distributed.share(None)
    run_dir = new_run_dir(comp.name, run.preset)
    write_json(RunFolder(run_dir).config_path, {"competition": asdict(comp), "run": asdict(run),
                                         "data": str(data_dir), "shape": asdict(shape), "classes": classes,
                                         "provenance": provenance(comp, data_dir), "time_plan": plan})
    return distributed.share(run_dir)


def _summarize(comp, oof_all, targets, rows, folds, skipped, started) -> dict:
    """Members' scores, the calibrated ensemble's weights and score, timing."""
    if len(targets):
        temperatures, weights = fit_blend(oof_all, targets)
        ensemble_score = score(comp.metric, targets, blend(oof_all, temperatures, weights))
    else:  # no validation data: equal weights, no scores
        temperatures, weights, ensemble_score = [1.0] * len(oof_all), np.full(len(oof_all), 1 / len(oof_all)), None
    return {"metric": comp.metric, "members": rows, "weights": np.asarray(weights).tolist(),
            "temperatures": temperatures, "ensemble_score": ensemble_score, "folds": folds,
            "validated": int(len(targets)), "skipped_images": skipped,
            "seconds": round(time.perf_counter() - started, 1)}


def _train_fold(comp, run, member, m, f, folds, shape, classes, images, labels, train_idx, val_idx,
                device, run_dir: Path):
    """Fit member m on fold f unless a finished checkpoint exists; returns validation probs."""
    folder = RunFolder(run_dir)
    final = folder.member_path(m, f)
    if final.is_file():  # finished before an interruption
        return torch.load(final, map_location="cpu", weights_only=False).get("val_probs")
    model = member_model(member, shape, device, run.seed + 1000 * m + f)
    if run.compile:
        model.compile()
    resume = folder.resume_path(m, f)  # state after the last complete epoch
    result = fit(model, member, comp, images, labels, train_idx, val_idx, device, run.precision,
                 run.seed + f, folder.log_path, label=f"m{m}:{member.model} fold {f + 1}/{folds}",
                 resume_path=resume)
    val_probs = result.val_probs
    if len(val_idx) and member.tta != ["identity"]:  # score what the submission will get
        model.load_state_dict(result.state_dict)
        val_probs = tta_probs(model, images[torch.as_tensor(val_idx, device=images.device)], member.tta,
                              device, run.precision)
    if distributed.is_main():
        save_checkpoint(final, result.state_dict, member, shape,
                        {"epoch": result.best_epoch, "score": result.best_score, "classes": classes,
                         "fold": f, "val_probs": val_probs, "seconds": result.seconds})
        resume.unlink(missing_ok=True)
    return val_probs


def print_summary(summary: dict) -> None:
    print(f"{'member':<24}{summary['metric']:>12}{'weight':>9}{'seconds':>10}")
    for row, weight in zip(summary["members"], summary["weights"]):
        value = "-" if row["score"] is None else f"{row['score']:.4f}"
        print(f"{'m%d ' % row['member'] + row['model']:<24}{value:>12}{weight:>9.3f}{row['seconds']:>10}")
    if summary["ensemble_score"] is not None:
        print(f"{'ensemble':<24}{summary['ensemble_score']:>12.4f}")
