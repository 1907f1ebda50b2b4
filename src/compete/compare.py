"""`compare`: two finished runs of a competition scored on the images both validated, by a paired
bootstrap (intervals.py): B minus A in the competition's metric with its 95% interval, the share
of resamples in which B beats A, and the classes that moved most. Runs whose splits differ are
refused: their scores are of different images, and no pairing can tell a better recipe from an
easier hold-out.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import competition_from_dict, run_from_dict
from .errors import PipelineError
from .data import training_dataset
from .ensemble import CrossFit
from .intervals import Bootstrap, Paired, format_interval, paired_bootstrap
from .metrics import BINARY, MULTI, REGRESSION, SINGLE
from .report import validated_predictions
from .runs import RunFolder, find_run
from .targets import Target, target_of_run

MOVED = 3  # classes listed as having moved most
SEED = 0   # compare's resamples: the same every time for the same images


@dataclass
class Validated:
    """What a run's reported score is of: the rows it validated (indices into the training
    images), their targets and groups, the fold model that validated every training image (-1:
    none; the split), and its cross-fitted predictions as the metric scores them and as decided."""
    name: str
    config: dict
    metric: str
    target: Target
    rows: np.ndarray
    targets: np.ndarray
    groups: np.ndarray | None
    folds: np.ndarray
    scored: np.ndarray
    decided: np.ndarray

    def bootstrap(self, seed: int) -> Bootstrap:
        return Bootstrap(self.target.strata(self.targets), self.groups, seed)

    def split(self) -> str:
        """The split in the words of `train`'s options."""
        run = self.config["run"]
        how = f"{run['folds']} folds" if run["folds"] > 1 else f"a hold-out of {len(self.rows)} images"
        subset = f", subset {run['subset']}" if run.get("subset") else ""
        return f"{how} of {len(self.folds)}, seed {run['seed']}{subset}"


def validated(run_dir: Path) -> Validated:
    """A finished run's validated rows and predictions, read from its folder (labels and groups
    from the data only where the run saved no cross-fitted predictions)."""
    folder = RunFolder(run_dir)
    config, summary = folder.config(), folder.summary()
    target = target_of_run(config)
    rows, outputs, decided = validated_predictions(run_dir, summary, target)
    if decided is None:  # no cross-fitted predictions: the ensemble fitted on all rows, under its decisions
        decided = target.decide(outputs, summary.get("decisions") or target.default_decisions())
    folds = np.load(folder.oof_folds_path)  # the fold model that validated each training image
    targets, groups = _labels(folder, config, summary, rows, len(folds))
    return Validated(folder.name, config, summary["metric"], target, rows, targets, groups, folds,
                     CrossFit(outputs, decided).scored(summary["metric"], target), decided)


def _labels(folder: RunFolder, config: dict, summary: dict, rows: np.ndarray,
            count: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The validated rows' targets and groups (None: no groups), as the run saved them beside its
    cross-fitted predictions; read from the data again where it saved none (one cross-fitting part)."""
    if folder.crossfit_path.is_file():
        with np.load(folder.crossfit_path) as saved:
            if "targets" in saved:
                return saved["targets"], saved["groups"] if "groups" in saved else None
    comp, run = competition_from_dict(config["competition"]), run_from_dict(config["run"])
    dataset = training_dataset(comp, run, Path(config["data"]), skip_bad=summary["skipped_images"] > 0)
    if len(dataset.train_targets) != count:
        raise PipelineError(f"Run {folder.name} was trained on {count} images; the data in {config['data']} "
                            f"now has {len(dataset.train_targets)}: its labels cannot be read back.")
    return dataset.train_targets[rows], None if dataset.groups is None else dataset.groups[rows]


def paired_runs(a: Validated, b: Validated) -> Paired:
    """The paired bootstrap of B against A; refused (one line) unless both validated the same
    images with the same split, on the same labels, under the same metric."""
    if a.metric != b.metric:
        raise PipelineError(f"Runs {a.name} and {b.name} are scored by different metrics ({a.metric}, {b.metric}).")
    if not np.array_equal(a.folds, b.folds):
        raise PipelineError(f"Runs {a.name} and {b.name} validated different images ({a.split()}; {b.split()}): "
                            f"compare needs the same split: train both with the same --seed, --folds "
                            f"and val_fraction.")
    if not np.array_equal(a.targets, b.targets):
        raise PipelineError(f"Runs {a.name} and {b.name} validated the same images with different labels: "
                            f"the training data changed between them; train both on the same data.")
    return paired_bootstrap(a.metric, a.target, a.targets, a.scored, b.scored, a.bootstrap(SEED))


def class_moves(a: Validated, b: Validated, limit: int = MOVED) -> list[str]:
    """The classes (tags, grades) whose count of images decided right changed most from A to B;
    none for numbers."""
    truth, target = a.targets, a.target
    if target.kind == MULTI:
        right = [(a.decided == truth), (b.decided == truth)]
        counts = [r.sum(0) for r in right]
        totals = np.full(truth.shape[1], len(truth))
        names = target.classes
    elif target.kind in (SINGLE, BINARY) or (target.kind == REGRESSION and target.grades):
        truth = np.rint(truth).astype(np.int64) if target.kind == REGRESSION else truth
        offset = target.grades[0] if target.kind == REGRESSION else 0
        width = len(target.classes) if target.kind != REGRESSION else target.grades[1] - offset + 1
        totals = np.bincount(truth - offset, minlength=width)
        counts = [np.bincount(truth - offset, weights=(p == truth).astype(np.float64), minlength=width)
                  for p in (a.decided, b.decided)]
        names = target.classes if target.kind != REGRESSION else [str(offset + g) for g in range(width)]
    else:
        return []
    readable = a.config["competition"].get("class_names", {})
    change = counts[1] - counts[0]
    order = [i for i in np.argsort(-np.abs(change), kind="stable")[:limit] if change[i]]
    return [f"{names[i]}{' ' + readable[names[i]] if names[i] in readable else ''}: "
            f"{int(counts[0][i])} -> {int(counts[1][i])} of {int(totals[i])} right ({int(change[i]):+d})"
            for i in order]


def compare_runs(competition: str, run_a: str, run_b: str) -> Paired:
    """Print B against A on the images both validated; returns the comparison."""
    a, b = (validated(find_run(competition, run)) for run in (run_a, run_b))
    paired = paired_runs(a, b)
    groups = "" if a.groups is None else ", groups whole"
    print(f"{competition}: B {b.name} against A {a.name} on the same {len(a.rows)} images ({a.split()}); "
          f"paired bootstrap, {paired.resamples} resamples by class{groups}")
    for label, run, score, interval in (("A", a, paired.score_a, paired.interval_a),
                                        ("B", b, paired.score_b, paired.interval_b)):
        print(f"  {label}  {run.metric} {score:.4f}  95% {format_interval(interval)}  {run.config['run']['preset']}")
    low, high = paired.difference_interval or (np.nan, np.nan)
    print(f"  B - A  {paired.difference:+.4f}  95% [{low:+.4f}, {high:+.4f}]; B better in "
          f"{paired.b_better:.1%} of resamples (the same score in {paired.ties:.1%})")
    print(f"  {_verdict(paired)}")
    moves = class_moves(a, b)
    if moves:
        print(f"  classes that moved most (images right, A -> B): {'; '.join(moves)}")
    return paired


def _verdict(paired: Paired) -> str:
    if paired.difference_interval is None or paired.difference_interval[0] <= 0 <= paired.difference_interval[1]:
        return ("within the noise of these images: the interval holds 0, so these runs are not told apart "
                "(a k-fold run scores every image and narrows it; the seed's own spread adds to it)")
    better = paired.b_better > 0.5
    return f"B is {'better' if better else 'worse'} than A beyond the noise of these images (95%)"
