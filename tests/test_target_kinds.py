"""Each target kind end to end: a tiny generated competition, `train` then `predict`, and the
submission handed to a leaderboard scorer written here, which accepts it only in the sample's
exact format and scores it against the hidden test labels with the competition's metric."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import metrics as sk

from compete.cli import main

from helpers import image_bytes, only_run, run_summary

BANDS = 4
TINY_MEMBER = {"model": "cnn", "model_args": {"widths": [8, 16], "convs": 1, "dropout": 0.0},
               "epochs": 8, "batch_size": 16, "lr": 0.01, "pad_crop": 0, "label_smoothing": 0.0}


def banded_image(lit, rng, size: int = 8) -> np.ndarray:
    """Dark noise with the listed horizontal bands (0-3, top to bottom) bright: what every kind's
    labels are made of. A mirrored image keeps its labels, as init's hflip: true assumes."""
    image = rng.integers(0, 60, (size, size, 1), dtype=np.uint8)
    height = size // BANDS
    for band in lit:
        image[band * height:(band + 1) * height] = 220
    return image


def write_download(data, labels: list[str], bands: list, sample_cell: dict, column: str = "label",
                   seed: int = 0) -> list[str]:
    """A download in `data` (train.csv with `column`, train/, test/, sample_submission.csv); the
    first len(labels) band sets are the training images, the rest the test images. Returns
    the test ids; the caller keeps the test labels hidden."""
    rng = np.random.default_rng(seed)
    for folder in ("train", "test"):
        (data / folder).mkdir(parents=True)
    ids = [f"img{i:03d}" for i in range(len(bands))]
    for i, (image_id, lit) in enumerate(zip(ids, bands)):
        folder = "train" if i < len(labels) else "test"
        (data / folder / f"{image_id}.png").write_bytes(image_bytes(banded_image(lit, rng)))
    pd.DataFrame({"id": ids[:len(labels)], column: labels}).to_csv(data / "train.csv", index=False)
    test_ids = ids[len(labels):]
    pd.DataFrame({"id": test_ids}).to_csv(data / "test.csv", index=False)
    sample = pd.DataFrame({"id": test_ids})
    for name, cell in sample_cell.items():
        sample[name] = cell
    sample.to_csv(data / "sample_submission.csv", index=False)
    return test_ids


def write_competition(root, name: str, labels: list[str], bands: list, sample_cell, yaml_spec: dict,
                      n_test: int, seed: int = 0) -> list[str]:
    """inputs/<name>/ as `write_download` writes it, and competition/<name>.yaml written by hand."""
    test_ids = write_download(root / "inputs" / name, labels, bands, sample_cell, seed=seed)
    spec = {"channels": 1, "image_size": 8, "hflip": False,
            "presets": {"default": {"val_fraction": 0.25, "members": [TINY_MEMBER]}}, **yaml_spec}
    (root / "competition" / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return test_ids


def train_and_predict(name: str, *options: str) -> None:
    assert main(["train", name, "--device", "cpu", *options]) == 0
    assert main(["predict", name, "--device", "cpu"]) == 0


def leaderboard_read(workspace, name: str) -> pd.DataFrame:
    """The uploaded file as a leaderboard reads it: the sample's header and ids, in order."""
    submission = pd.read_csv(workspace / "submissions" / name / "submission.csv", dtype=str,
                             keep_default_na=False)
    sample = pd.read_csv(workspace / "inputs" / name / "sample_submission.csv", dtype=str)
    assert list(submission.columns) == list(sample.columns), "header differs from the sample's"
    assert submission["id"].tolist() == sample["id"].tolist(), "ids differ from the sample's"
    assert (submission != "").all().all(), "empty cells"
    return submission


def report_metrics(workspace, name: str) -> list[str]:
    """The metrics the run's HTML report lists, after writing it."""
    assert main(["report", name]) == 0
    run_dir = only_run(workspace, name)
    page = (run_dir / "report.html").read_text()
    return [m for m in json.loads((run_dir / "analysis.json").read_text())["metrics"] if f">{m}<" in page]


# Each kind's task: (training labels, every image's bright bands, the hidden test truth),
# and the leaderboard's scorer of a submission's column against that truth.

def cactus_task():
    """"Aerial Cactus"-like: 0/1 labels, 40% positive; scored by ROC-AUC of P(1)."""
    truth = np.random.default_rng(1).random(120) < 0.4
    return ["1" if positive else "0" for positive in truth[:96]], \
        [[0] if positive else [3] for positive in truth], truth[96:]


def auc_of(cells: pd.Series, truth) -> float:
    probs = cells.astype(float).to_numpy()  # a hard 0/1 column would not do
    assert ((probs >= 0) & (probs <= 1)).all() and len(np.unique(probs)) > 2
    return sk.roc_auc_score(truth, probs)


TAGS = ["cloudy", "haze", "road", "water"]  # bands 0-3


def planet_task():
    """"Planet"-like: one or two space-separated tags; scored by sample-averaged F2."""
    rng = np.random.default_rng(2)
    sets = [sorted(rng.choice(4, size=rng.choice([1, 2], p=[0.6, 0.4]), replace=False).tolist())
            for _ in range(150)]
    truth = np.array([[q in lit for q in range(4)] for lit in sets[120:]], dtype=int)
    return [" ".join(TAGS[q] for q in lit) for lit in sets[:120]], sets, truth


def f2_gain_of(cells: pd.Series, truth) -> float:
    """Sample F2 of the tag sets above that of tagging every image with everything (about 0.75)."""
    tag_sets = [cell.split(" ") for cell in cells]
    assert all(set(tags) <= set(TAGS) for tags in tag_sets), "unknown tags"
    guess = np.array([[tag in tags for tag in TAGS] for tags in tag_sets], dtype=int)
    every_tag = sk.fbeta_score(truth, np.ones_like(truth), beta=2, average="samples")
    return sk.fbeta_score(truth, guess, beta=2, average="samples") - every_tag


def aptos_task():
    """"APTOS"-like: grades 0-4, here the number of bright bands; scored by quadratic kappa."""
    rng = np.random.default_rng(3)
    grades = rng.integers(0, 5, 150)
    bands = [rng.choice(BANDS, size=g, replace=False).tolist() for g in grades]
    return [str(g) for g in grades[:120]], bands, grades[120:]


def kappa_of(cells: pd.Series, truth) -> float:
    assert cells.str.fullmatch(r"[0-4]").all(), "grades must be whole numbers 0-4"
    return sk.cohen_kappa_score(truth, cells.astype(int).to_numpy(), weights="quadratic")


DEFECTS = np.array(["common", "rare", "scarce"])


def defects_task():
    """85% / 10% / 5% classes; scored by macro F1, which needs every class found."""
    classes = np.random.default_rng(4).choice(3, size=200, p=[0.85, 0.10, 0.05])
    classes[[0, 1, 2, 3, 160, 161, 162, 163]] = [1, 1, 2, 2, 1, 1, 2, 2]  # some of each on both sides
    return DEFECTS[classes[:160]].tolist(), [[c] for c in classes], DEFECTS[classes[160:]]


def macro_f1_of(cells: pd.Series, truth) -> float:
    assert set(cells) <= set(DEFECTS)
    return sk.f1_score(truth, cells, average="macro")


@pytest.mark.slow
def test_binary_with_one_probability_column_is_scored_by_auc(workspace):
    """id,label with P(label = 1), scored by ROC-AUC."""
    labels, bands, truth = cactus_task()
    write_competition(workspace, "cactus", labels, bands, {"label": 0.5},
                      {"target": "binary", "metric": "roc_auc"}, n_test=24)
    train_and_predict("cactus")
    assert auc_of(leaderboard_read(workspace, "cactus")["label"], truth) > 0.9
    assert run_summary(only_run(workspace, "cactus"))["metric"] == "roc_auc"


@pytest.mark.slow
def test_multi_label_with_space_separated_tags_is_scored_by_sample_f2(workspace):
    labels, sets, truth = planet_task()
    write_competition(workspace, "planet", labels, sets, {"label": "cloudy haze"},
                      {"target": {"kind": "multi_label", "delimiter": " "}, "metric": "f2_samples"}, n_test=30)
    train_and_predict("planet")
    assert f2_gain_of(leaderboard_read(workspace, "planet")["label"], truth) > 0.15
    thresholds = run_summary(only_run(workspace, "planet"))["decisions"]["thresholds"]
    assert len(thresholds) == 4 and all(0 < t < 1 for t in thresholds)  # fitted out of fold
    assert report_metrics(workspace, "planet")[0] == "f2_samples"


@pytest.mark.slow
def test_regression_graded_0_to_4_is_scored_by_quadratic_weighted_kappa(workspace):
    labels, bands, truth = aptos_task()
    write_competition(workspace, "aptos", labels, bands, {"label": 0},
                      {"target": {"kind": "regression", "grades": [0, 4]},
                       "metric": "quadratic_weighted_kappa"}, n_test=30)
    train_and_predict("aptos", "--epochs", "12")
    assert kappa_of(leaderboard_read(workspace, "aptos")["label"], truth) > 0.6
    cuts = run_summary(only_run(workspace, "aptos"))["decisions"]["cuts"]
    assert len(cuts) == 4 and cuts == sorted(cuts)
    assert report_metrics(workspace, "aptos") == ["quadratic_weighted_kappa", "rmse", "mae"]


@pytest.mark.slow
@pytest.mark.parametrize("options", [[], ["--set", "class_weights=balanced", "--set", "sampler=balanced"]],
                         ids=["plain", "weighted-and-balanced"])
def test_strongly_imbalanced_single_label_is_scored_by_macro_f1(workspace, options):
    labels, bands, truth = defects_task()
    write_competition(workspace, "defects", labels, bands, {"label": "common"},
                      {"metric": "f1_macro"}, n_test=40)
    train_and_predict("defects", "--epochs", "10", *options)
    assert macro_f1_of(leaderboard_read(workspace, "defects")["label"], truth) > 0.8, \
        "the rare classes were not learned"


def tag_columns(frame: pd.DataFrame) -> pd.Series:
    """One 0/1 column per tag (Human Protein Atlas-style) as the tag strings they stand for."""
    assert set(frame[TAGS].to_numpy().ravel()) <= {"0", "1"}, "decided tags are 0 or 1"
    return pd.Series([" ".join(t for t in TAGS if row[t] == "1") for _, row in frame.iterrows()])


INIT_CASES = {  # name: (task, label column, the sample's cells, the target and metric init must
    # write, the leaderboard's scorer of the submission, the score it must beat)
    "cactus": (cactus_task, "has_cactus", {"has_cactus": 0.5}, "binary", "roc_auc",
               lambda frame, truth: auc_of(frame["has_cactus"], truth), 0.9),
    "planet": (planet_task, "tags", {"tags": "cloudy haze"}, {"kind": "multi_label", "delimiter": " "},
               "f2_samples", lambda frame, truth: f2_gain_of(frame["tags"], truth), 0.15),
    "tag_columns": (planet_task, "tags", {tag: 0 for tag in TAGS}, {"kind": "multi_label", "delimiter": " "},
                    "f2_samples", lambda frame, truth: f2_gain_of(tag_columns(frame), truth), 0.15),
    "aptos": (aptos_task, "diagnosis", {"diagnosis": 0}, {"kind": "regression", "grades": [0, 4]},
              "quadratic_weighted_kappa", lambda frame, truth: kappa_of(frame["diagnosis"], truth), 0.6),
    "defects": (defects_task, "label", {"label": "common"}, "single_label", "accuracy",
                lambda frame, truth: macro_f1_of(frame["label"], truth), 0.8),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", INIT_CASES)
def test_init_infers_each_kind_and_its_submission_scores_without_edits(workspace, capsys, name):
    """A download as a competition site gives it: init writes the yaml (kind, metric, presets),
    then check, train and predict run on it untouched, and the leaderboard scores the file."""
    task, column, cells, target, metric_name, scorer, bar = INIT_CASES[name]
    labels, bands, truth = task()
    write_download(workspace / "inputs" / name, labels, bands, cells, column=column)
    assert main(["init", name]) == 0
    printed = capsys.readouterr().out
    written = yaml.safe_load((workspace / "competition" / f"{name}.yaml").read_text())
    assert (written["target"], written["metric"]) == (target, metric_name)
    assert f"- metric: {metric_name} is a guess" in printed and "set target: in the yaml" in printed
    assert main(["check", name]) == 0, capsys.readouterr().out
    train_and_predict(name)
    assert scorer(leaderboard_read(workspace, name), truth) > bar
    assert run_summary(only_run(workspace, name))["metric"] == metric_name


def test_hard_labels_for_a_log_loss_metric_are_refused_before_training(workspace, capsys):
    rng = np.random.default_rng(5)
    classes = rng.integers(0, 3, 60)
    write_competition(workspace, "hard", [str(c) for c in classes[:48]], [[c] for c in classes],
                      {"label": "0"}, {"metric": "log_loss"}, n_test=12)
    assert main(["train", "hard", "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert "metric log_loss scores probabilities of each class" in error and "34.5 nats" in error
    assert not (workspace / "submissions" / "hard" / "runs").exists() or \
        not any((workspace / "submissions" / "hard" / "runs").iterdir())
    assert main(["check", "hard"]) == 1
    assert "34.5 nats" in capsys.readouterr().out


def test_check_reports_the_class_balance_and_every_class_too_small_for_the_folds(workspace, capsys):
    labels = ["a"] * 30 + ["b"] * 4 + ["c"] * 2
    write_competition(workspace, "rare", labels, [[0]] * 36 + [[1]] * 4, {"label": "a"}, {}, n_test=4)
    spec = yaml.safe_load((workspace / "competition" / "rare.yaml").read_text())
    spec["presets"]["cv"] = {"folds": 5, "members": [TINY_MEMBER]}
    (workspace / "competition" / "rare.yaml").write_text(yaml.safe_dump(spec))
    assert main(["check", "rare", "--preset", "cv"]) == 0
    out = capsys.readouterr().out
    assert "largest/smallest 15.0x): a 30 (83.3%), b 4 (11.1%), c 2 (5.6%)" in out
    assert "2 class(es) have fewer than 5 images, too few for 5 folds: never validated, always " \
           "trained on: b (4), c (2)." in out


def test_the_submission_follows_the_sample_and_the_metric():
    from compete.submission import build_submission, validate_submission
    from compete.targets import Binary, MultiLabel, Regression

    def filled(sample, target, metric, outputs, decisions=None):
        frame = build_submission(sample, "id", "label", target.classes, outputs, target, metric, decisions)
        validate_submission(frame, sample, "id", "label", target.classes, target, metric)
        return frame

    one_column = pd.DataFrame({"id": ["a", "b"], "label": [0, 0]})
    binary, probs = Binary(["0", "1"]), np.array([[0.3], [0.8]])
    assert filled(one_column, binary, "roc_auc", probs)["label"].tolist() == [0.3, 0.8]
    assert filled(one_column, binary, "accuracy", probs, {"thresholds": [0.25]})["label"].tolist() == ["1", "1"]
    per_class = pd.DataFrame({"id": ["a", "b"], "0": 0.5, "1": 0.5})
    assert np.allclose(filled(per_class, binary, "log_loss", probs)[["0", "1"]], [[0.7, 0.3], [0.2, 0.8]])
    tags, tag_probs = MultiLabel(["x", "y"]), np.array([[0.9, 0.4], [0.2, 0.1]])
    per_tag = pd.DataFrame({"id": ["a", "b"], "x": 0, "y": 0})
    assert filled(per_tag, tags, "f2_samples", tag_probs, {"thresholds": [0.5, 0.3]})[["x", "y"]] \
        .to_numpy().tolist() == [[1, 1], [1, 0]]  # decided tags; the second image gets its likeliest
    assert filled(per_tag, tags, "roc_auc", tag_probs)["y"].tolist() == [0.4, 0.1]
    assert filled(one_column, tags, "f2_samples", tag_probs)["label"].tolist() == ["x", "x"]
    graded = Regression([], 2.0, 1.0, [0, 4])
    assert filled(one_column, graded, "quadratic_weighted_kappa", np.array([[1.2], [7.0]]),
                  {"cuts": [0.5, 1.0, 2.5, 3.5]})["label"].tolist() == [2, 4]
