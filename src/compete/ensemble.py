"""Combining members: calibration and ensemble weights fitted on out-of-fold (or hold-out)
outputs, for every target kind (targets.py says what an output cell's likelihood is)."""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from .metrics import decided_score, metric
from .targets import Target

EPS = 1e-7  # probability floor inside the log loss
TEMPERATURES = (0.05, 20.0)  # search range of the calibration temperature
SINGLE_LABEL = Target([])    # the kind of callers that name none


def _likelihood_loss(target: Target, probs: np.ndarray, targets: np.ndarray) -> float:
    observed = np.nan_to_num(target.observed(probs, targets), nan=0.0)
    return float(-np.log(np.clip(observed, EPS, 1)).mean())


def fit_temperature(probs: np.ndarray, targets: np.ndarray, target: Target = SINGLE_LABEL) -> float:
    """The temperature T whose calibration (softmax, or sigmoid, of log-odds / T) has the least
    log loss; 1 for numbers.

    Members trained with label smoothing come out under-confident; without calibration a
    log-loss weight fit would favour a sharper but less accurate member.
    """
    if not target.likelihood:
        return 1.0
    probs = np.nan_to_num(probs, nan=0.0)

    def loss(log_t):
        return _likelihood_loss(target, target.calibrate(probs, float(np.exp(log_t))), targets)

    result = minimize_scalar(loss, bounds=np.log(TEMPERATURES), method="bounded")
    return float(np.exp(result.x)) if result.success and loss(result.x) < loss(0.0) else 1.0


def calibrate(probs: np.ndarray, temperature: float, target: Target = SINGLE_LABEL) -> np.ndarray:
    return target.calibrate(probs, temperature)


def blend(probs: list[np.ndarray], temperatures, weights, target: Target = SINGLE_LABEL) -> np.ndarray:
    """The ensemble's outputs: each member calibrated, then weighted."""
    return combine([target.calibrate(p, t) for p, t in zip(probs, temperatures)], weights)


def blend_run(probs: list[np.ndarray], summary: dict, target: Target = SINGLE_LABEL) -> np.ndarray:
    """`blend` with a finished run's fitted temperatures (none in older runs) and weights."""
    return blend(probs, summary.get("temperatures", [1.0] * len(probs)), summary["weights"], target)


def fit_blend(probs: list[np.ndarray], targets: np.ndarray, target: Target = SINGLE_LABEL,
              metric_name: str | None = None) -> tuple[list[float], np.ndarray]:
    """Per-member temperatures, then weights fitted on the calibrated outputs. With a metric,
    the fitted weights are kept only if the competition's metric (under decisions fitted for
    each) is at least that of equal weights."""
    temperatures = [fit_temperature(p, targets, target) for p in probs]
    calibrated = [target.calibrate(p, t) for p, t in zip(probs, temperatures)]
    weights = fit_weights(calibrated, targets, target)
    equal = np.full(len(probs), 1 / len(probs))
    if metric_name is not None and len(probs) > 1 and not np.allclose(weights, equal):
        sign = 1 if metric(metric_name, target.kind).higher_is_better else -1
        fitted, _ = decided_score(metric_name, target, targets, combine(calibrated, weights))
        plain, _ = decided_score(metric_name, target, targets, combine(calibrated, equal))
        weights = weights if sign * fitted >= sign * plain else equal
    return temperatures, weights


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


def fit_weights(probs: list[np.ndarray], targets: np.ndarray, target: Target = SINGLE_LABEL) -> np.ndarray:
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
        return _simplex_minimum(lambda w: ((w @ values - targets) ** 2).mean(),
                                lambda w: 2 * (values * (w @ values - targets)).mean(axis=1), count)
    observed = [target.observed(np.asarray(p, dtype=np.float64), targets) for p in probs]
    true = np.clip(np.nan_to_num(np.stack(observed), nan=0.0), EPS, 1)  # a diverged member scores like a wrong one
    return _simplex_minimum(lambda w: -np.log(np.maximum(w @ true, EPS)).mean(),
                            lambda w: -(true / np.maximum(w @ true, EPS)).mean(axis=1), count)
