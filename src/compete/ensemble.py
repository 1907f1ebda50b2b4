"""Combining members: calibration and ensemble weights fitted on out-of-fold (or hold-out)
outputs, for every target kind (targets.py says what an output cell's likelihood is), and the
ensemble's score cross-fitted so that no prediction it scores chose the fit.

A temperature belongs to one fold model (calibrated on its own validation outputs) and is
applied to that model's outputs before folds are averaged. Cross-fitting splits the out-of-fold
rows into parts (a k-fold run's folds; HOLDOUT_PARTS stratified parts of a hold-out), fits
temperatures, weights and decisions on all parts but one, applies them to that one, and scores
the held parts' predictions together once. What predict uses is fitted on every row.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from .intervals import Bootstrap, score_intervals
from .metrics import decided_score, metric, submitted
from .splits import group_folds
from .targets import SINGLE_LABEL, Target

EPS = 1e-7  # probability floor inside the log loss
TEMPERATURES = (0.05, 20.0)  # search range of the calibration temperature
HOLDOUT_PARTS = 5            # parts of a hold-out's rows held out in turn by cross-fitting


def _likelihood_loss(target: Target, probs: np.ndarray, truth: np.ndarray) -> float:
    observed = np.nan_to_num(target.observed(probs, truth), nan=0.0)
    return float(-np.log(np.clip(observed, EPS, 1)).mean())


def fit_temperature(probs: np.ndarray, truth: np.ndarray, target: Target = SINGLE_LABEL) -> float:
    """The temperature T whose calibration (softmax, or sigmoid, of log-odds / T) has the least
    log loss; 1 for numbers.

    Members trained with label smoothing come out under-confident; without calibration a
    log-loss weight fit would favour a sharper but less accurate member.
    """
    if not target.likelihood:
        return 1.0
    probs = np.nan_to_num(probs, nan=0.0)

    def loss(log_t):
        return _likelihood_loss(target, target.calibrate(probs, float(np.exp(log_t))), truth)

    result = minimize_scalar(loss, bounds=np.log(TEMPERATURES), method="bounded")
    return float(np.exp(result.x)) if result.success and loss(result.x) < loss(0.0) else 1.0


def metric_weights(calibrated: list[np.ndarray], truth: np.ndarray, target: Target,
                   metric_name: str | None) -> np.ndarray:
    """Log-loss-fitted weights; with a metric, kept only if the competition's metric (under
    decisions fitted for each) is at least that of equal weights."""
    weights = fit_weights(calibrated, truth, target)
    equal = np.full(len(calibrated), 1 / len(calibrated))
    if metric_name is not None and len(calibrated) > 1 and not np.allclose(weights, equal):
        sign = 1 if metric(metric_name, target.kind).higher_is_better else -1
        fitted, _ = decided_score(metric_name, target, truth, combine(calibrated, weights))
        plain, _ = decided_score(metric_name, target, truth, combine(calibrated, equal))
        weights = weights if sign * fitted >= sign * plain else equal
    return weights


def fold_temperatures(probs: np.ndarray, targets: np.ndarray, folds: np.ndarray, count: int,
                      target: Target = SINGLE_LABEL) -> list[float]:
    """One temperature per fold model 0..count-1 (`folds`: the fold model that predicted each
    row), fitted on that model's own rows; a fold model with no rows here gets the mean of the
    others' temperatures, as does a model refit on all images (`fold_temperature`)."""
    fitted = {int(f): fit_temperature(probs[folds == f], targets[folds == f], target) for f in np.unique(folds)}
    mean = float(np.mean(list(fitted.values())))
    return [fitted.get(f, mean) for f in range(count)]


def fold_temperature(temperatures: list[float], fold: int | None) -> float:
    """One fold model's temperature among its member's; a model refit on all images (fold
    None) has no validation outputs of its own and takes the mean of its member's."""
    return float(np.mean(temperatures)) if fold is None else temperatures[fold]


def calibrate_rows(probs: np.ndarray, folds: np.ndarray, temperatures: list[float],
                   target: Target = SINGLE_LABEL) -> np.ndarray:
    """Out-of-fold outputs, each row calibrated by the temperature of the fold model that
    predicted it (rows of fold -1, never validated, stay as they are)."""
    calibrated = np.array(probs, copy=True)
    for f in np.unique(folds[folds >= 0]):
        calibrated[folds == f] = target.calibrate(probs[folds == f], temperatures[f])
    return calibrated


@dataclass
class Ensemble:
    """What is fitted on out-of-fold rows: per member a temperature per fold model, the
    members' weights, and the decisions (thresholds, cut-points) on their blend."""
    temperatures: list[list[float]]
    weights: np.ndarray
    decisions: dict

    def outputs(self, oof: list[np.ndarray], folds: np.ndarray, target: Target) -> np.ndarray:
        calibrated = [calibrate_rows(p, folds, t, target) for p, t in zip(oof, self.temperatures)]
        return combine(calibrated, self.weights)


def fit_ensemble(oof: list[np.ndarray], targets: np.ndarray, folds: np.ndarray, count: int,
                 target: Target, metric_name: str) -> Ensemble:
    """Temperatures per fold model, weights on the calibrated rows, decisions on their blend."""
    temperatures = [fold_temperatures(p, targets, folds, count, target) for p in oof]
    calibrated = [calibrate_rows(p, folds, t, target) for p, t in zip(oof, temperatures)]
    weights = metric_weights(calibrated, targets, target, metric_name)
    decisions = target.fit_decisions(metric_name, targets, combine(calibrated, weights))
    return Ensemble(temperatures, weights, decisions)


def crossfit_parts(folds: np.ndarray, strata: np.ndarray, seed: int,
                   groups: np.ndarray | None = None) -> np.ndarray:
    """The part of each out-of-fold row that cross-fitting holds out in turn: its fold in a
    k-fold run; of a hold-out's rows, HOLDOUT_PARTS parts stratified like the splits, each group
    whole, drawn with the run's seed. All zeros (nothing to cross-fit) below two rows."""
    if len(np.unique(folds)) > 1:
        return folds
    groups = np.arange(len(folds)) if groups is None else groups
    count = min(HOLDOUT_PARTS, len(np.unique(groups)), np.unique(strata, return_counts=True)[1].max(initial=0))
    return group_folds(strata, groups, count, seed) if count > 1 else np.zeros(len(folds), np.int64)


@dataclass
class CrossFit:
    """Out-of-fold rows as cross-fitting predicts them, in the rows' order: each row's ensemble
    outputs and its labels under the decisions of the one fit that did not see its part."""
    outputs: np.ndarray
    decided: np.ndarray

    def scored(self, metric_name: str, target: Target) -> np.ndarray:
        """What the metric scores: the outputs' probabilities, or the cross-fitted decisions."""
        return target.probabilities(self.outputs) if metric(metric_name, target.kind).on_probabilities \
            else self.decided

    def score(self, metric_name: str, target: Target, truth: np.ndarray) -> float:
        """The metric under the cross-fitted decisions (on probabilities: of the outputs)."""
        return float(metric(metric_name, target.kind).function(truth, self.scored(metric_name, target)))


def cross_fitted(fit, oof: list[np.ndarray], targets: np.ndarray, folds: np.ndarray,
                 parts: np.ndarray, target: Target) -> CrossFit | None:
    """Predictions that no fit saw: for each part, `fit(oof, targets, folds)` on the other
    parts' rows (an Ensemble) is applied to this part's rows. None with fewer than two parts.
    Its metric (CrossFit.score) scores the held parts' predictions together once."""
    if len(np.unique(parts)) < 2:
        return None
    outputs, decided = None, None
    for part in np.unique(parts):
        held, rest = parts == part, parts != part
        fitted = fit([p[rest] for p in oof], targets[rest], folds[rest])
        part_outputs = fitted.outputs([p[held] for p in oof], folds[held], target)
        part_decided = target.decide(part_outputs, fitted.decisions)
        if outputs is None:
            outputs = np.zeros((len(parts), *part_outputs.shape[1:]), part_outputs.dtype)
            decided = np.zeros((len(parts), *part_decided.shape[1:]), part_decided.dtype)
        outputs[held], decided[held] = part_outputs, part_decided
    return CrossFit(outputs, decided)


def fits_decisions(target: Target, metric_name: str) -> bool:
    """Whether the kind fits decisions for this metric (one scored on labels, not probabilities)."""
    return bool(target.default_decisions()) and not metric(metric_name, target.kind).on_probabilities


def member_score(probs: np.ndarray, truth: np.ndarray, parts: np.ndarray, target: Target,
                 metric_name: str) -> float | None:
    """One member's metric on its out-of-fold outputs as they are; where the kind fits
    decisions for the metric (thresholds, cut-points), those are cross-fitted over `parts`."""
    scored = member_scored(probs, truth, parts, target, metric_name)
    return None if scored is None else float(metric(metric_name, target.kind).function(truth, scored))


def member_scored(probs: np.ndarray, truth: np.ndarray, parts: np.ndarray, target: Target,
                  metric_name: str) -> np.ndarray | None:
    """What a member's score scores: its outputs as the metric takes them, or its decisions
    cross-fitted over `parts` where the kind fits them for the metric (None: under two parts)."""
    if not fits_decisions(target, metric_name):
        return submitted(metric_name, target, probs)
    folds = np.zeros(len(truth), np.int64)

    def fit(oof, fit_targets, _):
        return Ensemble([[1.0]], np.ones(1), target.fit_decisions(metric_name, fit_targets, oof[0]))
    crossed = cross_fitted(fit, [probs], truth, folds, parts, target)
    return None if crossed is None else crossed.scored(metric_name, target)


def add_intervals(summary: dict, oof, crossed: CrossFit | None, target: Target,
                  bootstrap: Bootstrap) -> None:
    """A 95% interval (`score_interval`) beside every score of the summary, each member's and the
    ensemble's: a bootstrap over the validated rows (`oof`: their outputs, truth and parts),
    stratified by class and keeping groups whole, the same resamples for all (intervals.py)."""
    metric_name, truth = summary["metric"], oof.targets
    scored = [member_scored(p, truth, oof.parts, target, metric_name) for p in oof.outputs] if len(truth) else []
    scored.append(crossed.scored(metric_name, target) if crossed is not None else None)
    present = [i for i, s in enumerate(scored) if s is not None]
    found = score_intervals(metric_name, target, truth, [scored[i] for i in present], bootstrap) \
        if present else []
    intervals = dict(zip(present, found))
    for m, row in enumerate(summary["members"]):
        row["score_interval"] = intervals.get(m)
    summary["score_interval"] = intervals.get(len(scored) - 1)


def blend_run(fold_outputs: list[list[tuple[int | None, np.ndarray]]], summary: dict,
              target: Target = SINGLE_LABEL) -> np.ndarray:
    """A finished run's ensemble of its members' outputs on the same images: per member a
    (fold, outputs) pair per fold model (fold None: refit on all images), each calibrated by its
    own temperature before the folds are averaged, then the members weighted."""
    members = [_average_models([(f, target.calibrate(p, fold_temperature(temperatures, f))) for f, p in outputs])
               for outputs, temperatures in zip(fold_outputs, summary["temperatures"])]
    return combine(members, summary["weights"])


def blend_per_fold(fold_outputs: list[list[tuple[int | None, np.ndarray]]], summary: dict,
                   target: Target = SINGLE_LABEL) -> np.ndarray | None:
    """The run's ensemble once per fold: fold f's model of every member, calibrated by its own
    temperature, the members weighted as in blend_run ((folds, images, outputs), float32). A
    teacher's fold f never trained on fold f's images (teaching.py). None when a weighted member
    has no model of some fold here (predicted by its refit alone, or cut by a time limit)."""
    per_fold = []
    for f in range(summary["folds"]):
        members = []
        for outputs, temperatures, weight in zip(fold_outputs, summary["temperatures"], summary["weights"]):
            found = [p for fold, p in outputs if fold == f]
            if not found and weight > 0:
                return None
            members.append(target.calibrate(found[0], fold_temperature(temperatures, f)) if found else outputs[0][1])  # weight 0: unused
        per_fold.append(combine(members, summary["weights"]).astype(np.float32))
    return np.stack(per_fold)


def _average_models(outputs: list[tuple[int | None, np.ndarray]]) -> np.ndarray:
    """One member's models averaged: its fold models equally, and a model refit on all images
    (fold None) half and half with their average (train --refit with refit_blend)."""
    folds = [p for f, p in outputs if f is not None]
    parts = ([np.mean(folds, 0)] if folds else []) + [p for f, p in outputs if f is None]
    return np.mean(parts, 0)


def blend_oof(oof: list[np.ndarray], folds: np.ndarray, summary: dict,
              target: Target = SINGLE_LABEL) -> np.ndarray:
    """A finished run's ensemble of its members' out-of-fold outputs, each row calibrated by
    the temperature of the fold model that predicted it (`folds`)."""
    return combine([calibrate_rows(p, folds, t, target) for p, t in zip(oof, summary["temperatures"])],
                   summary["weights"])


def combine(probs: list[np.ndarray], weights) -> np.ndarray:
    """Weighted average of members' (N, outputs) arrays. Members of weight zero are left
    out, not multiplied by zero: a diverged member's NaNs would survive that."""
    weights = np.asarray(weights, dtype=np.float64)
    used = np.flatnonzero(weights > 0)
    return np.tensordot(weights[used] / weights[used].sum(), np.stack([probs[i] for i in used]), axes=1)


def _simplex_minimum(loss, gradient, count: int) -> np.ndarray:
    """Non-negative weights summing to one that minimize the convex `loss`; equal weights when
    the solver fails or does not beat them."""
    equal = np.full(count, 1.0 / count)
    result = minimize(loss, equal, jac=gradient, method="SLSQP", bounds=[(0.0, 1.0)] * count,
                      constraints={"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(count)},
                      options={"ftol": 1e-12, "maxiter": 500})
    weights = np.clip(result.x, 0, None)
    if not result.success or not np.isfinite(weights).all() or weights.sum() == 0:
        return equal
    weights /= weights.sum()
    return weights if loss(weights) <= loss(equal) else equal


def fit_weights(probs: list[np.ndarray], truth: np.ndarray, target: Target = SINGLE_LABEL) -> np.ndarray:
    """Non-negative weights summing to one that minimize the log loss of the combination (the
    squared error, for numbers).

    The log loss of a mixture only needs each member's probability of what happened in each
    cell (the true class; a tag's presence or absence), and it is convex in the weights, as is
    the squared error, so a constrained solver with the exact gradient finds the optimum.
    """
    count = len(probs)
    if count == 1:
        return np.ones(1)
    if not target.likelihood:  # numbers
        values = np.nan_to_num(np.stack([np.asarray(p, dtype=np.float64)[:, 0] for p in probs]), nan=1e6)
        return _simplex_minimum(lambda w: ((w @ values - truth) ** 2).mean(),
                                lambda w: 2 * (values * (w @ values - truth)).mean(axis=1), count)
    observed = [target.observed(np.asarray(p, dtype=np.float64), truth) for p in probs]
    true = np.clip(np.nan_to_num(np.stack(observed), nan=0.0), EPS, 1)  # a diverged member scores like a wrong one
    return _simplex_minimum(lambda w: -np.log(np.maximum(w @ true, EPS)).mean(),
                            lambda w: -(true / np.maximum(w @ true, EPS)).mean(axis=1), count)
