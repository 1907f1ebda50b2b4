"""Competition metrics by name, computed with scikit-learn from probabilities.

Besides the fixed names, any `top<K>_accuracy` (e.g. top3_accuracy) and `f<BETA>_macro`
(e.g. f2_macro, f0.5_macro: macro-averaged F-beta) resolve on first use.
"""
from __future__ import annotations

import re

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, fbeta_score, log_loss, top_k_accuracy_score

from .errors import PipelineError

TOP_K = re.compile(r"^top(\d+)_accuracy$")
F_BETA = re.compile(r"^f(\d+(?:\.\d+)?)_macro$")


def top_k_accuracy(k: int):
    """Share of images whose true class is among the k most probable."""
    return lambda y, p: top_k_accuracy_score(y, p, k=k, labels=np.arange(p.shape[1]))


def fbeta_macro(beta: float):
    """Macro-averaged F-beta of the most probable class: beta > 1 weighs recall higher."""
    return lambda y, p: fbeta_score(y, p.argmax(1), beta=beta, average="macro",
                                    labels=np.arange(p.shape[1]), zero_division=0)


def _clipped(probs: np.ndarray) -> np.ndarray:
    """Probabilities floored at 1e-7 and rescaled to sum to one, as the competition sites score."""
    probs = np.clip(probs, 1e-7, 1)
    return probs / probs.sum(1, keepdims=True)


class Metrics(dict):
    """name -> (function of (targets, probs), higher_is_better); builds top-k and F-beta
    entries from their names on first lookup."""

    def __missing__(self, name: str):
        if match := TOP_K.match(name):
            entry = (top_k_accuracy(int(match[1])), True)
        elif match := F_BETA.match(name):
            entry = (fbeta_macro(float(match[1])), True)
        else:
            raise KeyError(name)
        self[name] = entry
        return entry


METRICS = Metrics({
    "accuracy": (lambda y, p: accuracy_score(y, p.argmax(1)), True),
    "top5_accuracy": (top_k_accuracy(5), True),
    "log_loss": (lambda y, p: log_loss(y, _clipped(p), labels=np.arange(p.shape[1])), False),
    "f1_macro": (lambda y, p: f1_score(y, p.argmax(1), average="macro"), True),
    "f2_macro": (fbeta_macro(2.0), True),
})


def metric_entry(metric: str):
    """(function of (targets, probs), higher_is_better) for a metric name; refused when unknown."""
    try:
        return METRICS[metric]
    except KeyError:
        raise PipelineError(f"Unknown metric '{metric}'. Known: {', '.join(METRICS)}, "
                            f"top<K>_accuracy, f<BETA>_macro.") from None


def score(metric: str, targets: np.ndarray, probs: np.ndarray) -> float:
    return float(metric_entry(metric)[0](targets, probs))
