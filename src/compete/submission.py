"""Writing submission files in exactly the sample's format, validated before they land."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .config import PipelineError


def build_submission(sample: pd.DataFrame, id_column: str, label_column: str,
                     classes: list[str], probs: np.ndarray) -> pd.DataFrame:
    """Rows in the sample's id order. A sample with one column per class gets probabilities;
    otherwise the label column gets the most probable class, in the original label space."""
    frame = pd.DataFrame({id_column: sample[id_column].to_numpy()})
    others = [c for c in sample.columns if c != id_column]
    if sorted(others) == sorted(classes) and len(others) > 1:
        for column in others:
            frame[column] = probs[:, classes.index(column)]
    else:
        if label_column not in sample.columns:
            raise PipelineError(
                f"The sample submission has columns {', '.join(sample.columns)} but no "
                f"'{label_column}' column to fill: fix label_column in the competition yaml.")
        for column in others:
            frame[column] = np.asarray(classes, dtype=object)[probs.argmax(1)] \
                if column == label_column else sample[column].to_numpy()
    return frame[list(sample.columns)]


def validate_submission(frame: pd.DataFrame, sample: pd.DataFrame, id_column: str,
                        label_column: str, classes: list[str]) -> None:
    """Raise unless `frame` would be accepted where `sample` is the reference."""
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
    if label_column in frame.columns and label_column not in classes:
        bad = ~frame[label_column].astype(str).isin(set(classes))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise PipelineError(f"Submission row {row + 2}: label {frame[label_column].iloc[row]!r} "
                                f"is not one of the training classes.")


def write_submission(frame: pd.DataFrame, out_dir: Path) -> Path:
    """Write submission.csv atomically, plus a timestamped copy beside it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "submission.csv"
    stamped = out_dir / f"submission-{time.strftime('%Y%m%d-%H%M%S')}.csv"
    partial = out_dir / f".submission.csv.tmp{os.getpid()}"
    frame.to_csv(partial, index=False)
    os.replace(partial, target)  # readers see the old file or the new one, never half of one
    stamped.write_bytes(target.read_bytes())
    return target
