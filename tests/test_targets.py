"""Target kinds: labels to targets and back, decisions fitted out of fold, calibration and
ensemble weights per kind, and what `init` is told about a competition's labels."""
import numpy as np
import pandas as pd
import pytest

from compete.config import TargetSettings
from compete.errors import PipelineError
from compete.ensemble import fit_ensemble, fit_temperature, fit_weights
from compete.init import guess_metric
from compete.metrics import check_metric, decided_score, score
from compete.target_guess import infer_target
from compete.targets import Binary, MultiLabel, Regression, Target, fit_target, target_from_dict


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
    folds = np.zeros(len(truth), np.int64)
    fitted = fit_ensemble([good[:, None], noisy[:, None]], truth, folds, 1, target, "rmse")
    assert fitted.temperatures == [[1.0], [1.0]] and np.allclose(fitted.weights, weights)
    assert fitted.outputs([good[:, None], noisy[:, None]], folds, target).shape == (3000, 1)


@pytest.mark.parametrize("labels,columns,expected", [
    (["haze road", "road", "water haze", "water"], ["tags"], {"kind": "multi_label", "delimiter": " "}),
    (["a;b", "b", "c;a", "a"], ["tags"], {"kind": "multi_label", "delimiter": ";"}),
    (["0", "1", "1"], {"has_cactus": [0, 0]}, {"kind": "binary"}),
    (["cat", "dog"], {"label": [0.5, 0.5]}, {"kind": "binary"}),       # label: P(dog)
    (["cat", "dog"], {"dog": [0.5, 0.5]}, {"kind": "binary", "positive": "dog"}),
    (["ants", "bees"], {"species": ["ants", "ants"]}, {"kind": "single_label"}),  # names to fill
    (["cat", "dog"], {"cat": [0.5], "dog": [0.5]}, {"kind": "single_label"}),  # a column per class
    (["23.5", "41", "7.25"], ["age"], {"kind": "regression"}),
    (["T-shirt top", "Tank top", "Bag"], ["label"], {"kind": "single_label"}),  # names with spaces
    (["Common wheat", "Common Chickweed", "Maize"], ["species"], {"kind": "single_label"}),
])
def test_init_is_told_the_kind_the_labels_and_sample_suggest(labels, columns, expected):
    sample = pd.DataFrame(columns if isinstance(columns, dict) else {column: [] for column in columns})
    sample.insert(0, "id", [f"t{i}" for i in range(len(sample))])
    assert infer_target(labels, sample, sample.columns[1])[0] == expected


def test_class_names_with_spaces_stay_classes_even_when_a_word_is_a_class_too():
    """Words that never recombine are names: "Ankle boot" beside "boot" is one class, as are the
    year and body words cars share; tags recombine ("haze road", "road", "haze water", ...)."""
    apparel = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
               "Bag", "Ankle boot", "boot"]
    cars = ["Audi A4 Sedan 2012", "Audi A6 Sedan 2012", "BMW M3 Coupe 2012", "BMW X5 SUV 2007"]
    for labels in (apparel, cars):
        assert infer_target(labels * 3, None, "label")[0] == {"kind": "single_label"}
    planet = ["clear primary", "clear primary road", "haze primary", "cloudy", "primary", "clear"]
    assert infer_target(planet, None, "tags")[0] == {"kind": "multi_label", "delimiter": " "}


@pytest.mark.parametrize("values,column,expected", [
    (range(5), "diagnosis", {"kind": "regression", "grades": [0, 4]}),   # APTOS
    (range(1, 6), "quality_rating", {"kind": "regression", "grades": [1, 5]}),
    (range(10), "label", {"kind": "single_label"}),                      # cifar10's class numbers
    (range(100), "class_id", {"kind": "single_label"}),
    ([0, 1, 2, 4], "severityLevel", {"kind": "regression"}),             # a grade missing: numbers
    (range(1, 101), "Pawpularity_Score", {"kind": "regression"}),         # too many for grades
    (range(0, 40, 3), "cell_count", {"kind": "regression"}),
])
def test_whole_numbers_are_grades_or_numbers_only_where_the_column_name_says_so(values, column, expected):
    sample = pd.DataFrame(columns=["id", column])
    inferred, why = infer_target([str(v) for v in values] * 2, sample, column)
    assert inferred == expected
    if expected["kind"] == "single_label":  # the guess names the setting that would say grades
        assert "taken as class numbers" in why and "would be target: " in why


@pytest.mark.parametrize("target,fill,expected", [
    (Binary(["0", "1"]), "label", "roc_auc"),           # id,has_cactus 0.5
    (MultiLabel(["haze", "road"]), "label", "f2_samples"),
    (MultiLabel(["haze", "road"]), "probabilities", "f2_samples"),
    (Regression([], 2.0, 1.0, [0, 4]), "label", "quadratic_weighted_kappa"),
    (Regression([], 30.0, 9.0), "label", "rmse"),
    (Target(["a", "b", "c"]), "probabilities", "log_loss"),
    (Target(["a", "b", "c"]), "label", "accuracy"),
])
def test_init_guesses_the_metric_the_kind_and_the_sample_suggest(target, fill, expected):
    metric_name, alternative = guess_metric(target, fill)
    assert metric_name == expected and alternative
    check_metric(metric_name, target)  # a metric the yaml then accepts for that target
