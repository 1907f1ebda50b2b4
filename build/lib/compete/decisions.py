"""Decisions fitted on out-of-fold predictions, never on the test set: the probability threshold
of a binary target, one threshold per tag of a multi-label target, and the cut-points that turn
a regression output into grades.

Each is a coordinate search: one value at a time is set to the best of its candidates while the
others stay, for a few passes. The objective is the competition's metric itself (piecewise
constant, so no gradient to follow), computed on the decisions the submission would hold.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .metrics import metric

PASSES = 3             # sweeps over all coordinates; later passes rarely move anything
CANDIDATES = 49        # values tried per coordinate (thresholds 0.02 ... 0.98, or between cuts)


def coordinate_search(start: list[float], candidates: Callable[[int, np.ndarray], np.ndarray],
                      objective: Callable[[np.ndarray], float]) -> tuple[np.ndarray, float]:
    """Maximize `objective` one coordinate at a time, starting from `start`; a move is taken only
    when it improves, so the result is never worse than the start. Returns (values, objective)."""
    values = np.array(start, dtype=np.float64)
    best = objective(values)
    for _ in range(PASSES):
        moved = False
        for i in range(len(values)):
            for value in candidates(i, values):
                trial = values.copy()
                trial[i] = value
                gain = objective(trial)
                if gain > best + 1e-12:
                    values, best, moved = trial, gain, True
        if not moved:
            break
    return values, best


def threshold_grid() -> np.ndarray:
    return np.linspace(0.02, 0.98, CANDIDATES)


def fit_thresholds(count: int, objective: Callable[[np.ndarray], float]) -> list[float]:
    """`count` probability thresholds maximizing `objective(thresholds)`: first the best shared
    one, then each on its own."""
    grid = threshold_grid()
    shared = max(grid, key=lambda t: objective(np.full(count, t)))
    values, _ = coordinate_search([shared] * count, lambda i, v: grid, objective)
    return [round(float(t), 4) for t in values]


def fit_cuts(lowest: int, highest: int, objective: Callable[[np.ndarray], float]) -> list[float]:
    """Cut-points c_1 < ... between grades lowest..highest (a value below c_1 is the lowest
    grade, one in [c_k, c_k+1) grade lowest + k) maximizing `objective(cuts)`, starting from
    plain rounding (cuts at the half-way points). Each cut moves between its neighbours."""
    start = [g + 0.5 for g in range(lowest, highest)]

    def candidates(i: int, cuts: np.ndarray) -> np.ndarray:
        low = cuts[i - 1] if i > 0 else lowest - 0.5
        high = cuts[i + 1] if i + 1 < len(cuts) else highest + 0.5
        return np.linspace(low, high, CANDIDATES + 2)[1:-1]

    values, _ = coordinate_search(start, candidates, objective)
    return [round(float(c), 4) for c in values]


def apply_cuts(values: np.ndarray, lowest: int, cuts: list[float]) -> np.ndarray:
    """Grades (int64) of `values` under sorted `cuts`."""
    return lowest + np.searchsorted(np.asarray(cuts), np.asarray(values), side="right").astype(np.int64)


def metric_objective(name: str, kind: str, targets: np.ndarray, decide):
    """The metric of `decide(values)` against `targets`, signed so that higher is better."""
    entry = metric(name, kind)
    sign = 1.0 if entry.higher_is_better else -1.0
    return lambda values: sign * entry.function(targets, decide(values))
