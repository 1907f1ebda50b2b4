"""Target kinds: what a label cell holds, what the model outputs for it, and how those outputs
become what a metric scores and a submission holds.

    single_label  one class per image: softmax over the classes (the pipeline's first kind)
    binary        two classes: one sigmoid output, the probability of the positive class
    multi_label   any tags per image, separated by a delimiter: one sigmoid per tag
    regression    one number: trained on the standardized value; optionally cut into grades

Each kind turns label strings into a target array (`encode`), logits into outputs (`activate`:
probabilities or numbers), outputs into decisions (`decide`, with the thresholds or cut-points
that `fit_decisions` fits out of fold), and gives the strata that splits and the balanced sampler
keep in proportion. A kind with its fitted classes is saved in the run's config.json.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from scipy.special import expit

from .config import PipelineError, TargetSettings
from .decisions import apply_cuts, fit_cuts, fit_thresholds, metric_objective
from .metrics import BINARY, MULTI, REGRESSION, SINGLE, metric
from .tables import sort_classes

PROBABILITY_FLOOR = 1e-7   # keeps logits of calibrated probabilities finite
REGRESSION_STRATA = 10     # quantile bins that stratify splits of ungraded numbers


@dataclass
class Target:
    """A target kind with what it learned from the training labels; as it stands, single_label
    (the other kinds override what differs)."""
    classes: list[str]      # what each output means: classes ([negative, positive] for binary), tags

    kind = SINGLE
    likelihood = True       # outputs are probabilities: calibration and weights fit their log loss

    @property
    def outputs(self) -> int:
        """Width of the model's last layer."""
        return len(self.classes)

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}

    def encode(self, labels: list[str]) -> np.ndarray:
        index = {label: i for i, label in enumerate(self.classes)}
        return np.array([index[label] for label in labels], dtype=np.int64)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(1)

    def hits(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """How many of a batch are right under default decisions (the train_acc of the log)."""
        return (logits.argmax(1) == targets).sum()

    def strata(self, targets: np.ndarray) -> np.ndarray:
        """One integer group per image, kept in proportion by splits and the balanced sampler."""
        return targets

    def counts(self, targets: np.ndarray) -> dict[str, int]:
        """Images per class (per tag, per grade): the class balance."""
        return dict(zip(self.classes, np.bincount(targets, minlength=len(self.classes)).tolist()))

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """Outputs in the form metrics on probabilities take."""
        return outputs

    def observed(self, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """The probability each output cell gave to what happened (its likelihood)."""
        return outputs[np.arange(len(targets)), targets]

    def calibrate(self, outputs: np.ndarray, temperature: float) -> np.ndarray:
        if temperature == 1.0:
            return outputs
        logits = np.log(np.clip(outputs, PROBABILITY_FLOOR, 1)) / temperature
        logits -= logits.max(1, keepdims=True)
        return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)

    def default_decisions(self) -> dict:
        return {}

    def decide(self, outputs: np.ndarray, decisions: dict) -> np.ndarray:
        """Labels in the form metrics on labels take (and the submission writes)."""
        return outputs.argmax(1)

    def fit_decisions(self, metric_name: str, targets: np.ndarray, outputs: np.ndarray) -> dict:
        return {}

    def label_cells(self, decided: np.ndarray) -> np.ndarray:
        """Decisions as a submission's label cells."""
        return np.asarray(self.classes, dtype=object)[decided]

    def check_cells(self, cells, as_probability: bool) -> np.ndarray:
        """Which label cells of a written submission are not valid for this target."""
        return ~cells.astype(str).isin(set(self.classes)).to_numpy()


@dataclass
class Sigmoid(Target):
    """Kinds whose every output is a yes/no probability (binary, multi_label)."""

    def activate(self, logits):
        return logits.sigmoid()

    def calibrate(self, outputs, temperature):
        if temperature == 1.0:
            return outputs
        outputs = np.clip(outputs, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
        return expit(np.log(outputs / (1 - outputs)) / temperature)

    def default_decisions(self):
        return {"thresholds": [0.5] * self.outputs}

    def fit_decisions(self, metric_name, targets, outputs):
        """The probability thresholds (one per output) that maximize a metric on labels."""
        if metric(metric_name, self.kind).on_probabilities:
            return {}
        objective = metric_objective(metric_name, self.kind, targets,
                                     lambda thresholds: self.decide(outputs, {"thresholds": thresholds}))
        return {"thresholds": fit_thresholds(self.outputs, objective)}


@dataclass
class Binary(Sigmoid):
    """classes = [negative, positive]; one output, the positive class's probability."""
    kind = BINARY

    @property
    def outputs(self) -> int:
        return 1

    def hits(self, logits, targets):
        return ((logits[:, 0] > 0).long() == targets).sum()

    def probabilities(self, outputs):
        return outputs[:, 0]

    def observed(self, outputs, targets):
        return np.where(targets == 1, outputs[:, 0], 1 - outputs[:, 0])

    def decide(self, outputs, decisions):
        return (outputs[:, 0] >= decisions.get("thresholds", [0.5])[0]).astype(np.int64)

    def check_cells(self, cells, as_probability):
        if not as_probability:
            return super().check_cells(cells, False)
        values = np.asarray(cells.to_numpy(), dtype=np.float64)
        return ~(np.isfinite(values) & (values >= 0) & (values <= 1))


@dataclass
class MultiLabel(Sigmoid):
    """classes = the tags; one sigmoid output per tag."""
    delimiter: str = " "
    kind = MULTI

    def tags_of(self, label: str) -> list[str]:
        return [tag.strip() for tag in label.split(self.delimiter) if tag.strip()]

    def encode(self, labels):
        index = {tag: i for i, tag in enumerate(self.classes)}
        matrix = np.zeros((len(labels), len(self.classes)), dtype=np.float32)
        for row, label in enumerate(labels):
            matrix[row, [index[tag] for tag in self.tags_of(label)]] = 1
        return matrix

    def hits(self, logits, targets):
        return ((logits > 0) == (targets > 0.5)).all(1).sum()

    def strata(self, targets):
        """Each image's rarest tag (images without tags: a group of their own)."""
        frequency = np.where(targets > 0, targets.sum(0), np.inf)
        return np.where(targets.any(1), frequency.argmin(1), targets.shape[1])

    def counts(self, targets):
        return dict(zip(self.classes, targets.sum(0).astype(int).tolist()))

    def observed(self, outputs, targets):
        return np.where(targets > 0, outputs, 1 - outputs).ravel()

    def decide(self, outputs, decisions):
        """Tags over their thresholds; every image gets at least its most probable tag (every
        training image has one)."""
        thresholds = np.asarray(decisions.get("thresholds", [0.5] * outputs.shape[1]))
        chosen = outputs >= thresholds
        none = ~chosen.any(1)
        chosen[none, outputs[none].argmax(1)] = True
        return chosen.astype(np.int64)

    def label_cells(self, decided):
        tags = np.asarray(self.classes, dtype=object)
        return np.array([self.delimiter.join(tags[row > 0]) for row in decided], dtype=object)

    def check_cells(self, cells, as_probability):
        known = set(self.classes)
        return np.array([not self.tags_of(cell) or not set(self.tags_of(cell)) <= known
                         for cell in cells.astype(str)])


@dataclass
class Regression(Target):
    """One output: the number, standardized while training (center, scale)."""
    center: float = 0.0
    scale: float = 1.0
    grades: list | None = None  # [lowest, highest]: decisions cut the number into these grades
    kind = REGRESSION
    likelihood = False  # numbers: not calibrated; ensemble weights fit the squared error

    @property
    def outputs(self) -> int:
        return 1

    def encode(self, labels):
        return np.array([float(label) for label in labels], dtype=np.float32)

    def activate(self, logits):
        return logits * self.scale + self.center

    def standardize(self, targets: torch.Tensor) -> torch.Tensor:
        return (targets - self.center) / self.scale

    def hits(self, logits, targets):
        return ((self.activate(logits[:, 0]) - targets).abs() < 0.5).sum()

    def strata_edges(self, targets: np.ndarray) -> np.ndarray:
        """Bounds of the strata: between grades, or the numbers' quantiles."""
        if self.grades:
            return np.arange(*self.grades) + 0.5
        return np.unique(np.quantile(targets, np.linspace(0, 1, REGRESSION_STRATA + 1)[1:-1]))

    def strata(self, targets):
        return np.searchsorted(self.strata_edges(targets), targets, side="right")

    def counts(self, targets):
        if not self.grades:
            return {}
        grades = np.bincount(self.strata(targets), minlength=self.grades[1] - self.grades[0] + 1)
        return {str(self.grades[0] + g): int(n) for g, n in enumerate(grades)}

    def calibrate(self, outputs, temperature):
        return outputs

    def default_decisions(self):
        return {"cuts": [g + 0.5 for g in range(*self.grades)]} if self.grades else {}

    def decide(self, outputs, decisions):
        if not self.grades:
            return outputs[:, 0].astype(np.float64)
        cuts = decisions.get("cuts")
        return apply_cuts(outputs[:, 0], self.grades[0], self.default_decisions()["cuts"] if cuts is None else cuts)

    def fit_decisions(self, metric_name, targets, outputs):
        if not self.grades:
            return {}
        objective = metric_objective(metric_name, self.kind, targets,
                                     lambda cuts: self.decide(outputs, {"cuts": cuts}))
        return {"cuts": fit_cuts(*self.grades, objective)}

    def label_cells(self, decided):
        return decided

    def check_cells(self, cells, as_probability):
        values = np.asarray(cells.to_numpy(), dtype=np.float64)
        bad = ~np.isfinite(values)
        if self.grades:
            bad |= (values < self.grades[0]) | (values > self.grades[1]) | (values != np.rint(values))
        return bad


KINDS = {kind.kind: kind for kind in (Target, Binary, MultiLabel, Regression)}


def target_from_dict(values: dict) -> Target:
    """A target saved by `to_dict` (config.json of a run)."""
    values = dict(values)
    return KINDS[values.pop("kind")](**values)


def target_of_run(config: dict) -> Target:
    """The target a run was trained for, from its config.json (runs from before kinds: single_label)."""
    return target_from_dict(config["target"]) if "target" in config else Target(config["classes"])


def _binary_classes(settings: TargetSettings, labels: list[str]) -> list[str]:
    classes = sort_classes(labels)
    if len(classes) != 2:
        raise PipelineError(f"target binary needs exactly two labels; the training labels have "
                            f"{len(classes)} ({', '.join(map(repr, classes[:5]))}). Use single_label "
                            f"(or multi_label) in the competition yaml.")
    positive = settings.positive if settings.positive is not None else classes[1]
    if positive not in classes:
        raise PipelineError(f"target positive {positive!r} is not one of the training labels "
                            f"{classes[0]!r}, {classes[1]!r}: fix it in the competition yaml.")
    return [classes[0] if positive == classes[1] else classes[1], positive]


def _regression(settings: TargetSettings, labels: list[str]) -> Regression:
    try:
        values = np.array([float(label) for label in labels], dtype=np.float64)
    except ValueError as error:
        raise PipelineError(f"target regression needs numbers as labels: {error}. Fix the label "
                            f"column, or the target kind in the competition yaml.") from None
    if not np.isfinite(values).all():
        raise PipelineError("target regression: some labels are not finite numbers (inf, nan): fix them.")
    if settings.grades:
        low, high = settings.grades
        off = values[(values < low) | (values > high) | (values != np.rint(values))]
        if len(off):
            raise PipelineError(f"target grades {settings.grades}: {len(off)} label(s) are not whole "
                                f"grades in that range (e.g. {off[0]:g}): fix grades or the labels.")
    return Regression([], float(values.mean()), float(values.std()) or 1.0, settings.grades)


def fit_target(settings: TargetSettings, labels: list[str]) -> Target:
    """The kind `settings` names, with the classes (tags, scale) of the training labels."""
    if settings.kind == BINARY:
        return Binary(_binary_classes(settings, labels))
    if settings.kind == MULTI:
        tags = MultiLabel([], settings.delimiter)
        tags.classes = sort_classes({tag for label in labels for tag in tags.tags_of(label)})
        return tags
    if settings.kind == REGRESSION:
        return _regression(settings, labels)
    return Target(sort_classes(labels))


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
