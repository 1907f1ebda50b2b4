"""Metrics by name agree with scikit-learn on random inputs (hypothesis), edge cases included: a
tag never present, a constant prediction, log-loss clipping as Kaggle does it."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from sklearn import metrics as sk

from compete.errors import PipelineError
from compete.metrics import KAGGLE_EPS, METRICS, metric

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # scikit-learn on degenerate inputs


def value(name, targets, predictions):
    return METRICS[name].function(targets, predictions)


def kaggle_clipped(probs):
    """What Kaggle does before scoring log loss: clip, then rescale class rows to sum to one."""
    probs = np.clip(probs, KAGGLE_EPS, 1 - KAGGLE_EPS)
    return probs / probs.sum(1, keepdims=True) if probs.ndim == 2 else probs


@st.composite
def class_probabilities(draw, hard=False):
    """(targets, probs): 2-6 classes, 1-40 rows, probabilities with exact zeros and ones mixed in."""
    classes, rows = draw(st.integers(2, 6)), draw(st.integers(1, 40))
    targets = draw(arrays(np.int64, rows, elements=st.integers(0, classes - 1)))
    raw = draw(arrays(np.float64, (rows, classes), elements=st.floats(0, 1, allow_subnormal=False)))
    raw[:, 0] += 1e-3  # no all-zero row
    if hard:
        raw = np.eye(classes)[raw.argmax(1)]
    return targets, raw / raw.sum(1, keepdims=True)


@st.composite
def tag_matrices(draw):
    """(truth, guess) 0/1 matrices; columns of zeros (a tag never present) and empty rows happen."""
    rows, tags = draw(st.integers(1, 30)), draw(st.integers(2, 6))  # one column reads as binary
    matrix = arrays(np.int64, (rows, tags), elements=st.integers(0, 1))
    return draw(matrix), draw(matrix)


@given(class_probabilities())
@SETTINGS
def test_class_log_loss_is_scikit_learns_on_kaggle_clipped_probabilities(case):
    targets, probs = case
    expected = sk.log_loss(targets, kaggle_clipped(probs), labels=np.arange(probs.shape[1]))
    assert value("log_loss", targets, probs) == pytest.approx(expected, rel=1e-9)


@given(class_probabilities(hard=True))
@SETTINGS
def test_hard_labels_cost_what_kaggle_charges(case):
    targets, probs = case
    wrong = probs.argmax(1) != targets
    # a sure wrong label costs -log(1e-15 / (1 + 1e-15 x classes)), about 34.5 nats
    cost = -math.log(KAGGLE_EPS / (1 + KAGGLE_EPS * (probs.shape[1] - 1)))
    assert value("log_loss", targets, probs) == pytest.approx(wrong.mean() * cost, abs=1e-9)


@given(arrays(np.int64, st.integers(1, 40), elements=st.integers(0, 1)), st.data())
@SETTINGS
def test_binary_log_loss_clips_like_kaggle(targets, data):
    probs = data.draw(arrays(np.float64, len(targets), elements=st.sampled_from([0.0, 1.0, 0.3, 0.99])))
    expected = sk.log_loss(targets, kaggle_clipped(probs), labels=[0, 1])
    assert value("log_loss", targets, probs) == pytest.approx(expected, rel=1e-9)
    assert value("log_loss", np.array([1]), np.array([0.0])) == pytest.approx(-math.log(KAGGLE_EPS))


@given(tag_matrices(), st.data())
@SETTINGS
def test_tag_log_loss_is_the_column_wise_mean(case, data):
    truth, _ = case
    probs = data.draw(arrays(np.float64, truth.shape, elements=st.floats(0, 1, allow_subnormal=False)))
    expected = np.mean([sk.log_loss(truth[:, c], kaggle_clipped(probs[:, c]), labels=[0, 1])
                        for c in range(truth.shape[1])])
    assert value("log_loss", truth, probs) == pytest.approx(expected, rel=1e-9)


@given(arrays(np.int64, st.integers(2, 40), elements=st.integers(0, 1)), st.data())
@SETTINGS
def test_binary_auc_is_scikit_learns(targets, data):
    probs = data.draw(arrays(np.float64, len(targets), elements=st.floats(0, 1, allow_subnormal=False)))
    if len(set(targets)) < 2:
        assert math.isnan(value("roc_auc", targets, probs))  # undefined: one outcome only
    else:
        assert value("roc_auc", targets, probs) == pytest.approx(sk.roc_auc_score(targets, probs))
        assert value("roc_auc", targets, np.full(len(targets), 0.3)) == 0.5  # a constant prediction


@given(tag_matrices(), st.data())
@SETTINGS
def test_tag_auc_averages_the_tags_that_have_both_outcomes(case, data):
    truth, _ = case
    probs = data.draw(arrays(np.float64, truth.shape, elements=st.floats(0, 1, allow_subnormal=False)))
    scored = [c for c in range(truth.shape[1]) if 0 < truth[:, c].sum() < len(truth)]
    if not scored:  # every tag never (or always) present
        assert math.isnan(value("roc_auc", truth, probs))
        return
    expected = sk.roc_auc_score(truth[:, scored], probs[:, scored], average="macro")
    assert value("roc_auc", truth, probs) == pytest.approx(expected)


@given(tag_matrices(), st.sampled_from([0.5, 1.0, 2.0]))
@SETTINGS
def test_tag_f_beta_averages_match_scikit_learn(case, beta):
    truth, guess = case
    for average in ("samples", "macro"):
        expected = sk.fbeta_score(truth, guess, beta=beta, average=average, zero_division=0)
        assert value(f"f{beta}_{average}", truth, guess) == pytest.approx(expected), average


def test_a_tag_never_present_and_never_predicted_scores_zero_in_the_macro_average():
    truth = np.array([[1, 0], [1, 0], [0, 0]])
    assert value("f1_macro", truth, truth) == 0.5  # the second tag: 0/0, counted as 0
    assert value("f2_samples", truth, truth) == pytest.approx(2 / 3)  # the empty row scores 0


@given(class_probabilities(), st.sampled_from([0.5, 1.0, 2.0]))
@SETTINGS
def test_class_f_beta_and_accuracy_match_scikit_learn(case, beta):
    targets, probs = case
    predicted = probs.argmax(1)
    assert value(f"f{beta}_macro", targets, predicted) == pytest.approx(
        sk.fbeta_score(targets, predicted, beta=beta, average="macro", zero_division=0))
    assert value("accuracy", targets, predicted) == pytest.approx(sk.accuracy_score(targets, predicted))


@given(arrays(np.int64, st.integers(1, 40), elements=st.integers(0, 1)), st.data())
@SETTINGS
def test_binary_f_beta_is_the_positive_class(targets, data):
    guess = data.draw(arrays(np.int64, len(targets), elements=st.integers(0, 1)))
    expected = sk.fbeta_score(targets, guess, beta=2, average="binary", zero_division=0)
    assert value("f2", targets, guess) == pytest.approx(expected)


@given(arrays(np.int64, st.integers(1, 40), elements=st.integers(0, 4)), st.data())
@SETTINGS
def test_quadratic_weighted_kappa_is_scikit_learns(targets, data):
    guess = data.draw(arrays(np.int64, len(targets), elements=st.integers(0, 4)))
    grades = np.arange(min(targets.min(), guess.min()), max(targets.max(), guess.max()) + 1)
    expected = sk.cohen_kappa_score(targets, guess, labels=grades, weights="quadratic",
                                    replace_undefined_by=0.0)
    assert value("quadratic_weighted_kappa", targets, guess) == pytest.approx(expected)


def test_kappa_of_edge_cases():
    grades = np.array([0, 1, 2, 3, 4])
    assert value("quadratic_weighted_kappa", grades, grades) == 1.0
    assert value("quadratic_weighted_kappa", grades, np.full(5, 2)) == 0.0  # a constant prediction
    assert value("quadratic_weighted_kappa", grades, grades[::-1]) == pytest.approx(-1.0)


@given(arrays(np.float64, st.integers(1, 40), elements=st.floats(-100, 100, allow_subnormal=False)), st.data())
@SETTINGS
def test_rmse_and_mae_are_scikit_learns(targets, data):
    guess = data.draw(arrays(np.float64, len(targets), elements=st.floats(-100, 100, allow_subnormal=False)))
    assert value("rmse", targets, guess) == pytest.approx(math.sqrt(sk.mean_squared_error(targets, guess)), abs=1e-9)
    assert value("mae", targets, guess) == pytest.approx(sk.mean_absolute_error(targets, guess), abs=1e-9)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_accuracy_for_any_k(k):
    rng = np.random.default_rng(7)
    targets, probs = rng.integers(0, 6, 200), rng.dirichlet(np.ones(6), 200)
    by_hand = np.mean([t in np.argsort(-p)[:k] for t, p in zip(targets, probs)])
    assert value(f"top{k}_accuracy", targets, probs) == pytest.approx(by_hand)


def test_built_names_carry_their_direction_and_what_they_score():
    assert METRICS["top3_accuracy"].higher_is_better and METRICS["top3_accuracy"].on_probabilities
    assert METRICS["f0.5_macro"].higher_is_better and not METRICS["f0.5_macro"].on_probabilities
    assert not METRICS["log_loss"].higher_is_better and METRICS["log_loss"].on_probabilities
    assert not METRICS["rmse"].higher_is_better and not METRICS["rmse"].on_probabilities


@pytest.mark.parametrize("name", ["top_accuracy", "f_macro", "recall", "topk_accuracy"])
def test_unknown_metric_names_the_known_ones(name):
    with pytest.raises(PipelineError, match="f<BETA>_samples"):
        metric(name)


@pytest.mark.parametrize("name,kind", [("rmse", "single_label"), ("f2_samples", "binary"),
                                       ("roc_auc", "regression"), ("accuracy", "multi_label")])
def test_a_metric_for_another_kind_of_target_is_refused(name, kind):
    with pytest.raises(PipelineError, match=f"does not score a {kind} target"):
        metric(name, kind)
