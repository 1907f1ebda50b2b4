"""What a run did: the error analysis written at the end of training, and the self-contained
HTML report built from the run folder.

`analyse_run` needs the training images (they are in memory at the end of training) and writes
the plots plus analysis.json into the run folder; `write_report` then needs the run folder alone.
A run whose analysis is missing (deleted, or interrupted while plotting) is analysed on demand by
`report_run`.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from .config import competition_from_dict, run_from_dict
from .errors import PipelineError
from .data import training_dataset
from .ensemble import CrossFit, blend_oof
from .intervals import Bootstrap, format_interval, score_intervals
from .metrics import BINARY, MULTI, REGRESSION, SINGLE, f_beta
from .plots import plot_confusion, plot_curves, plot_errors, plot_per_class
from .runs import RunFolder, find_run, read_json, write_json
from .targets import SINGLE_LABEL, Target, target_of_run

ANALYSIS = "analysis.json"
REPORT = "report.html"
PLOTS = {  # file in the run folder -> caption in the report
    "curves.png": "Loss and accuracy per epoch (train solid, validation dashed)",
    "confusion.png": "Confusion matrix of the ensemble's out-of-fold predictions",
    "per_class.png": "Per-class validation accuracy against the number of labelled images",
    "errors.png": "Validation images with the highest loss",
}
ERROR_IMAGES = 16          # images in the highest-loss grid
INTERVAL_NOTE = ("95% interval: the middle 95% of the score over bootstrap resamples of the validated "
                 "images (redrawn with replacement, class by class, groups whole): how far the score moves "
                 "by the luck of which images were validated. Compare two runs on the same images with "
                 "./run.sh compare NAME RUN_A RUN_B.")
REPORT_METRICS = {         # shown beside the competition's own, per target kind
    SINGLE: ["accuracy", "f1_macro", "f2_macro", "log_loss", "top3_accuracy", "top5_accuracy"],
    BINARY: ["accuracy", "f1", "roc_auc", "log_loss"],
    MULTI: ["f2_samples", "f1_samples", "f1_macro", "roc_auc", "log_loss"],
    REGRESSION: ["rmse", "mae", "quadratic_weighted_kappa"],
}


def read_log(run_dir: Path) -> pd.DataFrame:
    """The epoch log; an epoch logged twice (resumed runs) keeps its last record."""
    path = RunFolder(run_dir).log_path
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.is_file() else []
    frame = pd.DataFrame(records)
    return frame.drop_duplicates(["member", "epoch"], keep="last") if len(frame) else frame


def ensemble_oof(run_dir: Path, summary: dict, target: Target = SINGLE_LABEL) -> tuple[np.ndarray, np.ndarray]:
    """The ensemble's out-of-fold outputs for every training image as predict's ensemble (fitted
    on all of them) gives them, and the indices of the validated ones (images never validated
    keep all-zero rows in the oof files)."""
    folder = RunFolder(run_dir)
    members = [np.load(p) for p in folder.oof_paths()]
    rows = np.flatnonzero((members[0] != 0).any(1))
    folds = np.load(folder.oof_folds_path)
    return _normalised(blend_oof(members, folds, summary, target), target), rows


def _normalised(probs: np.ndarray, target: Target) -> np.ndarray:
    if target.kind == SINGLE:  # float32 softmax rows sum to 1 only to ~1e-7; scikit-learn wants better
        sums = probs.sum(1, keepdims=True)  # 0 in rows never validated
        probs = np.divide(probs, sums, out=np.zeros_like(probs), where=sums > 0)
    return probs


def validated_predictions(run_dir: Path, summary: dict, target: Target) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """What the analysis scores: the validated rows' indices, their ensemble outputs and their
    decided labels. Cross-fitted where the run saved them (RunFolder.crossfit_path: each row
    predicted by an ensemble fitted without it, like the reported score); runs with one part: the
    ensemble fitted on all rows, and decided labels None (decide under its decisions)."""
    path = RunFolder(run_dir).crossfit_path
    if path.is_file():
        with np.load(path) as saved:
            return saved["rows"], _normalised(saved["outputs"], target), saved["decided"]
    probs, rows = ensemble_oof(run_dir, summary, target)
    return rows, probs[rows], None


def confusion(targets: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) pairs."""
    return confusion_matrix(targets, predicted, labels=np.arange(num_classes))


def report_metrics(target: Target, metric_name: str) -> list[str]:
    """The competition's metric first, then the kind's others that apply."""
    names = dict.fromkeys([metric_name, *REPORT_METRICS[target.kind]])
    if target.kind == SINGLE:
        names = [n for n in names if not n.startswith("top") or int(n[3:-len("_accuracy")]) < target.outputs]
    if target.kind == REGRESSION and not target.grades:
        names = [n for n in names if n != "quadratic_weighted_kappa"]
    return list(names)


def as_classes(target: Target, truth: np.ndarray, outputs: np.ndarray, predicted: np.ndarray):
    """(true class, predicted class, class probabilities or None, class names) where the
    outputs decide between classes (`predicted`: target.decide's labels): single_label, binary,
    graded regression; else None."""
    if target.kind == SINGLE:
        return truth, predicted, outputs, target.classes
    if target.kind == BINARY:
        return truth, predicted, np.concatenate([1 - outputs, outputs], axis=1), target.classes
    if target.kind == REGRESSION and target.grades:
        low, high = target.grades
        return (np.rint(truth).astype(int) - low, predicted - low, None,
                [str(g) for g in range(low, high + 1)])
    return None


def _class_analysis(run_dir: Path, config: dict, images, counts: np.ndarray, view, rows) -> dict:
    """Confusion matrix, per-class accuracy and the highest-loss images, plotted; `counts` are
    the labelled images per class."""
    val_targets, predicted, class_probs, labels = view
    names = {str(label): name for label, name in config["competition"].get("class_names", {}).items()}
    classes = [f"{label} {names[label]}" if label in names else label for label in labels]
    matrix = confusion(val_targets, predicted, len(classes))
    accuracy = np.diag(matrix) / np.maximum(matrix.sum(1), 1)
    plot_confusion(matrix, classes, run_dir / "confusion.png")
    plot_per_class(counts, np.where(matrix.sum(1) > 0, accuracy, np.nan), classes, run_dir / "per_class.png")
    if class_probs is not None:
        plot_errors(images[rows], val_targets, class_probs, classes, run_dir / "errors.png", ERROR_IMAGES)
    return {"confusion": matrix.tolist(),
            "per_class": [{"class": name, "images": int(counts[i]), "validated": int(matrix[i].sum()),
                           "accuracy": float(accuracy[i]) if matrix[i].sum() else None}
                          for i, name in enumerate(classes)]}


def _tag_analysis(target: Target, all_targets, val_targets, predicted, decisions) -> dict:
    """Per tag: images, validated positives, F1 of the decided tags, and the threshold fitted on
    all rows (the one predict uses)."""
    thresholds = decisions.get("thresholds") or target.default_decisions()["thresholds"]
    return {"per_class": [{"class": tag, "images": int(all_targets[:, i].sum()),
                           "validated": int(val_targets[:, i].sum()), "threshold": thresholds[i],
                           "f1": f_beta(val_targets[:, i:i + 1], predicted[:, i:i + 1], 1.0, "macro")}
                          for i, tag in enumerate(target.classes)]}


def analyse_run(run_dir: Path, images: np.ndarray, targets: np.ndarray) -> dict:
    """Write the plots and analysis.json; images (N, H, W, C) uint8 and targets in training order."""
    config, summary = RunFolder(run_dir).config(), RunFolder(run_dir).summary()
    target = target_of_run(config)
    analysis = {"metrics": {}, "per_class": [], "validated": 0}
    history = read_log(run_dir)
    if len(history):
        plot_curves(history, run_dir / "curves.png")
    rows, outputs, predicted = validated_predictions(run_dir, summary, target)
    trained_on = len(np.load(RunFolder(run_dir).oof_paths()[0], mmap_mode="r"))
    if trained_on != len(targets):
        raise PipelineError(f"Run {run_dir.name} was trained on {trained_on} images; the data in "
                            f"{config['data']} now has {len(targets)}. Train a new run to analyse it.")
    if len(rows):
        val_targets, decisions = targets[rows], summary.get("decisions") or target.default_decisions()
        crossed = predicted is not None
        predicted = predicted if crossed else target.decide(outputs, decisions)
        names = report_metrics(target, summary["metric"])
        analysis = {"validated": int(len(rows)), "per_class": [], "cross_fitted": crossed,
                    "metrics": {name: CrossFit(outputs, predicted).score(name, target, val_targets) for name in names},
                    "intervals": _intervals(run_dir, config, target, val_targets, CrossFit(outputs, predicted), names)}
        view = as_classes(target, val_targets, outputs, predicted)
        if view is not None:
            counts = np.array(list(target.counts(targets).values()))
            analysis.update(_class_analysis(run_dir, config, images, counts, view, rows))
        elif target.kind == MULTI:
            analysis.update(_tag_analysis(target, targets, val_targets, predicted, decisions))
    write_json(run_dir / ANALYSIS, analysis)
    return analysis


def _intervals(run_dir: Path, config: dict, target: Target, targets: np.ndarray, crossed: CrossFit,
               names: list[str]) -> dict:
    """Each reported metric's 95% interval (intervals.py), resampled by class with the groups the
    run saved beside its cross-fitted predictions kept whole."""
    path = RunFolder(run_dir).crossfit_path
    groups = None
    if path.is_file():
        with np.load(path) as saved:
            groups = saved["groups"] if "groups" in saved else None
    resampling = Bootstrap(target.strata(targets), groups, config["run"]["seed"])
    return {name: score_intervals(name, target, targets, [crossed.scored(name, target)], resampling)[0]
            for name in names}


def report_run(competition: str, run_id: str | None = None) -> Path:
    """Write report.html for a finished run (the latest by default), analysing it first if needed."""
    run_dir = find_run(competition, run_id)
    if not (run_dir / ANALYSIS).is_file():
        config, summary = RunFolder(run_dir).config(), RunFolder(run_dir).summary()
        comp, run = competition_from_dict(config["competition"]), run_from_dict(config["run"])
        dataset = training_dataset(comp, run, Path(config["data"]), skip_bad=summary["skipped_images"] > 0)
        analyse_run(run_dir, dataset.train_images, dataset.train_targets)
    return write_report(run_dir)


def _table(frame: pd.DataFrame, style: str = "table") -> str:
    return frame.to_html(index=False, border=0, classes=style, na_rep="-",
                         float_format=lambda value: f"{value:.4f}")


def _image(path: Path, caption: str) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{encoded}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _overview(run_dir: Path, config: dict, summary: dict) -> pd.DataFrame:
    origin = config["provenance"]
    facts = {"competition": config["competition"]["name"], "run": run_dir.name,
             "preset": config["run"]["preset"], "started": origin["started_at"],
             "wall time (s)": summary["seconds"], "folds": summary["folds"],
             "models that predict": _predicting(config, summary), "taught by": _teacher(summary),
             "score": "selected on validation (optimistic)" if summary["selected_on_validation"]
             else "the kept weights', on validation that chose nothing",
             "validated images": summary["validated"], "skipped images": summary["skipped_images"],
             f"ensemble {summary['metric']}": "-" if summary["ensemble_score"] is None
             else f"{summary['ensemble_score']:.4f}, 95% {format_interval(summary['score_interval'])}",
             "member temperatures": ", ".join(_temperatures(t) for t in summary["temperatures"]) or "-",
             "git commit": (origin.get("git_commit") or "-") + (" (uncommitted changes)" if origin.get("git_dirty") else ""),
             "input hash": origin["input_hash"], "data": config["data"]}
    return pd.DataFrame({"": list(facts), " ": [str(v) for v in facts.values()]})


def _teacher(summary: dict) -> str:
    """The run this one learned from (teaching.py), and what it gave; '-': the labels alone."""
    teacher = summary.get("teacher")
    if not teacher:
        return "-"
    train_part = f"{teacher['taught_train_images']} train images' out-of-fold outputs and " \
        if teacher["mode"] == "distill" else ""
    per_fold = ", each fold's from its model of that fold" if teacher.get("per_fold") else ""
    seen = f"; it trained on {teacher['saw_validation_images']} validation images (optimistic score)" \
        if teacher["saw_validation_images"] else ""
    return f"run {teacher['run']} ({teacher['mode']}: {train_part}{teacher['test_images']} test images{per_fold}){seen}"


def _temperatures(member: list[float]) -> str:
    """A member's temperature per fold model."""
    return "/".join(f"{t:.3f}" for t in member)


def _predicting(config: dict, summary: dict) -> str:
    """Which models `predict` uses (predict.predicting_models)."""
    if not summary["refit"]:
        return "the fold models"
    blend = " and the fold models, half and half" if config["run"]["refit_blend"] else ""
    return f"the refit on every labelled image{blend} (the scores are the fold models')"


def _members(config: dict, summary: dict) -> pd.DataFrame:
    rows = []
    for row, weight, member in zip(summary["members"], summary["weights"], config["run"]["members"]):
        rows.append({"member": f"m{row['member']}", "model": member["model"],
                     "epochs": member["epochs"], "batch": member["batch_size"], "lr": f"{member['lr']:.3g}",
                     "optimizer": member["optimizer"], "schedule": member["schedule"],
                     summary["metric"]: row["score"], "95% interval": format_interval(row.get("score_interval")),
                     "weight": weight, "seconds": f"{row['seconds']:.1f}"})
    return pd.DataFrame(rows)


STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
.table{border-collapse:collapse;margin:0.5em 0}.table td,.table th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
.table td:first-child,.table th:first-child,.facts td{text-align:left}
figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:0.9em}"""


def write_report(run_dir: Path) -> Path:
    """One HTML page with every plot embedded, so it can be mailed or archived on its own."""
    config, summary = RunFolder(run_dir).config(), RunFolder(run_dir).summary()
    analysis = read_json(run_dir / ANALYSIS) if (run_dir / ANALYSIS).is_file() else {}
    title = f"{config['competition']['name']} run {run_dir.name}"
    parts = [f"<h1>{html.escape(title)}</h1>", "<h2>Run</h2>", _table(_overview(run_dir, config, summary), "table facts"),
             "<h2>Members and ensemble weights</h2>", _table(_members(config, summary))]
    if analysis.get("metrics"):
        how = ("each image predicted by an ensemble fitted without it" if analysis.get("cross_fitted")
               else "the ensemble fitted on these images: optimistic")
        intervals = analysis.get("intervals", {})
        parts += [f"<h2>Out-of-fold metrics ({analysis['validated']} validated images; {how})</h2>",
                  _table(pd.DataFrame({"metric": list(analysis["metrics"]), "value": list(analysis["metrics"].values()),
                                       "95% interval": [format_interval(intervals.get(name))
                                                        for name in analysis["metrics"]]})),
                  f"<p>{html.escape(INTERVAL_NOTE)}</p>"]
    parts.append("<h2>Plots</h2>")
    parts += [_image(run_dir / name, caption) for name, caption in PLOTS.items() if (run_dir / name).is_file()]
    if analysis.get("per_class"):
        parts += ["<h2>Per class</h2>", _table(pd.DataFrame(analysis["per_class"]))]
    page = (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    path = run_dir / REPORT
    path.write_text(page)
    return path
