"""Competition files as downloaded: folders or zips, CSV tables, and their validation.

A data folder may hold `train/` and `test/` image folders, or the zips the sites hand out
(`train.zip` holding `train.csv` and `train/<id>.png`, ...). Every file is looked up by its
relative path, first on disk, then inside any zip of the folder, so nothing needs unzipping.

Every check reports to a `Problems`: by default the first problem raises a PipelineError
(training and prediction stop before any work), while `./run.sh check` collects them all.
"""
from __future__ import annotations

import codecs
import io
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .config import Competition, PipelineError

INTEGER = re.compile(r"^-?\d+$")
NOT_A_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")  # path separators and control characters
# Spellings of "no value" that spreadsheets and pandas write into a label cell.
MISSING_LABELS = frozenset({"", "nan", "NaN", "NA", "N/A", "n/a", "<NA>", "#N/A", "null", "NULL", "None"})
DELIMITERS = ";\t|"  # recognised from the header line when it holds no comma
EXAMPLES = 5         # rows or files named in one message; the rest are counted
ZIP_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError)


class Problems:
    """Where checks report what is wrong with the inputs, and notes that are not wrong."""

    def __init__(self, collect: bool = False):
        self.collect = collect       # False: the first problem raises; True: keep them all
        self.found: list[str] = []
        self.notes: list[str] = []

    def report(self, message: str) -> None:
        if not self.collect:
            raise PipelineError(message)
        self.found.append(message)

    def note(self, message: str) -> None:
        self.notes.append(message)


def examples(items: list, total: int | None = None, sep: str = ", ") -> str:
    """'a, b, c' or 'a, b, c, d, e and 7 more', for messages."""
    total = len(items) if total is None else total
    shown = sep.join(str(item) for item in items[:EXAMPLES])
    return shown + (f" and {total - EXAMPLES} more" if total > EXAMPLES else "")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # names too long for the file system, NUL bytes
        return False


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
        self._bad_zips: dict[Path, str] = {}  # zips that could not be opened, and why

    def _index(self) -> dict[str, tuple[Path, str]]:
        """Map every path suffix of every zip member ('train/1.png', '1.png') to its member."""
        if self._by_suffix is None:
            self._by_suffix = {}
            for zip_path in sorted(self.root.glob("*.zip")):
                try:
                    names = self._open_zip(zip_path).namelist()
                except ZIP_ERRORS as error:
                    self._bad_zips[zip_path] = str(error)  # a problem only if a file we need is in it
                    continue
                for name in sorted(names, key=len, reverse=True):  # shortest full name wins
                    parts = name.rstrip("/").split("/")
                    for start in range(len(parts)):
                        self._by_suffix["/".join(parts[start:])] = (zip_path, name)
        return self._by_suffix

    def _open_zip(self, zip_path: Path) -> zipfile.ZipFile:
        if zip_path not in self._zips:
            self._zips[zip_path] = zipfile.ZipFile(zip_path)
        return self._zips[zip_path]

    def bad_zips(self) -> dict[Path, str]:
        """Zips of the folder that cannot be opened, and why."""
        self._index()
        return self._bad_zips

    def exists(self, relpath: str) -> bool:
        return _is_file(self.root / relpath) or relpath in self._index()

    def describe(self, relpath: str) -> str:
        """Where a file is, for messages: a path on disk or `archive.zip:member`."""
        if _is_file(self.root / relpath) or relpath not in self._index():
            return str(self.root / relpath)
        zip_path, name = self._index()[relpath]
        return f"{zip_path}:{name}"

    def read_bytes(self, relpath: str) -> bytes:
        path = self.root / relpath
        try:
            if _is_file(path):
                return path.read_bytes()
            if relpath in self._index():
                zip_path, name = self._index()[relpath]
                return self._open_zip(zip_path).read(name)
        except ZIP_ERRORS as error:
            raise PipelineError(f"Cannot read {self.describe(relpath)} ({error}): download it "
                                f"again, or check its permissions.") from error
        raise PipelineError(self.not_found(relpath))

    def not_found(self, relpath: str) -> str:
        """Why `relpath` is missing and what to do, naming a likely intended file if one exists."""
        message = f"{self.root / relpath} not found, on disk or inside any zip in {self.root}."
        if self.bad_zips():
            message += " Unreadable zip(s), download again: " + ", ".join(
                f"{path.name} ({why})" for path, why in self.bad_zips().items()) + "."
        folder, _, name = relpath.rpartition("/")
        stem = name.split(".")[0].lower()
        similar = [other for other in self.listdir(folder)
                   if other.split(".")[0].lower() == stem and other != name and not other.endswith(".zip")]
        if similar:
            return message + f" Found {folder + '/' if folder else ''}{similar[0]} instead: fix the name " \
                             f"pattern (image_template) or the file name in competition/*.yaml."
        return message + " Check the file names in competition/*.yaml against the downloaded files."

    def listdir(self, folder: str) -> list[str]:
        """File names directly inside `folder`, on disk and in the zips (for hints; not fast)."""
        names = set()
        disk = self.root / folder
        if disk.is_dir():
            names.update(p.name for p in disk.iterdir())
        prefix = f"{folder}/" if folder else ""
        names.update(key[len(prefix):] for key in self._index()
                     if key.startswith(prefix) and "/" not in key[len(prefix):])
        return sorted(names)

    def fingerprint(self, relpaths: list[str]) -> list:
        """Sizes and modification times identifying the current content of these files."""
        stamps, zips = [str(self.root.resolve())], set()
        for relpath in relpaths:
            path = self.root / relpath
            if _is_file(path):
                stat = path.stat()
                stamps.append((relpath, stat.st_size, stat.st_mtime_ns))
            elif relpath in self._index():
                zips.add(self._index()[relpath][0])
        for zip_path in sorted(zips):
            stat = zip_path.stat()
            stamps.append((str(zip_path.resolve()), stat.st_size, stat.st_mtime_ns))
        return stamps

    def read_csv(self, relpath: str) -> pd.DataFrame:
        """Every cell as a stripped string, so ids like '007' stay as written.
        The encoding it was read with is in `frame.attrs["encoding"]`."""
        where = self.describe(relpath)
        text, encoding = decode_text(self.read_bytes(relpath))
        header = text.split("\n", 1)[0]
        delimiter = "," if "," in header else next((d for d in DELIMITERS if d in header), ",")
        try:
            with warnings.catch_warnings():
                # a row with one field too many would silently become the index: refuse it
                warnings.simplefilter("error", pd.errors.ParserWarning)
                frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False,
                                    index_col=False, sep=delimiter)
        except pd.errors.EmptyDataError:
            raise PipelineError(f"{where} is empty: download it again.") from None
        except (pd.errors.ParserError, pd.errors.ParserWarning) as error:
            raise PipelineError(f"{where} is not a valid CSV ({str(error).strip()}). Quote values that contain "
                                f"commas, or download it again.") from None
        frame = frame.fillna("")  # rows with too few fields
        frame.columns = [str(c).strip() for c in frame.columns]
        twice = frame.columns[frame.columns.duplicated()]
        if len(twice):
            raise PipelineError(f"{where}: column {twice[0]!r} appears twice in the header. "
                                f"Rename or remove one of them.")
        frame = frame.apply(lambda column: column.str.strip())
        frame.attrs["encoding"] = encoding
        return frame


def decode_text(raw: bytes) -> tuple[str, str]:
    """CSV bytes to text: UTF-8 (with or without BOM), UTF-16 with BOM, else Windows-1252 or
    Latin-1, the legacy encodings spreadsheets export (Latin-1 maps every byte)."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = ("utf-16",)
    else:
        candidates = ("utf-8-sig", "cp1252", "latin-1")
    for encoding in candidates:
        try:
            return raw.decode(encoding), encoding.replace("-sig", "")
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1", errors="replace"), "latin-1"  # a UTF-16 BOM on broken data


@dataclass
class Tables:
    """The competition's CSVs, checked and reduced to what the pipeline needs."""
    train_ids: list[str]
    train_labels: list[str]
    test_ids: list[str]            # in the sample submission's order
    sample: pd.DataFrame | None    # the sample submission, as read (None only when collecting)
    classes: list[str]             # sorted; integer labels sort by value


def sort_classes(labels) -> list[str]:
    unique = set(labels)
    if all(INTEGER.match(label) for label in unique):
        return sorted(unique, key=lambda label: (int(label), label))  # '007' and '7' stay apart
    return sorted(unique)


def _read_table(data: DataDir, relpath: str, columns: list[str], setting: str,
                problems: Problems) -> pd.DataFrame | None:
    """The CSV, if it reads, has `columns` and at least one row; else None, reported."""
    try:
        frame = data.read_csv(relpath)
    except PipelineError as error:
        problems.report(str(error))
        return None
    where = data.describe(relpath)
    if frame.attrs["encoding"] != "utf-8":
        problems.note(f"{where} is not UTF-8; read as {frame.attrs['encoding']}.")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        near = [c for c in frame.columns if c.lower() in {m.lower() for m in missing}]
        problems.report(
            f"{where}: missing column(s) {', '.join(map(repr, missing))}; it has "
            f"{', '.join(map(repr, frame.columns))}. Fix {setting} in the competition yaml"
            + (f" (did you mean {near[0]!r}?)." if near else "."))
        return None
    if frame.empty:
        problems.report(f"{where} has a header but no rows: download it again.")
        return None
    return frame


def _lines(mask) -> list[int]:
    return [int(i) + 2 for i in mask.to_numpy().nonzero()[0]]  # line 1 is the header


def check_ids(ids: pd.Series, where: str, problems: Problems | None = None) -> pd.Series:
    """Ids must be present, plain names (no path parts) and unique. Returns which rows have a
    usable id (when collecting, the other rows are left out of later checks)."""
    problems = problems or Problems()
    empty = ids == ""
    if empty.any():
        problems.report(f"{where} line(s) {examples(_lines(empty))}: empty id. "
                        f"Remove those rows or fill in their ids.")
    pathlike = ids.str.contains(NOT_A_NAME) | ids.isin([".", ".."])
    if pathlike.any():
        first = ids[pathlike].iloc[0]
        problems.report(f"{where} line(s) {examples(_lines(pathlike))}: id {first!r} is not a plain "
                        f"file name (path separators, '..' or control characters are refused). "
                        f"Fix or remove those rows.")
    duplicated = ids.duplicated(keep=False) & ~empty
    if duplicated.any():
        first = ids[duplicated].iloc[0]
        problems.report(
            f"{where}: id {first!r} appears on lines {examples(_lines(ids == first))}; "
            f"{ids[duplicated].nunique()} id(s) are duplicated. Remove the duplicate rows.")
    return ~(empty | pathlike)


def _check_labels(labels: pd.Series, ids: pd.Series, where: str, problems: Problems) -> pd.Series:
    """Returns which rows have a label."""
    missing = labels.isin(MISSING_LABELS)
    if missing.any():
        problems.report(
            f"{where} line(s) {examples(_lines(missing))} (id {ids[missing].iloc[0]!r}): missing "
            f"label; {int(missing.sum())} row(s) have none. Remove those rows or fill in their labels.")
    if labels[~missing].nunique() == 1:
        problems.report(f"{where}: every row has the label {labels[~missing].iloc[0]!r}; a classifier "
                        f"needs at least two classes. Check label_column in the competition yaml.")
    return ~missing


def _check_same_ids(test_ids: pd.Series, sample_ids: pd.Series, test_where: str, sample_where: str,
                    problems: Problems) -> None:
    missing = sorted(set(test_ids) - set(sample_ids))
    extra = sorted(set(sample_ids) - set(test_ids))
    parts = []
    if missing:
        parts.append(f"{len(missing)} test id(s) missing from the sample: {examples(list(map(repr, missing)))}")
    if extra:
        parts.append(f"{len(extra)} sample id(s) not in the test set: {examples(list(map(repr, extra)))}")
    if parts:
        problems.report(f"{sample_where} does not match {test_where}: {'; '.join(parts)}. "
                        f"Download both files again from the same competition.")


def sample_format(sample: pd.DataFrame, id_column: str, label_column: str, classes: list[str],
                  problems: Problems | None = None, where: str = "The sample submission") -> str | None:
    """How a submission is filled in: 'probabilities' when the sample has one column per class,
    'label' when it has the label column; None (reported) when neither."""
    problems = problems or Problems()
    others = [c for c in sample.columns if c != id_column]
    if len(others) > 1 and set(others) == set(classes):
        return "probabilities"
    if label_column in others:
        return "label"
    if len(others) > 1 and set(others) & set(classes):
        problems.report(
            f"{where}: its class columns ({examples(others)}) differ from the training "
            f"labels ({examples(classes)}): missing {examples(sorted(set(classes) - set(others)))}; "
            f"extra {examples(sorted(set(others) - set(classes)))}. Check label_column and train_csv.")
    else:
        problems.report(
            f"{where} has columns {', '.join(map(repr, sample.columns))} but no "
            f"{label_column!r} column to fill: fix label_column in the competition yaml.")
    return None


def _train_table(comp: Competition, data: DataDir, problems: Problems) -> pd.DataFrame | None:
    id_col, label_col = comp.id_column, comp.label_column
    train = _read_table(data, comp.train_csv, [id_col, label_col], "id_column/label_column", problems)
    if train is None:
        return None
    where = data.describe(comp.train_csv)
    usable = check_ids(train[id_col], where, problems)
    usable &= _check_labels(train[label_col], train[id_col], where, problems)
    return train[usable]


def _test_ids(comp: Competition, data: DataDir, sample: pd.DataFrame | None,
              problems: Problems) -> list[str]:
    """Ids to predict: the sample's, checked against test_csv when there is one."""
    id_col = comp.id_column
    sample_where = data.describe(comp.sample_submission)
    sample_ids = sample[id_col][check_ids(sample[id_col], sample_where, problems)] \
        if sample is not None else None
    if not (comp.test_csv and data.exists(comp.test_csv)):
        return [] if sample_ids is None else sample_ids.tolist()
    test = _read_table(data, comp.test_csv, [id_col], "id_column", problems)
    if test is None:
        return [] if sample_ids is None else sample_ids.tolist()
    test_where = data.describe(comp.test_csv)
    test_ids = test[id_col][check_ids(test[id_col], test_where, problems)]
    if comp.label_column in test.columns:
        problems.report(f"{test_where} has a {comp.label_column!r} column: test data must be "
                        f"unlabelled. Check that test_csv names the test file, not the training file.")
    if sample_ids is None:
        return test_ids.tolist()
    _check_same_ids(test_ids, sample_ids, test_where, sample_where, problems)
    return sample_ids.tolist()


def load_tables(comp: Competition, data: DataDir, problems: Problems | None = None) -> Tables:
    """Read and check train, test and sample CSVs. Collecting, a broken file leaves its part empty."""
    problems = problems or Problems()
    train = _train_table(comp, data, problems)
    sample = _read_table(data, comp.sample_submission, [comp.id_column], "id_column", problems)
    test_ids = _test_ids(comp, data, sample, problems)
    train_ids = [] if train is None else train[comp.id_column].tolist()
    train_labels = [] if train is None else train[comp.label_column].tolist()
    classes = sort_classes(train_labels)
    if sample is not None and classes:
        sample_format(sample, comp.id_column, comp.label_column, classes, problems,
                      data.describe(comp.sample_submission))
    return Tables(train_ids=train_ids, train_labels=train_labels, test_ids=test_ids,
                  sample=sample, classes=classes)
