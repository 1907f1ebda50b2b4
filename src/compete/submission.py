"""Writing submission files in exactly the sample's format, validated before they land."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import write_atomically
from .config import PipelineError
from .tables import sample_format


def build_submission(sample: pd.DataFrame, id_column: str, label_column: str,
                     classes: list[str], probs: np.ndarray) -> pd.DataFrame:
    """Rows in the sample's id order. A sample with one column per class gets probabilities;
    otherwise the label column gets the most probable class, in the original label space."""
    frame = pd.DataFrame({id_column: sample[id_column].to_numpy()})
    fill = sample_format(sample, id_column, label_column, classes)
    for column in sample.columns:
        if column == id_column:
            continue
        if fill == "probabilities":
            frame[column] = probs[:, classes.index(column)]
        elif column == label_column:
            frame[column] = np.asarray(classes, dtype=object)[probs.argmax(1)]
        else:
            frame[column] = sample[column].to_numpy()  # columns we do not predict keep the sample's
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
    if sample_format(sample, id_column, label_column, classes) == "probabilities":
        probs = frame[classes].to_numpy(dtype=np.float64)
        if not (np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()):
            raise PipelineError("Submission has probabilities outside [0, 1]: the model diverged; "
                                "train again with a lower learning rate.")
    elif label_column in frame.columns:
        bad = ~frame[label_column].astype(str).isin(set(classes))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise PipelineError(f"Submission row {row + 2}: label {frame[label_column].iloc[row]!r} "
                                f"is not one of the training classes.")


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
