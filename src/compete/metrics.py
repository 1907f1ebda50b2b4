"""Competition metrics by name, computed with scikit-learn from probabilities."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, log_loss, top_k_accuracy_score

from .config import PipelineError

# name -> (function of (targets, probs), higher_is_better)
METRICS = {
    "accuracy": (lambda y, p: accuracy_score(y, p.argmax(1)), True),
    "top5_accuracy": (lambda y, p: top_k_accuracy_score(y, p, k=5, labels=np.arange(p.shape[1])), True),
    "log_loss": (lambda y, p: log_loss(y, np.clip(p, 1e-7, 1), labels=np.arange(p.shape[1])), False),
    "f1_macro": (lambda y, p: f1_score(y, p.argmax(1), average="macro"), True),
}


def score(metric: str, targets: np.ndarray, probs: np.ndarray) -> float:
    if metric not in METRICS:
        raise PipelineError(f"Unknown metric '{metric}'. Known: {', '.join(METRICS)}.")
    return float(METRICS[metric][0](targets, probs))
