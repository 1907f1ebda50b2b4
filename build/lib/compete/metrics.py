"""Competition metrics by name, each as the competition sites define it: the function, its
direction, whether it scores probabilities or decided labels, and the target kinds it fits.

Predictions come in the kind's form (targets.py turns model outputs into it): probabilities are
(N, classes) for single_label, (N,) of the positive class for binary, (N, tags) for multi_label;
labels are class indices, 0/1 (a 0/1 matrix for tags), or numbers for regression. `score` takes
a target kind and its model outputs, and scores them as the competition would.

Besides the fixed names, `top<K>_accuracy`, `f<BETA>_macro` (every class or tag's F-beta,
averaged), `f<BETA>_samples` (each image's F-beta over its tags, averaged: Planet's F2) and
`f<BETA>` (the positive class of a binary target) resolve on first use.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from sklearn.metrics import cohen_kappa_score, roc_auc_score, top_k_accuracy_score

from .errors import PipelineError

KAGGLE_EPS = 1e-15  # Kaggle clips probabilities to [1e-15, 1 - 1e-15]: a sure wrong answer costs 34.5 nats
SINGLE, BINARY, MULTI, REGRESSION = "single_label", "binary", "multi_label", "regression"
TOP_K = re.compile(r"^top(\d+)_accuracy$")
F_BETA = re.compile(r"^f(\d+(?:\.\d+)?)(?:_(macro|samples))?$")


@dataclass(frozen=True)
class Metric:
    function: Callable[[np.ndarray, np.ndarray], float]  # (targets, predictions) -> value
    higher_is_better: bool
    on_probabilities: bool   # scored on probabilities (a submission must hold them), else on labels
    kinds: tuple             # target kinds it applies to


def log_loss(targets: np.ndarray, probs: np.ndarray) -> float:
    """Kaggle's log loss: probabilities clipped to [eps, 1 - eps]. Class probabilities (N, C) are
    rescaled to sum to one per row; one probability per cell ((N,) or (N, tags)) scores each cell
    as a yes/no outcome, averaged (column-wise mean for tags)."""
    probs = np.clip(np.asarray(probs, dtype=np.float64), KAGGLE_EPS, 1 - KAGGLE_EPS)
    targets = np.asarray(targets)
    if probs.ndim == 2 and targets.ndim == 1:
        probs = probs / probs.sum(1, keepdims=True)
        return float(-np.log(probs[np.arange(len(targets)), targets]).mean())
    return float(-np.where(targets > 0, np.log(probs), np.log1p(-probs)).mean())


def roc_auc(targets: np.ndarray, probs: np.ndarray) -> float:
    """Area under the ROC curve: binary; mean over the tags (columns) that have both outcomes in
    `targets`; one-vs-rest macro for class probabilities. NaN when no column has both outcomes."""
    targets, probs = np.asarray(targets), np.asarray(probs)
    if probs.ndim == 2 and targets.ndim == 1:  # single_label
        present = np.unique(targets)
        if len(present) < 2:
            return float("nan")
        return float(np.mean([roc_auc_score(targets == c, probs[:, c]) for c in present]))
    targets, probs = targets.reshape(len(targets), -1), probs.reshape(len(probs), -1)
    scored = [c for c in range(targets.shape[1]) if 0 < targets[:, c].sum() < len(targets)]
    if not scored:
        return float("nan")
    return float(np.mean([roc_auc_score(targets[:, c], probs[:, c]) for c in scored]))


def f_beta_counts(tp, fp, fn, beta: float) -> np.ndarray:
    """F-beta from counts; 0 where nothing is true and nothing predicted (scikit-learn's
    zero_division=0)."""
    b2 = beta * beta
    denominator = (1 + b2) * tp + b2 * fn + fp
    return np.divide((1 + b2) * tp, denominator, out=np.zeros(np.shape(tp)), where=denominator > 0)


def indicators(targets: np.ndarray, predicted: np.ndarray, average: str):
    """Truth and decisions as boolean (N, columns): tag matrices as they are; the positive class
    of binary 0/1 labels; class indices one-hot over the classes present on either side (as
    scikit-learn's macro average counts them)."""
    targets, predicted = np.asarray(targets), np.asarray(predicted)
    if targets.ndim == 2:
        return targets.astype(bool), predicted.astype(bool)
    if average == "binary":
        return targets[:, None] == 1, predicted[:, None] == 1
    present = np.union1d(targets, predicted)
    return targets[:, None] == present, predicted[:, None] == present


def f_beta(targets: np.ndarray, predicted: np.ndarray, beta: float, average: str) -> float:
    """F-beta of decisions: "macro" averages each column's (every tag, present or not; every class
    seen on either side), "samples" each row's, "binary" is the positive class's."""
    truth, guess = indicators(targets, predicted, average)
    axis = 1 if average == "samples" else 0
    scores = f_beta_counts((truth & guess).sum(axis), (~truth & guess).sum(axis),
                           (truth & ~guess).sum(axis), beta)
    return float(scores.mean())


def quadratic_weighted_kappa(targets: np.ndarray, predicted: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights over the integer range of both; 0 where undefined
    (every rating the same on both sides)."""
    targets, predicted = np.rint(targets).astype(int), np.rint(predicted).astype(int)
    grades = np.arange(min(targets.min(), predicted.min()), max(targets.max(), predicted.max()) + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "undefined": the 0.0 below is the answer
        return float(cohen_kappa_score(targets, predicted, labels=grades, weights="quadratic",
                                       replace_undefined_by=0.0))


def _fbeta_metric(beta: float, average: str | None) -> Metric:
    kinds = {None: (BINARY,), "samples": (MULTI,), "macro": (SINGLE, BINARY, MULTI)}[average]
    return Metric(lambda y, p: f_beta(y, p, beta, average or "binary"), True, False, kinds)


class Metrics(dict):
    """name -> Metric; builds top-k and F-beta entries from their names on first lookup."""

    def __missing__(self, name: str):
        if match := TOP_K.match(name):
            k = int(match[1])
            entry = Metric(lambda y, p: top_k_accuracy_score(y, p, k=k, labels=np.arange(p.shape[1])),
                           True, True, (SINGLE,))
        elif match := F_BETA.match(name):
            entry = _fbeta_metric(float(match[1]), match[2])
        else:
            raise KeyError(name)
        self[name] = entry
        return entry


METRICS = Metrics({
    "accuracy": Metric(lambda y, p: float(np.mean(np.asarray(y) == np.asarray(p))), True, False, (SINGLE, BINARY)),
    "log_loss": Metric(log_loss, False, True, (SINGLE, BINARY, MULTI)),
    "roc_auc": Metric(roc_auc, True, True, (SINGLE, BINARY, MULTI)),
    "quadratic_weighted_kappa": Metric(quadratic_weighted_kappa, True, False, (SINGLE, REGRESSION)),
    "rmse": Metric(lambda y, p: float(np.sqrt(np.mean((np.asarray(y) - p) ** 2))), False, False, (REGRESSION,)),
    "mae": Metric(lambda y, p: float(np.mean(np.abs(np.asarray(y) - p))), False, False, (REGRESSION,)),
})


def metric_entry(name: str) -> Metric:
    """The named metric; refused when unknown (the yaml is checked with this at load)."""
    try:
        return METRICS[name]
    except KeyError:
        raise PipelineError(f"Unknown metric '{name}'. Known: {', '.join(METRICS)}, top<K>_accuracy, "
                            f"f<BETA>_macro, f<BETA>_samples, f<BETA>.") from None


def metric(name: str, kind: str = SINGLE) -> Metric:
    """The named metric, checked to apply to `kind`."""
    entry = metric_entry(name)
    if kind not in entry.kinds:
        raise PipelineError(f"Metric '{name}' does not score a {kind} target (it scores "
                            f"{' or '.join(entry.kinds)}): fix metric or target in the competition yaml.")
    return entry


def check_metric(metric_name: str, target) -> None:
    """Refuse a metric that cannot score this target (before any training)."""
    metric(metric_name, target.kind)
    if metric_name == "quadratic_weighted_kappa" and target.kind == REGRESSION and not target.grades:
        raise PipelineError("quadratic_weighted_kappa scores whole grades: give the target its "
                            "grades in the competition yaml, e.g. target: {kind: regression, grades: [0, 4]}.")


def score(metric_name: str, target, targets: np.ndarray, outputs: np.ndarray,
          decisions: dict | None = None) -> float:
    """The competition's metric of `outputs` (the kind's activated model outputs): on their
    probabilities, or on the decisions they lead to (default decisions unless given)."""
    return float(metric(metric_name, target.kind).function(targets, submitted(metric_name, target, outputs, decisions)))


def submitted(metric_name: str, target, outputs: np.ndarray, decisions: dict | None = None) -> np.ndarray:
    """What the metric scores of `outputs`: their probabilities, or the decisions they lead to
    (default decisions unless given)."""
    if metric(metric_name, target.kind).on_probabilities:
        return target.probabilities(outputs)
    return target.decide(outputs, target.default_decisions() if decisions is None else decisions)


def decided_score(metric_name: str, target, targets: np.ndarray,
                  outputs: np.ndarray) -> tuple[float, dict]:
    """Decisions fitted on these (out-of-fold) outputs, and the metric under them."""
    decisions = target.fit_decisions(metric_name, targets, outputs)
    return score(metric_name, target, targets, outputs, decisions), decisions
