"""The two user-facing jobs: train every member (hold-out or k-fold) into a run folder, and
predict from a run folder into a validated submission file."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .atomic import write_atomically
from .augment import TTA, check_tta
from .check import split_notes
from .config import Competition, PipelineError, RunConfig, submissions_dir, target_settings
from .data import Dataset, channel_stats, load_test, load_train, stratified_subset, validation_splits
from .ensemble import blend, fit_blend
from .files import DataDir
from .history import provenance, write_manifest
from .metrics import check_metric, decided_score, score
from .models import build_model
from .report import analyse_run
from .runs import find_run, load_checkpoint, new_run_dir, read_json, save_checkpoint, write_json
from .submission import build_submission, submission_format, validate_submission, write_submission
from .targets import Target, fit_target, target_of_run
from .train import choose_device, fit, predict_logits


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, H, W, C) uint8 array -> (N, C, H, W) uint8 tensor on `device`; uint8 moves 4x less."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)


def configure_threads(run: RunConfig) -> None:
    if run.threads:
        torch.set_num_threads(run.threads)


def input_shape(comp: Competition, dataset: Dataset) -> dict:
    """What every member is built for: channels, size, outputs (the target kind's: classes, tags
    or one) and the training images' statistics."""
    mean, std = channel_stats(dataset.train_images)
    return {"channels": comp.channels, "image_size": comp.image_size,
            "num_classes": dataset.target.outputs, "mean": mean, "std": std}


def member_model(comp: Competition, member, shape: dict, device: torch.device, seed: int):
    """A freshly initialised member network (seeded), on `device` in channels_last layout."""
    torch.manual_seed(seed)
    model = build_model(member, comp.channels, shape["num_classes"], comp.image_size,
                        shape["mean"], shape["std"])
    return model.to(device, memory_format=torch.channels_last)


def training_dataset(comp: Competition, run: RunConfig, data_dir: Path, skip_bad: bool = False) -> Dataset:
    """The training images a run uses: the competition's, or the run's stratified subset of them."""
    return stratified_subset(load_train(comp, DataDir(data_dir), skip_bad), run.subset, run.seed)


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
    splits = validation_splits(dataset.strata, run)
    shape = input_shape(comp, dataset)
    run_dir = _open_run_dir(comp, run, data_dir, shape, target, resume_dir)
    if distributed.is_main():
        print(f"{comp.name}: {len(targets)} training images ({dataset.skipped} unreadable skipped), "
              f"{target.kind} target, {target.outputs} output(s), device {device}, run {run_dir.name}")
        for note in split_notes(target, targets, run):
            print(f"note: {note}")
    images = to_tensor(dataset.train_images, device)
    labels = torch.from_numpy(targets).to(device)
    covered = np.unique(np.concatenate([val for _, val in splits]))
    oof_all, rows = [], []
    for m, member in enumerate(run.members):
        member_started = time.perf_counter()
        oof = np.zeros((len(targets), shape["num_classes"]), dtype=np.float32)
        for f, (train_idx, val_idx) in enumerate(splits):
            val_probs = _train_fold(comp, run, member, m, f, len(splits), shape, target,
                                    images, labels, train_idx, val_idx, device, run_dir)
            if val_probs is not None:
                oof[val_idx] = val_probs
        if distributed.is_main():
            np.save(run_dir / f"oof_m{m}.npy", oof)
        oof_all.append(oof[covered])
        rows.append({"member": m, "model": member.model,
                     "score": decided_score(comp.metric, target, targets[covered], oof[covered])[0]
                     if len(covered) else None,
                     "seconds": round(time.perf_counter() - member_started, 1)})
    summary = _summarize(comp, target, oof_all, targets[covered], rows, len(splits), dataset.skipped, started)
    if distributed.is_main():
        write_json(run_dir / "summary.json", summary)  # written last: marks the run as finished
        print_summary(summary)
        analyse_run(run_dir, dataset.train_images, targets)  # plots and analysis.json for the report
        print(f"Run saved in {run_dir}")
    distributed.teardown()
    return run_dir


def _open_run_dir(comp, run, data_dir, shape, target: Target, resume_dir: Path | None) -> Path:
    """A new run folder with its config.json, or the interrupted one being resumed."""
    if resume_dir is not None:
        if read_json(resume_dir / "config.json")["classes"] != target.classes:
            raise PipelineError(f"The training labels changed since run {resume_dir.name} started: "
                                f"start a new run instead of --resume.")
        return resume_dir
    if not distributed.is_main():
        return distributed.share(None)
    run_dir = new_run_dir(comp.name, run.preset)
    write_json(run_dir / "config.json", {"competition": asdict(comp), "run": asdict(run),
                                         "data": str(data_dir), "shape": shape, "classes": target.classes,
                                         "target": target.to_dict(),
                                         "provenance": provenance(comp, data_dir)})
    return distributed.share(run_dir)


def _summarize(comp, target: Target, oof_all, targets, rows, folds, skipped, started) -> dict:
    """Members' scores, the calibrated ensemble's weights, the decisions fitted on its
    out-of-fold outputs (thresholds, cut-points) and its score under them, timing."""
    decisions, undecided = target.default_decisions(), None
    if len(targets):
        temperatures, weights = fit_blend(oof_all, targets, target, comp.metric)
        blended = blend(oof_all, temperatures, weights, target)
        ensemble_score, decisions = decided_score(comp.metric, target, targets, blended)
        undecided = score(comp.metric, target, targets, blended)
    else:  # no validation data: equal weights, no scores
        temperatures, weights, ensemble_score = [1.0] * len(oof_all), np.full(len(oof_all), 1 / len(oof_all)), None
    return {"metric": comp.metric, "target": target.kind, "members": rows,
            "weights": np.asarray(weights).tolist(), "temperatures": temperatures,
            "decisions": decisions, "ensemble_score": ensemble_score,
            "score_default_decisions": undecided, "folds": folds,
            "validated": int(len(targets)), "skipped_images": skipped,
            "seconds": round(time.perf_counter() - started, 1)}


def _train_fold(comp, run, member, m, f, folds, shape, target: Target, images, labels, train_idx, val_idx,
                device, run_dir: Path):
    """Fit member m on fold f unless a finished checkpoint exists; returns validation probs."""
    final = run_dir / "members" / f"m{m}_f{f}.pt"
    if final.is_file():  # finished before an interruption
        return torch.load(final, map_location="cpu", weights_only=False).get("val_probs")
    model = member_model(comp, member, shape, device, run.seed + 1000 * m + f)
    if run.compile:
        model.compile()
    resume = final.with_name(f"resume_{final.name}")  # state after the last complete epoch
    result = fit(model, member, comp, images, labels, train_idx, val_idx, device, run.precision,
                 run.seed + f, run_dir / "log.jsonl", label=f"m{m}:{member.model} fold {f + 1}/{folds}",
                 resume_path=resume, target=target)
    val_probs = result.val_probs
    if len(val_idx) and member.tta != ["identity"]:  # score what the submission will get
        model.load_state_dict(result.state_dict)
        val_probs = tta_probs(model, images[torch.as_tensor(val_idx, device=images.device)], member.tta,
                              device, run.precision, target)
    if distributed.is_main():
        save_checkpoint(final, result.state_dict, member, shape,
                        {"epoch": result.best_epoch, "score": result.best_score, "classes": target.classes,
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
    if summary["decisions"] and summary["score_default_decisions"] is not None:  # fitted out of fold
        print(f"{'  at 0.5 / rounding':<24}{summary['score_default_decisions']:>12.4f}  "
              f"fitted: {summary['decisions']}")


def tta_probs(model, images: torch.Tensor, tta: list[str], device: torch.device, precision: str,
              target: Target | None = None) -> np.ndarray:
    """Outputs (probabilities; numbers for regression) averaged over a member's test-time views:
    validation and test alike. `target` None: a single_label run."""
    activate = (target or Target([])).activate
    views = [activate(predict_logits(model, images, device, precision, TTA[name])) for name in tta]
    return torch.stack(views).mean(0).numpy()


def member_probs(run_dir: Path, images: torch.Tensor, device: torch.device, precision: str,
                 target: Target | None = None):
    """Per member: test outputs averaged over its folds and its TTA transforms."""
    probs = {}
    for path in sorted((run_dir / "members").glob("m*_f[0-9]*.pt")):
        model, member, _ = load_checkpoint(path, device)
        index = int(path.stem.split("_")[0][1:])
        probs.setdefault(index, []).append(tta_probs(model, images, member.tta, device, precision, target))
    return [np.mean(probs[m], axis=0) for m in sorted(probs)]


def predict_competition(comp: Competition, data_dir: Path, run_id: str | None = None,
                        device_name: str = "auto") -> Path:
    run_dir = find_run(comp.name, run_id)
    config, summary = read_json(run_dir / "config.json"), read_json(run_dir / "summary.json")
    target = target_of_run(config)
    tables, test_images = load_test(comp, DataDir(data_dir))
    classes = fit_target(target_settings(comp), tables.train_labels).classes
    if classes != config["classes"]:
        missing = sorted(set(config["classes"]) ^ set(classes))
        raise PipelineError(
            f"The training labels changed since run {run_dir.name} (classes differ: {missing[:5]}). "
            f"Train again.")
    device = choose_device(device_name)
    images = to_tensor(test_images, device)
    started = time.perf_counter()
    probs = member_probs(run_dir, images, device, config["run"]["precision"], target)
    seconds = time.perf_counter() - started
    final = blend(probs, summary.get("temperatures", [1.0] * len(probs)), summary["weights"], target)
    write_atomically(run_dir / "test_probs.npy", lambda file: np.save(file, final))
    frame = build_submission(tables.sample, comp.id_column, comp.label_column, target.classes, final,
                             target, comp.metric, summary.get("decisions"))
    validate_submission(frame, tables.sample, comp.id_column, comp.label_column, target.classes,
                        target, comp.metric)
    path = write_submission(frame, submissions_dir() / comp.name)
    write_manifest(path, run_dir, summary)  # which run made this file
    print(f"Wrote {path} ({len(frame)} rows) from run {run_dir.name}; inference "
          f"{len(frame) / seconds:.0f} images/s ({len(probs)} member(s), TTA included)")
    return path
