"""Metrics by name agree with scikit-learn, including the names built on first use."""
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, fbeta_score, log_loss, top_k_accuracy_score

from compete.config import PipelineError
from compete.metrics import METRICS, score

CLASSES = 6


@pytest.fixture
def predictions():
    """Probabilities that are right more often than chance, but far from always."""
    rng = np.random.default_rng(7)
    targets = rng.integers(0, CLASSES, 200)
    logits = rng.normal(size=(200, CLASSES))
    logits[np.arange(200), targets] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return targets, probs


def test_fixed_metrics_match_scikit_learn(predictions):
    targets, probs = predictions
    predicted = probs.argmax(1)
    assert score("accuracy", targets, probs) == pytest.approx(accuracy_score(targets, predicted))
    assert score("log_loss", targets, probs) == pytest.approx(log_loss(targets, probs))
    assert score("f1_macro", targets, probs) == pytest.approx(f1_score(targets, predicted, average="macro"))
    assert score("f2_macro", targets, probs) == pytest.approx(
        fbeta_score(targets, predicted, beta=2, average="macro"))


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_accuracy_for_any_k(predictions, k):
    targets, probs = predictions
    expected = top_k_accuracy_score(targets, probs, k=k)
    by_hand = np.mean([t in np.argsort(-p)[:k] for t, p in zip(targets, probs)])
    assert score(f"top{k}_accuracy", targets, probs) == pytest.approx(expected)
    assert score(f"top{k}_accuracy", targets, probs) == pytest.approx(by_hand)


@pytest.mark.parametrize("beta", [0.5, 1, 2, 3])
def test_fbeta_macro_for_any_beta(predictions, beta):
    targets, probs = predictions
    expected = fbeta_score(targets, probs.argmax(1), beta=beta, average="macro")
    assert score(f"f{beta}_macro", targets, probs) == pytest.approx(expected)


def test_f1_is_fbeta_with_beta_one(predictions):
    targets, probs = predictions
    assert score("f1_macro", targets, probs) == pytest.approx(score("f1.0_macro", targets, probs))


def test_built_names_carry_their_direction():
    assert METRICS["top3_accuracy"][1] is True
    assert METRICS["f0.5_macro"][1] is True
    assert METRICS["log_loss"][1] is False


@pytest.mark.parametrize("name", ["top_accuracy", "f_macro", "recall", "topk_accuracy"])
def test_unknown_metric_names_the_known_ones(predictions, name):
    with pytest.raises(PipelineError, match="f<BETA>_macro"):
        score(name, *predictions)
