"""What `init` guesses a competition's target to be, from its training labels and its sample
submission: the `target:` setting (a kind of targets.py, with what it needs) and the reason,
both printed for the user to confirm."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .metrics import BINARY, MULTI, REGRESSION, SINGLE
from .tables import sort_classes

DELIMITERS = (" ", ";", "|", ",")  # tried in this order by infer_target
GRADE_WORDS = {"grade", "score", "level", "diagnosis", "rating", "severity", "stage"}  # a label
                                   # column named with one of these words holds grades, not classes
COUNT_WORDS = {"count", "age", "number", "total", "length", "weight"}  # ...or numbers
MAX_GRADES = 11                    # whole numbers spanning more values than this (0-10) are numbers


def _is_number(text: str) -> bool:
    try:
        return np.isfinite(float(text))
    except ValueError:
        return False


def probability_cells(sample, column: str) -> bool:
    """Whether the sample's column holds probabilities: numbers in [0, 1] (0.5, or 0 of a 0/1 task)."""
    values = pd.to_numeric(sample[column], errors="coerce") if column in sample.columns else None
    return values is not None and bool(values.notna().all() and values.between(0, 1).all())


def _tag_delimiter(labels: set[str]) -> str | None:
    """The delimiter whose tags recombine: splitting the labels gives fewer tags than there are
    labels, and some tag is a whole label elsewhere ("haze road" beside "road"): multi_label.
    Class names with spaces give more words than classes ("Ankle boot", "Bag", "Sandal"), even
    when one of their words is a class of its own ("Ankle boot" beside "Boot")."""
    for delimiter in DELIMITERS:
        tags = [set(label.split(delimiter)) - {""} for label in labels]
        several = set().union(*[t for t in tags if len(t) > 1])
        alone = set().union(*[t for t in tags if len(t) == 1])
        if several and len(several | alone) < len(labels) and several & alone:
            return delimiter
    return None


def _words(column: str) -> set[str]:
    """The words of a column name: `Pawpularity_Score`, `pawpularityScore` -> pawpularity, score."""
    return set(re.split(r"[^a-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", column).lower())) - {""}


def _whole_numbers(values: list[int], columns: list[str]) -> tuple[dict, str]:
    """Whole-number labels are class numbers (cifar10's 0-9) unless a column's name says grades
    (APTOS's `diagnosis` 0-4, consecutive and at most MAX_GRADES of them: regression cut into
    grades) or numbers (a count, a score 1-100: regression)."""
    low, high = min(values), max(values)
    graded = set(range(low, high + 1)) == set(values) and high - low < MAX_GRADES
    as_grades = {"kind": REGRESSION, "grades": [low, high]} if graded else {"kind": REGRESSION}
    columns = list(dict.fromkeys(column for column in columns if column))
    named = f"in a column named {' and '.join(map(repr, columns))}"
    if set().union(*map(_words, columns)) & (GRADE_WORDS | COUNT_WORDS):
        return as_grades, f"whole numbers {low}-{high} {named}: {'grades' if graded else 'numbers'}"
    alternative = f"{{kind: regression, grades: [{low}, {high}]}}" if graded else "regression"
    return {"kind": SINGLE}, (f"whole numbers {low}-{high} {named}, taken as class numbers; "
                              f"{'grades' if graded else 'numbers'} would be target: {alternative}")


def infer_target(train_labels: list, sample=None, label_column: str = "") -> tuple[dict, str]:
    """The `target:` setting the training labels and the sample submission (a DataFrame whose
    first column is the id) suggest, {"kind": ...} plus the settings it needs, and why. Tags that
    recombine: multi_label; two labels and one column of probabilities to fill: binary (two
    labels to fill in by name stay single_label: a softmax over two, as any other classes);
    numbers not all whole: regression; whole numbers: see `_whole_numbers`; otherwise single_label."""
    labels = {str(label).strip() for label in train_labels}
    columns = [] if sample is None else [str(c) for c in sample.columns[1:]]
    delimiter = _tag_delimiter(labels)
    if delimiter is not None:
        return ({"kind": MULTI, "delimiter": delimiter},
                f"{delimiter!r}-separated tags that recombine: {len(labels)} different labels")
    if len(labels) == 2 and len(columns) == 1 and probability_cells(sample, columns[0]):
        named = [label for label in labels if label in columns]  # e.g. the column "dog" of cat/dog
        return ({"kind": BINARY, **({"positive": named[0]} if named else {})},
                f"two labels, {' and '.join(sort_classes(labels))}, and one probability column to fill")
    if labels and all(map(_is_number, labels)):
        numbers = [float(label) for label in labels]
        if not all(number.is_integer() for number in numbers):
            return {"kind": REGRESSION}, f"numbers from {min(numbers):g} to {max(numbers):g}"
        return _whole_numbers([int(number) for number in numbers], [label_column, *columns])
    if len(labels) == 2:
        return {"kind": SINGLE}, "two classes filled in by name; a probability column would be target: binary"
    return {"kind": SINGLE}, "one class per image"
