"""Combining members: ensemble weights fitted on out-of-fold (or hold-out) probabilities."""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from sklearn.metrics import log_loss

EPS = 1e-7  # probability floor inside the log loss


def combine(probs: list[np.ndarray], weights) -> np.ndarray:
    """Weighted average of members' (N, classes) probabilities."""
    weights = np.asarray(weights, dtype=np.float64)
    return np.tensordot(weights / weights.sum(), np.stack(probs), axes=1)


def fit_weights(probs: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to one that minimize the log loss of the combination.

    Weights are a softmax of free parameters, so the search is unconstrained. Falls back to
    equal weights when the fit fails or does not beat them.
    """
    count = len(probs)
    equal = np.full(count, 1.0 / count)
    if count == 1:
        return equal
    labels = np.arange(probs[0].shape[1])
    stacked = np.stack(probs)

    def loss(params):
        weights = np.exp(params - params.max())
        mixed = np.tensordot(weights / weights.sum(), stacked, axes=1)
        return log_loss(targets, np.clip(mixed, EPS, 1), labels=labels)

    result = minimize(loss, np.zeros(count), method="Nelder-Mead" if count <= 2 else "Powell",
                      options={"xatol": 1e-4, "fatol": 1e-7, "maxiter": 2000} if count <= 2 else {})
    if not result.success and not np.isfinite(result.fun):
        return equal
    weights = np.exp(result.x - result.x.max())
    weights /= weights.sum()
    return weights if loss(result.x) <= loss(np.zeros(count)) else equal
