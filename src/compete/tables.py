"""The competition's CSV tables, checked: train ids and labels, test ids, the sample submission.

Every check reports to a `Problems`: by default the first problem raises a PipelineError
(training and prediction stop before any work), while `./run.sh check` collects them all.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from .config import Competition, target_settings
from .errors import PipelineError
from .files import DataDir, Problems, examples
from .layout import folder_rows, folders_hint, unsafe_ids
from .metrics import MULTI

INTEGER = re.compile(r"^-?\d+$")
MISSING_LABELS = frozenset({"", "nan", "NaN", "NA", "N/A", "n/a", "<NA>", "#N/A", "null", "NULL", "None"})


@dataclass
class Tables:
    """The competition's CSVs, checked and reduced to what the pipeline needs."""
    train_ids: list[str]
    train_labels: list[str]
    test_ids: list[str]            # in the sample submission's order
    sample: pd.DataFrame | None    # the sample submission, as read (None only when collecting)
    classes: list[str]             # sorted; integer labels sort by value
    train_metadata: pd.DataFrame | None = None  # the yaml's metadata columns (string cells), one
                                                # row per training id; None without metadata
    test_metadata: pd.DataFrame | None = None   # the same columns from test_csv, in test_ids order

    def keep_train(self, keep) -> None:
        """Keep the training rows at positions `keep` (their ids, labels and metadata)."""
        self.train_ids = [self.train_ids[i] for i in keep]
        self.train_labels = [self.train_labels[i] for i in keep]
        if self.train_metadata is not None:
            self.train_metadata = self.train_metadata.iloc[list(keep)].reset_index(drop=True)


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
    """Ids must be present, name a file inside the image folder (layout.unsafe_ids) and be
    unique. Returns which rows have a usable id (when collecting, the other rows are left out
    of later checks)."""
    problems = problems or Problems()
    empty = ids == ""
    if empty.any():
        problems.report(f"{where} line(s) {examples(_lines(empty))}: empty id. "
                        f"Remove those rows or fill in their ids.")
    pathlike = unsafe_ids(ids) & ~empty
    if pathlike.any():
        first = ids[pathlike].iloc[0]
        problems.report(f"{where} line(s) {examples(_lines(pathlike))}: id {first!r} does not name a "
                        f"file inside the image folder (absolute paths, '..' and control characters "
                        f"are refused). Fix or remove those rows.")
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
    _check_spellings(labels[~missing], where, problems)
    if labels[~missing].nunique() == 1:
        problems.report(f"{where}: every row has the label {labels[~missing].iloc[0]!r}; a classifier "
                        f"needs at least two classes. Check label_column in the competition yaml.")
    return ~missing


def _check_spellings(labels: pd.Series, where: str, problems: Problems) -> None:
    """Warn of labels that spell one value two ways ('1' and '01', '1.0'; 'cat' and 'Cat'): each
    spelling would silently become a class of its own."""
    def value(label: str):
        try:
            return f"number {float(label)!r}"
        except ValueError:
            return f"text {label.casefold()}"
    spellings = pd.Series(labels.unique())
    groups = spellings.groupby(spellings.map(value)).agg(list)
    twice = [sorted(group) for group in groups if len(group) > 1]
    if twice:
        problems.warn(f"{where}: the labels {' and '.join(repr(x) for x in twice[0])} look like one value "
                      f"spelled {len(twice[0])} ways, and train as {len(twice[0])} different classes"
                      f"{f' ({len(twice)} such groups)' if len(twice) > 1 else ''}. If they are one class, "
                      f"write one spelling in every row.")


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
    """How a submission is filled in: 'probabilities' when the sample has one column per class
    (other columns, such as a Usage column, keep the sample's values), 'label' when it has the
    label column; None (reported) when neither."""
    problems = problems or Problems()
    others = [c for c in sample.columns if c != id_column]
    if len(classes) > 1 and set(classes) <= set(others) and label_column not in others:
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
    """The training rows: from the train CSV, or (layout: folders) from the class folders."""
    id_col, label_col = comp.id_column, comp.label_column
    if comp.layout == "folders":
        train, where = folder_rows(comp, data, problems), data.describe(comp.train_images)
    elif not data.exists(comp.train_csv) and (hint := folders_hint(comp, data)):
        problems.report(f"{data.root / comp.train_csv} not found, but {hint}")
        return None
    else:
        train = _read_table(data, comp.train_csv, [id_col, label_col, *comp.metadata],
                            "id_column/label_column/metadata", problems)
        where = data.describe(comp.train_csv)
    if train is None:
        return None
    usable = check_ids(train[id_col], where, problems)
    usable &= _check_labels(train[label_col], train[id_col], where, problems)
    return train[usable]


def _test_ids(comp: Competition, data: DataDir, sample: pd.DataFrame | None,
              problems: Problems) -> tuple[list[str], pd.DataFrame | None]:
    """Ids to predict: the sample's, checked against test_csv when there is one; and the test
    CSV's rows (None without one)."""
    id_col = comp.id_column
    sample_where = data.describe(comp.sample_submission)
    sample_ids = sample[id_col][check_ids(sample[id_col], sample_where, problems)] \
        if sample is not None else None
    if not (comp.test_csv and data.exists(comp.test_csv)):
        if comp.metadata:
            problems.report(f"metadata: {', '.join(comp.metadata)} must come from a test CSV too, but "
                            f"test_csv ({comp.test_csv}) is not in {data.root}: set test_csv in the yaml.")
        return ([] if sample_ids is None else sample_ids.tolist()), None
    test = _read_table(data, comp.test_csv, [id_col, *comp.metadata], "id_column/metadata", problems)
    if test is None:
        return ([] if sample_ids is None else sample_ids.tolist()), None
    test_where = data.describe(comp.test_csv)
    test_ids = test[id_col][check_ids(test[id_col], test_where, problems)]
    if comp.label_column in test.columns:
        problems.report(f"{test_where} has a {comp.label_column!r} column: test data must be "
                        f"unlabelled. Check that test_csv names the test file, not the training file.")
    if sample_ids is None:
        return test_ids.tolist(), test
    _check_same_ids(test_ids, sample_ids, test_where, sample_where, problems)
    return sample_ids.tolist(), test


def _metadata(frame: pd.DataFrame | None, comp: Competition, ids: list[str]) -> pd.DataFrame | None:
    """The metadata columns of `frame`'s rows for `ids`, in that order (empty cells for an id it
    lacks: the ids check reports it); None without metadata or frame."""
    if not comp.metadata or frame is None:
        return None
    rows = frame.drop_duplicates(comp.id_column).set_index(comp.id_column)[comp.metadata]
    return rows.reindex(ids).fillna("").reset_index(drop=True)


def load_tables(comp: Competition, data: DataDir, problems: Problems | None = None) -> Tables:
    """Read and check train, test and sample CSVs. Collecting, a broken file leaves its part empty."""
    problems = problems or Problems()
    train = _train_table(comp, data, problems)
    sample = _read_table(data, comp.sample_submission, [comp.id_column], "id_column", problems)
    test_ids, test = _test_ids(comp, data, sample, problems)
    train_ids = [] if train is None else train[comp.id_column].tolist()
    train_labels = [] if train is None else train[comp.label_column].tolist()
    classes = sort_classes(train_labels)
    # a multi_label sample has a column per tag, not per label: submission_format checks its
    # columns against the tags of the fitted target (check, train and predict call it)
    if sample is not None and classes and target_settings(comp).kind != MULTI:
        sample_format(sample, comp.id_column, comp.label_column, classes, problems,
                      data.describe(comp.sample_submission))
    return Tables(train_ids=train_ids, train_labels=train_labels, test_ids=test_ids,
                  sample=sample, classes=classes, train_metadata=_metadata(train, comp, train_ids),
                  test_metadata=_metadata(test, comp, test_ids))
