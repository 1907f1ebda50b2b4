"""Combining members: ensemble weights fitted on out-of-fold (or hold-out) probabilities."""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax, softmax

EPS = 1e-7  # probability floor inside the log loss


TEMPERATURES = (0.05, 20.0)  # search range of the calibration temperature


def fit_temperature(probs: np.ndarray, targets: np.ndarray) -> float:
    """The temperature T for which softmax(log(p) / T) has the least log loss.

    Members trained with label smoothing come out under-confident; without calibration a
    log-loss weight fit would favour a sharper but less accurate member.
    """
    logp = np.log(np.clip(np.nan_to_num(probs, nan=0.0), EPS, 1))
    rows = np.arange(len(targets))

    def loss(log_t):
        return -log_softmax(logp / np.exp(log_t), axis=1)[rows, targets].mean()

    result = minimize_scalar(loss, bounds=np.log(TEMPERATURES), method="bounded")
    return float(np.exp(result.x)) if result.success and loss(result.x) < loss(0.0) else 1.0


def calibrate(probs: np.ndarray, temperature: float) -> np.ndarray:
    if temperature == 1.0:
        return probs
    return softmax(np.log(np.clip(probs, EPS, 1)) / temperature, axis=1)


def blend(probs: list[np.ndarray], temperatures, weights) -> np.ndarray:
    """The ensemble's probabilities: each member calibrated, then weighted."""
    return combine([calibrate(p, t) for p, t in zip(probs, temperatures)], weights)


def fit_blend(probs: list[np.ndarray], targets: np.ndarray) -> tuple[list[float], np.ndarray]:
    """Per-member temperatures, then weights fitted on the calibrated probabilities."""
    temperatures = [fit_temperature(p, targets) for p in probs]
    weights = fit_weights([calibrate(p, t) for p, t in zip(probs, temperatures)], targets)
    return temperatures, weights


def combine(probs: list[np.ndarray], weights) -> np.ndarray:
    """Weighted average of members' (N, classes) probabilities. Members of weight zero are left
    out, not multiplied by zero: a diverged member's NaNs would survive that."""
    weights = np.asarray(weights, dtype=np.float64)
    used = np.flatnonzero(weights > 0)
    return np.tensordot(weights[used] / weights[used].sum(), np.stack([probs[i] for i in used]), axes=1)


def fit_weights(probs: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to one that minimize the log loss of the combination.

    The log loss of a mixture only needs each member's probability of the true class, and it is
    convex in the weights, so a constrained solver with the exact gradient finds the optimum.
    Falls back to equal weights when the fit fails or does not beat them.
    """
    count = len(probs)
    equal = np.full(count, 1.0 / count)
    if count == 1:
        return equal
    rows = np.arange(len(targets))
    true = np.stack([np.asarray(p, dtype=np.float64)[rows, targets] for p in probs])  # (members, N)
    true = np.clip(np.nan_to_num(true, nan=0.0), EPS, 1)  # a diverged member scores like a wrong one

    def loss(weights):
        return -np.log(np.maximum(weights @ true, EPS)).mean()

    def gradient(weights):
        return -(true / np.maximum(weights @ true, EPS)).mean(axis=1)

    result = minimize(loss, equal, jac=gradient, method="SLSQP", bounds=[(0.0, 1.0)] * count,
                      constraints={"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(count)},
                      options={"ftol": 1e-12, "maxiter": 500})
    weights = np.clip(result.x, 0, None)
    if not result.success or not np.isfinite(weights).all() or weights.sum() == 0:
        return equal
    weights /= weights.sum()
    return weights if loss(weights) <= loss(equal) else equal
