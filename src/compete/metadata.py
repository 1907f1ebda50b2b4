"""Metadata beside the image: the CSV columns a competition names in `metadata:` (age, sex, body
site, a temperature), encoded as numbers a model's fusion head reads (models.MetadataFusion).

The encoder is fitted on a fold's training rows only, like the images' normalisation
statistics: numbers are standardised by their mean and standard deviation there, categories
become one-hot columns with one more for a value never seen there, and a missing value is
filled (the mean: zero once standardised; or its own category) and flagged in an indicator
column. It is saved as JSON in the run's config and in every checkpoint (models.NetSpec), so
predict encodes the test rows exactly as the model was trained.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from .errors import PipelineError
from .files import Problems, examples
from .tables import MISSING_LABELS

NUMBER, CATEGORY = "number", "category"   # how a column is encoded
MISSING = "(missing)"                     # the category of an empty cell
MOSTLY_MISSING = 0.5                      # check warns of a column missing in more than this share


def _numbers(cells: pd.Series) -> pd.Series:
    """Cells as floats; empty and unparseable ones NaN."""
    return pd.to_numeric(cells.where(~cells.isin(MISSING_LABELS)), errors="coerce")


def column_kind(cells: pd.Series) -> str:
    """NUMBER when every filled cell is a number (and one is), else CATEGORY."""
    filled = cells[~cells.isin(MISSING_LABELS)]
    return NUMBER if len(filled) and _numbers(filled).notna().all() else CATEGORY


@dataclass
class ColumnCode:
    """How one column becomes encoded features."""
    name: str
    kind: str                         # NUMBER | CATEGORY
    mean: float = 0.0                 # NUMBER: of the training rows' filled cells
    std: float = 1.0                  # NUMBER: their standard deviation (1 when constant)
    categories: list = field(default_factory=list)  # CATEGORY: the training rows' values, sorted

    @property
    def width(self) -> int:
        """Features it gives: the standardised value and its missing flag, or one per category
        plus the unseen slot."""
        return 2 if self.kind == NUMBER else len(self.categories) + 1

    def encode(self, cells: pd.Series) -> np.ndarray:
        if self.kind == NUMBER:
            values = _numbers(cells).to_numpy(np.float64)
            missing = np.isnan(values)
            standard = np.where(missing, 0.0, (values - self.mean) / self.std)
            return np.stack([standard, missing.astype(np.float64)], 1)
        slot = {value: i for i, value in enumerate(self.categories)}
        named = cells.where(~cells.isin(MISSING_LABELS), MISSING)
        index = named.map(slot).fillna(len(self.categories)).to_numpy(np.int64)  # unseen: last slot
        return np.eye(self.width)[index]


def fit_column(name: str, cells: pd.Series) -> ColumnCode:
    if column_kind(cells) == NUMBER:
        values = _numbers(cells).dropna()
        std = float(values.std(ddof=0))
        return ColumnCode(name, NUMBER, float(values.mean()), std if std > 0 else 1.0)
    named = cells.where(~cells.isin(MISSING_LABELS), MISSING)
    return ColumnCode(name, CATEGORY, categories=sorted(named.unique().tolist()))


@dataclass
class MetadataEncoder:
    """The metadata columns' codes, fitted on training rows; encode() gives (N, features) float32."""
    columns: list[ColumnCode]

    @classmethod
    def fit(cls, rows: pd.DataFrame) -> "MetadataEncoder":
        """Fitted on `rows` (string cells, one column per metadata column): a fold's training part."""
        return cls([fit_column(name, rows[name]) for name in rows.columns])

    @property
    def features(self) -> int:
        return sum(column.width for column in self.columns)

    def encode(self, rows: pd.DataFrame) -> np.ndarray:
        if not len(self.columns):
            return np.zeros((len(rows), 0), np.float32)
        return np.concatenate([column.encode(rows[column.name]) for column in self.columns], 1).astype(np.float32)

    def to_dict(self) -> dict:
        return {"columns": [asdict(column) for column in self.columns]}

    @classmethod
    def from_dict(cls, values: dict) -> "MetadataEncoder":
        return cls([ColumnCode(**column) for column in values["columns"]])


def fitted(rows: pd.DataFrame | None, train_idx=None) -> dict | None:
    """The encoder (as saved: a dict) fitted on the rows at `train_idx` (all when None); None
    without metadata."""
    if rows is None:
        return None
    return MetadataEncoder.fit(rows if train_idx is None else rows.iloc[np.asarray(train_idx)]).to_dict()


def encoded(encoder: dict | None, rows: pd.DataFrame | None, device: torch.device,
            what: str = "these images") -> torch.Tensor | None:
    """`rows` encoded by a saved `encoder`, as a float32 tensor on `device`; None for a model
    that reads no metadata."""
    if encoder is None:
        return None
    if rows is None:
        raise PipelineError(f"The model reads metadata columns "
                            f"({', '.join(c['name'] for c in encoder['columns'])}) that {what} lack: "
                            f"set metadata: in the competition yaml, with those columns in the CSVs.")
    return torch.from_numpy(MetadataEncoder.from_dict(encoder).encode(rows)).to(device)


def check_metadata(train: pd.DataFrame, test: pd.DataFrame | None, problems: Problems,
                   where: tuple[str, str]) -> list[str]:
    """What `check` says of the metadata columns: each column's kind and missing share (a
    warning past MOSTLY_MISSING), test cells that are not numbers in a numeric column, and
    test categories never seen in training (they share the unseen slot). Returns one line per
    column."""
    lines = []
    for name in train.columns:
        cells, kind = train[name], column_kind(train[name])
        share = float(cells.isin(MISSING_LABELS).mean())
        if share > MOSTLY_MISSING:
            problems.warn(f"{where[0]}: metadata column {name!r} is missing in {share:.0%} of the rows.")
        code = fit_column(name, cells)
        described = (f"numbers {code.mean:.4g} ± {code.std:.4g}" if kind == NUMBER
                     else f"{len(code.categories)} categories ({examples(code.categories)})")
        lines.append(f"{name}: {described}, {share:.0%} missing")
        if test is None:
            continue
        filled = test[name][~test[name].isin(MISSING_LABELS)]
        if kind == NUMBER and _numbers(filled).isna().any():
            bad = filled[_numbers(filled).isna()]
            problems.report(f"{where[1]}: metadata column {name!r} holds numbers in training but "
                            f"{examples(list(map(repr, bad.unique())))} in the test rows: fix those cells.")
        unseen = sorted(set(filled) - set(code.categories)) if kind == CATEGORY else []
        if unseen:
            problems.warn(f"{where[1]}: metadata column {name!r} has {len(unseen)} categor(ies) never seen "
                          f"in training ({examples(list(map(repr, unseen)))}): they share the unseen slot.")
    return lines
