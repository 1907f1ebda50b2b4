"""How sure a score is: percentile-bootstrap 95% intervals of any metric over the validated
rows, the paired bootstrap that compares two runs on the same rows, and the interval of a public
leaderboard score of a known size.

A resample draws, within each stratum (the class; a target kind's `strata`), as many units as the
stratum has, with replacement; a unit is a row, or a whole group where the split kept groups
whole (a group's images are predicted alike, so they are not independent evidence). A resample is
a count per unit, so a metric that is a mean over rows (accuracy, log loss, top-k accuracy, mae,
rmse) is computed for every resample at once as a count-weighted mean; any other metric (roc_auc,
f1_macro, kappa) is computed on each resample's rows in turn. The interval is the middle 95% of
the resamples' scores (percentile bootstrap).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .metrics import log_losses, metric

LEVEL = 0.95               # the intervals' coverage
RESAMPLES = 1000           # bootstrap resamples of a score
SLOW_ROW_BUDGET = 20_000_000  # rows scored one resample at a time (metrics not a mean over rows): at
                              # most this many in all, so 60,000 rows get 333 resamples, not 1,000
MIN_RESAMPLES = 200        # ... and never fewer than this
CHUNK = 100                # resamples whose per-row counts are held in memory at once
TOP_K = re.compile(r"^top(\d+)_accuracy$")


def _rows_right(targets, predicted):
    return (np.asarray(targets) == np.asarray(predicted)).astype(np.float64)


def _top_k_rows(k: int):
    def rows(targets, probs):
        probs = np.asarray(probs)
        true = probs[np.arange(len(probs)), np.asarray(targets)]
        return ((probs > true[:, None]).sum(1) < k).astype(np.float64)
    return rows


MEAN_OF_ROWS = {  # metric -> (each row's term, the metric from the terms' mean)
    "accuracy": (_rows_right, np.asarray),
    "log_loss": (log_losses, np.asarray),
    "mae": (lambda y, p: np.abs(np.asarray(y, np.float64) - p), np.asarray),
    "rmse": (lambda y, p: (np.asarray(y, np.float64) - p) ** 2, np.sqrt),
}


def row_terms(metric_name: str):
    """(each row's term, the metric of their mean) where the metric is a mean over rows; else None."""
    if match := TOP_K.match(metric_name):
        return _top_k_rows(int(match[1])), np.asarray
    return MEAN_OF_ROWS.get(metric_name)


@dataclass(frozen=True)
class Bootstrap:
    """How validated rows are resampled: their strata, their groups (None: every row its own),
    the seed, and how many resamples."""
    strata: np.ndarray
    groups: np.ndarray | None = None
    seed: int = 0
    resamples: int = RESAMPLES

    def units(self) -> tuple[np.ndarray, np.ndarray]:
        """The unit of each row (its group's index, or the row itself) and each unit's stratum
        (the most common of its rows')."""
        if self.groups is None:
            return np.arange(len(self.strata)), np.asarray(self.strata)
        _, unit_of = np.unique(self.groups, return_inverse=True)
        pairs, pair_count = np.unique(np.stack([unit_of, self.strata]), axis=1, return_counts=True)
        order = np.lexsort((-pair_count, pairs[0]))  # per unit, its commonest stratum first
        first = np.unique(pairs[0][order], return_index=True)[1]
        return unit_of, pairs[1][order][first]

    def counts(self, resamples: int):
        """Chunks of (resamples, rows) times each row is drawn, all rows of a unit alike; seeded,
        so the same rows give the same resamples (what makes two runs' bootstraps paired)."""
        unit_of, unit_strata = self.units()
        rng = np.random.default_rng(self.seed)
        strata = [np.flatnonzero(unit_strata == stratum) for stratum in np.unique(unit_strata)]
        for size in np.diff(np.r_[0:resamples:CHUNK, resamples]):
            drawn = np.zeros((size, len(unit_strata)), np.int32)
            for members in strata:  # len(members) draws among them per resample, counted
                picks = rng.integers(0, len(members), (size, len(members))) + len(members) * np.arange(size)[:, None]
                drawn[:, members] = np.bincount(picks.ravel(), minlength=size * len(members)).reshape(size, -1)
            yield drawn[:, unit_of]


def bootstrap_scores(metric_name: str, target, targets: np.ndarray, predictions: list[np.ndarray],
                     resampling: Bootstrap) -> np.ndarray:
    """(resamples, len(predictions)): the metric of each prediction set (in the form the metric
    scores: metrics.submitted) on each resample of the rows, the same resamples for every set."""
    terms = row_terms(metric_name)
    if terms:
        row_term, finish = terms
        values = np.stack([row_term(targets, p) for p in predictions], 1)  # (rows, sets)
        return finish(np.concatenate([(counts @ values) / counts.sum(1, keepdims=True)
                                      for counts in resampling.counts(resampling.resamples)]))
    function = metric(metric_name, target.kind).function
    resamples = int(np.clip(SLOW_ROW_BUDGET // max(len(targets), 1), MIN_RESAMPLES, resampling.resamples))
    rows = np.arange(len(targets))
    scores = []
    for counts in resampling.counts(resamples):
        for drawn in counts:
            picked = np.repeat(rows, drawn)
            scores.append([function(targets[picked], p[picked]) for p in predictions])
    return np.array(scores, np.float64)


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> list[float] | None:
    """The central `level` share of the values (NaN resamples, where a metric is undefined, left
    out); None when every one is NaN."""
    values = np.asarray(values, np.float64)
    if np.isnan(values).all():
        return None
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return [round(float(low), 6), round(float(high), 6)]


def score_intervals(metric_name: str, target, targets: np.ndarray, predictions: list[np.ndarray],
                    resampling: Bootstrap) -> list[list[float] | None]:
    """Each prediction set's 95% interval for its score on these rows."""
    if len(targets) < 2:
        return [None] * len(predictions)
    scores = bootstrap_scores(metric_name, target, targets, predictions, resampling)
    return [percentile_interval(scores[:, i]) for i in range(len(predictions))]


@dataclass
class Paired:
    """B against A on the same resamples of the same rows."""
    score_a: float
    score_b: float
    interval_a: list[float] | None
    interval_b: list[float] | None
    difference: float                 # B - A in the metric's own units
    difference_interval: list[float] | None
    b_better: float                   # share of resamples in which B scores better than A
    ties: float                       # share in which they score the same
    resamples: int


def paired_bootstrap(metric_name: str, target, targets: np.ndarray, predictions_a: np.ndarray,
                     predictions_b: np.ndarray, resampling: Bootstrap) -> Paired:
    """Both runs' scores and B - A, each with its interval, from the same resamples, and the share
    of resamples in which B beats A (by the metric's direction)."""
    entry = metric(metric_name, target.kind)
    scores = bootstrap_scores(metric_name, target, targets, [predictions_a, predictions_b], resampling)
    full = [entry.function(targets, p) for p in (predictions_a, predictions_b)]
    gains = (scores[:, 1] - scores[:, 0]) * (1 if entry.higher_is_better else -1)
    return Paired(full[0], full[1], percentile_interval(scores[:, 0]), percentile_interval(scores[:, 1]),
                  full[1] - full[0], percentile_interval(scores[:, 1] - scores[:, 0]),
                  float(np.mean(gains > 0)), float(np.mean(gains == 0)), len(scores))


def wilson_interval(share: float, count: int, level: float = LEVEL) -> list[float]:
    """The Wilson score interval of a proportion `share` observed on `count` items."""
    from scipy.stats import norm
    z = norm.ppf(0.5 + level / 2)
    centre = (share + z * z / (2 * count)) / (1 + z * z / count)
    half = z / (1 + z * z / count) * np.sqrt(share * (1 - share) / count + z * z / (4 * count * count))
    return [round(float(centre - half), 6), round(float(centre + half), 6)]


def public_interval(metric_name: str, public_score: float, public_rows: int,
                    local_interval: list[float] | None, local_rows: int) -> list[float] | None:
    """The 95% interval of a public score on `public_rows` images: binomial (Wilson) for accuracy;
    for other metrics the local interval's half-widths, scaled by sqrt(local_rows / public_rows)
    (the spread of a mean shrinks with the square root of its rows), around the public score.
    None where neither applies."""
    if metric_name == "accuracy" or TOP_K.match(metric_name):
        return wilson_interval(public_score, public_rows)
    if local_interval is None or not local_rows:
        return None
    scale = np.sqrt(local_rows / public_rows)
    half = float(scale * (local_interval[1] - local_interval[0]) / 2)
    return [round(public_score - half, 6), round(public_score + half, 6)]


def format_interval(interval: list[float] | None) -> str:
    """'[0.9357, 0.9476]', or '-' without one."""
    return "-" if interval is None else f"[{interval[0]:.4f}, {interval[1]:.4f}]"
