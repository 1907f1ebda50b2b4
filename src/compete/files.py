"""Competition files as downloaded: folders or zips, CSV tables, and their validation.

A data folder may hold `train/` and `test/` image folders, or the zips the sites hand out
(`train.zip` holding `train.csv` and `train/<id>.png`, ...). Every file is looked up by its
relative path, first on disk, then inside any zip of the folder, so nothing needs unzipping.
"""
from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .config import Competition, PipelineError

INTEGER = re.compile(r"^-?\d+$")


class DataDir:
    """Read-only view of a competition's data folder, zips included."""

    def __init__(self, root: Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise PipelineError(
                f"Data folder {self.root} does not exist. Put the competition's downloaded files "
                f"there (zips are fine), or pass --data DIR.")
        self._by_suffix: dict[str, tuple[Path, str]] | None = None
        self._zips: dict[Path, zipfile.ZipFile] = {}

    def _index(self) -> dict[str, tuple[Path, str]]:
        """Map every path suffix of every zip member ('train/1.png', '1.png') to its member."""
        if self._by_suffix is None:
            self._by_suffix = {}
            for zip_path in sorted(self.root.glob("*.zip")):
                try:
                    names = self._open_zip(zip_path).namelist()
                except zipfile.BadZipFile:
                    raise PipelineError(f"{zip_path} is not a readable zip file: download it again.") from None
                for name in sorted(names, key=len, reverse=True):  # shortest full name wins
                    parts = name.rstrip("/").split("/")
                    for start in range(len(parts)):
                        self._by_suffix["/".join(parts[start:])] = (zip_path, name)
        return self._by_suffix

    def _open_zip(self, zip_path: Path) -> zipfile.ZipFile:
        if zip_path not in self._zips:
            self._zips[zip_path] = zipfile.ZipFile(zip_path)
        return self._zips[zip_path]

    def exists(self, relpath: str) -> bool:
        return (self.root / relpath).exists() or relpath in self._index()

    def describe(self, relpath: str) -> str:
        """Where a file is, for messages: a path on disk or `archive.zip:member`."""
        if (self.root / relpath).exists() or relpath not in self._index():
            return str(self.root / relpath)
        zip_path, name = self._index()[relpath]
        return f"{zip_path}:{name}"

    def read_bytes(self, relpath: str) -> bytes:
        path = self.root / relpath
        if path.is_file():
            return path.read_bytes()
        if relpath in self._index():
            zip_path, name = self._index()[relpath]
            return self._open_zip(zip_path).read(name)
        raise PipelineError(
            f"{path} not found, on disk or inside any zip in {self.root}. "
            f"Check the file names in competition/*.yaml against the downloaded files.")

    def fingerprint(self, relpaths: list[str]) -> list:
        """Sizes and modification times identifying the current content of these files."""
        stamps, zips = [], set()
        for relpath in relpaths:
            path = self.root / relpath
            if path.is_file():
                stat = path.stat()
                stamps.append((relpath, stat.st_size, stat.st_mtime_ns))
            elif relpath in self._index():
                zips.add(self._index()[relpath][0])
        for zip_path in sorted(zips):
            stat = zip_path.stat()
            stamps.append((str(zip_path.resolve()), stat.st_size, stat.st_mtime_ns))
        return stamps

    def read_csv(self, relpath: str) -> pd.DataFrame:
        """Every cell as a stripped string, so ids like '007' stay as written."""
        raw = self.read_bytes(relpath)
        where = self.describe(relpath)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")  # legacy exports; every byte maps to a character
        try:
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError:
            raise PipelineError(f"{where} is empty: download it again.") from None
        except pd.errors.ParserError as error:
            raise PipelineError(f"{where} is not a valid CSV ({error}).") from None
        frame.columns = [str(c).strip() for c in frame.columns]
        return frame.apply(lambda column: column.str.strip())


@dataclass
class Tables:
    """The competition's CSVs, checked and reduced to what the pipeline needs."""
    train_ids: list[str]
    train_labels: list[str]
    test_ids: list[str]            # in the sample submission's order
    sample: pd.DataFrame           # the sample submission, as read
    classes: list[str]             # sorted; integer labels sort by value


def _require_columns(frame: pd.DataFrame, columns: list[str], where: str, setting: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PipelineError(
            f"{where}: missing column(s) {', '.join(missing)}; it has {', '.join(frame.columns)}. "
            f"Fix {setting} in the competition yaml.")
    if frame.empty:
        raise PipelineError(f"{where} has a header but no rows: download it again.")


def check_ids(ids: pd.Series, where: str) -> None:
    """Ids must be unique, present, and plain names (no path parts)."""
    for row, value in enumerate(ids, start=2):  # line 1 is the header
        if value == "":
            raise PipelineError(f"{where} line {row}: empty id. Remove the row or fill in the id.")
        if "/" in value or "\\" in value or value in (".", "..") or "\0" in value:
            raise PipelineError(
                f"{where} line {row}: id {value!r} looks like a path; ids must be plain names.")
    duplicated = ids[ids.duplicated(keep=False)]
    if len(duplicated):
        first = duplicated.iloc[0]
        lines = [str(i + 2) for i in duplicated.index[duplicated == first]]
        raise PipelineError(
            f"{where}: id {first!r} appears {len(lines)} times (lines {', '.join(lines)}); "
            f"{duplicated.nunique()} id(s) are duplicated. Remove the duplicate rows.")


def sort_classes(labels) -> list[str]:
    unique = set(labels)
    if all(INTEGER.match(label) for label in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def load_tables(comp: Competition, data: DataDir) -> Tables:
    id_col, label_col = comp.id_column, comp.label_column
    train_where = data.describe(comp.train_csv)
    train = data.read_csv(comp.train_csv)
    _require_columns(train, [id_col, label_col], train_where, "id_column/label_column")
    check_ids(train[id_col], train_where)
    empty = train.index[train[label_col].isin(["", "nan", "NaN", "None", "NA"])]
    if len(empty):
        raise PipelineError(
            f"{train_where} line {empty[0] + 2} (id {train[id_col][empty[0]]!r}): missing label; "
            f"{len(empty)} row(s) have none. Remove those rows or fill in their labels.")

    sample_where = data.describe(comp.sample_submission)
    sample = data.read_csv(comp.sample_submission)
    _require_columns(sample, [id_col], sample_where, "id_column")
    check_ids(sample[id_col], sample_where)
    if comp.test_csv and data.exists(comp.test_csv):
        test_where = data.describe(comp.test_csv)
        test = data.read_csv(comp.test_csv)
        _require_columns(test, [id_col], test_where, "id_column")
        check_ids(test[id_col], test_where)
        if label_col in test.columns:
            raise PipelineError(
                f"{test_where} has a '{label_col}' column: test data must be unlabelled. "
                f"Check that test_csv names the test file, not the training file.")
        _check_same_ids(test[id_col], sample[id_col], test_where, sample_where)
    return Tables(
        train_ids=train[id_col].tolist(), train_labels=train[label_col].tolist(),
        test_ids=sample[id_col].tolist(), sample=sample,
        classes=sort_classes(train[label_col]))


def _check_same_ids(test_ids: pd.Series, sample_ids: pd.Series, test_where: str, sample_where: str):
    missing = sorted(set(test_ids) - set(sample_ids))
    extra = sorted(set(sample_ids) - set(test_ids))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} test id(s) missing from the sample (e.g. {missing[0]!r})")
        if extra:
            parts.append(f"{len(extra)} sample id(s) not in the test set (e.g. {extra[0]!r})")
        raise PipelineError(
            f"{sample_where} does not match {test_where}: {'; '.join(parts)}. "
            f"Download both files again from the same competition.")
