"""Writing submission files in exactly the sample's format, validated before they land."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import write_atomically
from .config import PipelineError
from .files import Problems
from .metrics import BINARY, KAGGLE_EPS, MULTI, SINGLE, metric
from .tables import sample_format
from .targets import Target


HARD_LABEL_COST = -np.log(KAGGLE_EPS)  # nats a leaderboard charges for a sure, wrong label


def submission_format(sample: pd.DataFrame, id_column: str, label_column: str, target: Target,
                      metric_name: str, problems: Problems | None = None,
                      where: str = "The sample submission") -> str | None:
    """How the sample is filled in for this target and metric: 'probabilities' (one column per
    class or tag) or 'label' (the label column: a class, tags, a number, or the positive class's
    probability where a binary metric scores probabilities). A label column for a metric that
    scores probabilities of several classes or tags is refused: hard labels score badly there."""
    problems = problems or Problems()
    fill = sample_format(sample, id_column, label_column, target.classes, problems, where)
    scores_probabilities = metric(metric_name, target.kind).on_probabilities
    if fill == "label" and scores_probabilities and target.kind in (SINGLE, MULTI):
        problems.report(
            f"{where} has one {label_column!r} column to fill with a {target.kind} label, but the "
            f"metric {metric_name} scores probabilities of each {'tag' if target.kind == MULTI else 'class'}: "
            f"hard labels would cost about {HARD_LABEL_COST:.1f} nats for every wrong row. Check "
            f"metric in the competition yaml (e.g. accuracy, f2_samples), or the sample's columns.")
        return None
    return fill


def _as_probability(target: Target, metric_name: str) -> bool:
    return target.kind == BINARY and metric(metric_name, BINARY).on_probabilities


def build_submission(sample: pd.DataFrame, id_column: str, label_column: str,
                     classes: list[str], probs: np.ndarray, target: Target | None = None,
                     metric_name: str = "accuracy", decisions: dict | None = None) -> pd.DataFrame:
    """Rows in the sample's id order, filled as `submission_format` says: each class's (tag's)
    probability, or decided 0/1 tags where the metric scores labels; or the label column: the
    class, the tags or the number decided (the out-of-fold `decisions`), or the positive class's
    probability. Columns we do not predict keep the sample's."""
    target = target or Target(classes)
    decisions = target.default_decisions() if decisions is None else decisions
    fill = submission_format(sample, id_column, label_column, target, metric_name)
    on_probabilities = metric(metric_name, target.kind).on_probabilities
    frame = pd.DataFrame({id_column: sample[id_column].to_numpy()})
    if fill == "probabilities":
        values = probs
        if target.kind == BINARY:  # one column per class: P(negative), P(positive)
            values = np.concatenate([1 - probs, probs], axis=1)
        elif target.kind == MULTI and not on_probabilities:  # one 0/1 column per tag
            values = target.decide(probs, decisions)
        cells = {name: values[:, i] for i, name in enumerate(target.classes)}
    elif _as_probability(target, metric_name):
        cells = {label_column: probs[:, 0]}
    else:
        cells = {label_column: target.label_cells(target.decide(probs, decisions))}
    for column in sample.columns:
        if column != id_column:
            frame[column] = cells[column] if column in cells else sample[column].to_numpy()
    return frame[list(sample.columns)]


def validate_submission(frame: pd.DataFrame, sample: pd.DataFrame, id_column: str,
                        label_column: str, classes: list[str], target: Target | None = None,
                        metric_name: str = "accuracy") -> None:
    """Raise unless `frame` would be accepted where `sample` is the reference."""
    target = target or Target(classes)
    if list(frame.columns) != list(sample.columns):
        raise PipelineError(f"Submission header {list(frame.columns)} differs from the sample's "
                            f"{list(sample.columns)}.")
    if len(frame) != len(sample):
        raise PipelineError(f"Submission has {len(frame)} rows; the sample has {len(sample)}.")
    ids, expected = frame[id_column].astype(str).to_numpy(), sample[id_column].astype(str).to_numpy()
    if not (ids == expected).all():
        row = int(np.flatnonzero(ids != expected)[0])
        raise PipelineError(f"Submission row {row + 2} has id {ids[row]!r}; the sample has "
                            f"{expected[row]!r} there. Ids must keep the sample's order.")
    if frame.isna().any().any():
        raise PipelineError("Submission has empty cells.")
    if submission_format(sample, id_column, label_column, target, metric_name) == "probabilities":
        probs = frame[target.classes].to_numpy(dtype=np.float64)
        if not (np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()):
            raise PipelineError("Submission has probabilities outside [0, 1]: the model diverged; "
                                "train again with a lower learning rate.")
    elif label_column in frame.columns:
        bad = target.check_cells(frame[label_column], _as_probability(target, metric_name))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise PipelineError(f"Submission row {row + 2}: {label_column} {frame[label_column].iloc[row]!r} "
                                f"is not a valid {target.kind} cell (a training class, known tags, a "
                                f"probability or a grade in range).")


def _reads_back_as(path: Path, frame: pd.DataFrame) -> bool:
    """Whether the CSV at `path` reads back as `frame`: text cells exactly, numbers to rounding."""
    back = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(back.columns) != [str(c) for c in frame.columns] or len(back) != len(frame):
        return False
    for column, written in zip(frame.columns, back.columns):
        if pd.api.types.is_numeric_dtype(frame[column]):
            same = np.allclose(pd.to_numeric(back[written]).to_numpy(), frame[column].to_numpy())
        else:
            same = (back[written].to_numpy() == frame[column].astype(str).to_numpy()).all()
        if not same:
            return False
    return True


def write_submission(frame: pd.DataFrame, out_dir: Path) -> Path:
    """Write submission.csv atomically, plus a timestamped copy beside it. The file is read back
    before it lands, so a file that would not parse as `frame` never replaces the previous one."""
    def reads_back(partial: Path) -> None:
        if not _reads_back_as(partial, frame):
            raise PipelineError(f"The submission written to {partial} does not read back as the "
                                f"predictions (ids or labels change in CSV form); nothing was written.")

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "submission.csv"
    stamped = out_dir / f"submission-{time.strftime('%Y%m%d-%H%M%S')}.csv"
    write_atomically(stamped, lambda file: frame.to_csv(file, index=False), check=reads_back)
    write_atomically(target, lambda file: file.write(stamped.read_bytes()))
    return target
