"""Target kinds: labels to targets and back, decisions fitted out of fold, calibration and
ensemble weights per kind, and what `init` is told about a competition's labels."""
import numpy as np
import pandas as pd
import pytest

from compete.config import PipelineError, TargetSettings
from compete.ensemble import blend, fit_blend, fit_temperature, fit_weights
from compete.metrics import decided_score, score
from compete.targets import Binary, MultiLabel, Regression, Target, fit_target, infer_target, target_from_dict


def test_tags_become_one_column_each_and_come_back_as_the_same_strings():
    labels = ["haze road", "road", "water haze road", "water"]
    target = fit_target(TargetSettings(kind="multi_label"), labels)
    assert target.classes == ["haze", "road", "water"] and target.outputs == 3
    encoded = target.encode(labels)
    assert encoded.tolist() == [[1, 1, 0], [0, 1, 0], [1, 1, 1], [0, 0, 1]]
    assert target.label_cells(target.decide(encoded, target.default_decisions())).tolist() == \
        ["haze road", "road", "haze road water", "water"]


def test_every_image_gets_at_least_its_most_probable_tag():
    target = MultiLabel(["a", "b", "c"])
    probs = np.array([[0.1, 0.3, 0.2], [0.9, 0.1, 0.6]])
    assert target.decide(probs, target.default_decisions()).tolist() == [[0, 1, 0], [1, 0, 1]]


def test_binary_submits_the_positive_class_the_yaml_names():
    target = fit_target(TargetSettings(kind="binary", positive="cat"), ["dog", "cat", "dog"])
    assert target.classes == ["dog", "cat"]
    assert target.encode(["cat", "dog"]).tolist() == [1, 0]
    assert fit_target(TargetSettings(kind="binary"), ["0", "1"]).classes == ["0", "1"]  # default: the later
    with pytest.raises(PipelineError, match="exactly two labels"):
        fit_target(TargetSettings(kind="binary"), ["a", "b", "c"])


def test_regression_labels_must_be_numbers_and_grades_whole_and_in_range():
    target = fit_target(TargetSettings(kind="regression", grades=[0, 4]), ["0", "4", "2", "2"])
    assert (target.center, target.scale) == (2.0, pytest.approx(np.sqrt(2)))
    with pytest.raises(PipelineError, match="needs numbers"):
        fit_target(TargetSettings(kind="regression"), ["1", "two"])
    with pytest.raises(PipelineError, match="not whole grades"):
        fit_target(TargetSettings(kind="regression", grades=[0, 4]), ["1", "2.5"])
    with pytest.raises(PipelineError, match="not whole grades"):
        fit_target(TargetSettings(kind="regression", grades=[0, 4]), ["1", "5"])


def test_a_run_rebuilds_its_target_from_its_saved_dict():
    for target in (Target(["a", "b"]), Binary(["0", "1"]), MultiLabel(["x", "y"], ";"),
                   Regression([], 2.0, 1.5, [0, 4])):
        assert target_from_dict(target.to_dict()) == target


def test_tag_thresholds_fitted_out_of_fold_beat_one_half():
    rng = np.random.default_rng(0)
    truth = (rng.random((400, 5)) < 0.3).astype(int)
    truth[np.arange(400), rng.integers(0, 5, 400)] = 1  # every image has a tag
    probs = np.clip(0.15 + 0.25 * truth + rng.normal(0, 0.05, truth.shape), 0, 1)  # under-confident
    target = MultiLabel(list("abcde"))
    plain = score("f2_samples", target, truth, probs)
    fitted, decisions = decided_score("f2_samples", target, truth, probs)
    assert fitted > plain + 0.2 and fitted > 0.95
    assert all(0.15 < t < 0.4 for t in decisions["thresholds"])


def test_grade_cut_points_undo_a_squeezed_regression():
    rng = np.random.default_rng(1)
    grades = rng.integers(0, 5, 500)
    outputs = (2 + 0.5 * (grades - 2) + rng.normal(0, 0.05, 500))[:, None]  # grades squeezed to 1-3
    target = Regression([], 2.0, 1.0, [0, 4])
    rounded = score("quadratic_weighted_kappa", target, grades, outputs)
    fitted, decisions = decided_score("quadratic_weighted_kappa", target, grades, outputs)
    assert fitted == pytest.approx(1.0) and rounded < 0.95
    assert decisions["cuts"] == sorted(decisions["cuts"]) and len(decisions["cuts"]) == 4


def test_a_binary_threshold_is_fitted_only_where_the_metric_scores_labels():
    rng = np.random.default_rng(2)
    truth = (rng.random(600) < 0.2).astype(int)
    probs = np.clip(0.1 + 0.2 * truth + rng.normal(0, 0.05, 600), 0, 1)[:, None]
    target = Binary(["no", "yes"])
    f1, decisions = decided_score("f1", target, truth, probs)
    assert score("f1", target, truth, probs) < 0.1  # one half: hardly a positive found
    assert f1 > 0.9 and 0.1 < decisions["thresholds"][0] < 0.3
    assert decided_score("roc_auc", target, truth, probs)[1] == {}  # AUC needs no decision


def test_binary_calibration_sharpens_under_confident_probabilities():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, 5000)
    truth = (rng.random(5000) < 1 / (1 + np.exp(-logits))).astype(int)
    softened = (1 / (1 + np.exp(-logits / 2)))[:, None]
    target = Binary(["0", "1"])
    temperature = fit_temperature(softened, truth, target)
    assert abs(temperature - 0.5) < 0.05
    before = score("log_loss", target, truth, softened)
    assert score("log_loss", target, truth, target.calibrate(softened, temperature)) < before - 0.01


def test_number_members_are_weighted_by_their_squared_error():
    rng = np.random.default_rng(4)
    truth = rng.normal(0, 1, 3000)
    good, noisy = truth + rng.normal(0, 0.2, 3000), truth + rng.normal(0, 1.0, 3000)
    target = Regression([], 0.0, 1.0)
    weights = fit_weights([good[:, None], noisy[:, None]], truth, target)
    assert weights[0] == pytest.approx(25 / 26, abs=0.02)  # inverse-variance weights
    temperatures, fitted = fit_blend([good[:, None], noisy[:, None]], truth, target, "rmse")
    assert temperatures == [1.0, 1.0] and np.allclose(fitted, weights)
    assert blend([good[:, None], noisy[:, None]], temperatures, fitted, target).shape == (3000, 1)


@pytest.mark.parametrize("labels,columns,expected", [
    (["haze road", "road", "water haze", "water"], ["tags"], {"kind": "multi_label", "delimiter": " "}),
    (["a;b", "b", "c;a"], ["tags"], {"kind": "multi_label", "delimiter": ";"}),
    (["0", "1", "1"], ["has_cactus"], {"kind": "binary"}),
    (["cat", "dog"], ["dog"], {"kind": "binary", "positive": "dog"}),
    (["cat", "dog"], ["cat", "dog"], {"kind": "single_label"}),  # one probability column per class
    (["23.5", "41", "7.25"], ["age"], {"kind": "regression"}),
    (["0", "3", "9", "4"], ["label"], {"kind": "single_label"}),  # whole numbers: classes
    (["T-shirt top", "Tank top", "Bag"], ["label"], {"kind": "single_label"}),  # names with spaces
    (["Common wheat", "Common Chickweed", "Maize"], ["species"], {"kind": "single_label"}),
])
def test_init_is_told_the_kind_the_labels_and_sample_suggest(labels, columns, expected):
    sample = pd.DataFrame(columns=["id", *columns])
    assert infer_target(labels, sample) == expected
