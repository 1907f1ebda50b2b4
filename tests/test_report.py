"""Plots and the HTML report of a trained tiny run."""
import base64
import json
import re
from collections import Counter

import numpy as np
import pytest

from compete.cli import main
from compete.plots import highest_loss
from compete.report import ANALYSIS, PLOTS, confusion, ensemble_oof

from helpers import make_competition, only_run, workspace_at

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny 4-class run shared by the tests of this module (training for real: they are slow)."""
    root = tmp_path_factory.mktemp("workspace")
    with workspace_at(root):
        tiny = make_competition(root, classes=("cat", "dog", "frog", "ship"), n_train=64)
        assert main(["train", tiny.name, "--device", "cpu"]) == 0
        run_dir = only_run(root, tiny.name)
        yield tiny, run_dir, root


def read(run_dir, name):
    return json.loads((run_dir / name).read_text())


@pytest.mark.slow
def test_training_writes_every_plot(trained):
    _, run_dir, _ = trained
    for name in PLOTS:
        content = (run_dir / name).read_bytes()
        assert content.startswith(PNG_SIGNATURE), name
        assert len(content) > 2000, name  # axes, text and pixels, not an empty canvas


@pytest.mark.slow
def test_confusion_matrix_counts_every_validated_image(trained):
    tiny, run_dir, _ = trained
    summary, analysis = read(run_dir, "summary.json"), read(run_dir, ANALYSIS)
    matrix = np.array(analysis["confusion"])
    assert matrix.shape == (len(tiny.classes), len(tiny.classes))
    assert matrix.sum() == summary["validated"] == analysis["validated"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(summary["ensemble_score"])  # metric: accuracy


def test_confusion_rows_are_true_classes():
    targets = np.array([0, 0, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 2, 0, 2])
    matrix = confusion(targets, predicted, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


@pytest.mark.slow
def test_per_class_table_counts_the_labelled_images(trained):
    tiny, run_dir, _ = trained
    per_class = read(run_dir, ANALYSIS)["per_class"]
    assert {row["class"]: row["images"] for row in per_class} == Counter(tiny.train["label"])
    matrix = np.array(read(run_dir, ANALYSIS)["confusion"])
    for i, row in enumerate(per_class):
        assert row["accuracy"] == pytest.approx(matrix[i, i] / matrix[i].sum())


@pytest.mark.slow
def test_the_analysis_scores_the_cross_fitted_predictions_that_the_reported_score_scores(trained, capsys):
    tiny, run_dir, _ = trained
    summary, analysis = read(run_dir, "summary.json"), read(run_dir, ANALYSIS)
    assert analysis["cross_fitted"] is True and analysis["metrics"]["accuracy"] == summary["ensemble_score"]
    saved = dict(np.load(run_dir / "oof_crossfit.npz"))
    assert len(saved["rows"]) == summary["validated"]
    try:  # the analysis reads the saved predictions: shift every decided label by one class
        np.savez(run_dir / "oof_crossfit.npz", **{**saved, "decided": (saved["decided"] + 1) % len(tiny.classes)})
        (run_dir / ANALYSIS).unlink()
        assert main(["report", tiny.name, "--run", run_dir.name]) == 0
        shifted = np.array(read(run_dir, ANALYSIS)["confusion"])
        np.testing.assert_array_equal(shifted, np.roll(analysis["confusion"], 1, axis=1))
        assert "each image predicted by an ensemble fitted without it" in (run_dir / "report.html").read_text()
    finally:
        np.savez(run_dir / "oof_crossfit.npz", **saved)
        (run_dir / ANALYSIS).unlink()
        assert main(["report", tiny.name, "--run", run_dir.name]) == 0


@pytest.mark.slow
def test_out_of_fold_rows_are_the_validation_images(trained):
    _, run_dir, _ = trained
    summary = read(run_dir, "summary.json")
    probs, rows = ensemble_oof(run_dir, summary)
    assert len(rows) == summary["validated"]
    assert np.allclose(probs[rows].sum(1), 1)


def test_highest_loss_picks_the_least_probable_true_class():
    targets = np.array([0, 1, 2, 0])
    probs = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.5, 0.5, 0.0]])
    assert highest_loss(targets, probs, 2).tolist() == [2, 1]


@pytest.mark.slow
def test_report_embeds_every_plot_and_the_tables(trained, capsys):
    tiny, run_dir, _ = trained
    capsys.readouterr()
    assert main(["report", tiny.name]) == 0
    path = capsys.readouterr().out.strip()
    assert path == str(run_dir / "report.html")
    page = (run_dir / "report.html").read_text()
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert sorted(base64.b64decode(data) for data in embedded) == \
        sorted((run_dir / name).read_bytes() for name in PLOTS)
    summary = read(run_dir, "summary.json")
    assert "Members and ensemble weights" in page and f"{summary['weights'][0]:.4f}" in page
    assert run_dir.name in page and "f1_macro" in page
    assert "src=\"file:" not in page and "<img src=\"/" not in page  # nothing outside the page


@pytest.mark.slow
def test_report_analyses_a_run_whose_analysis_is_missing(trained, capsys):
    tiny, run_dir, _ = trained
    analysis = read(run_dir, ANALYSIS)
    for name in [ANALYSIS, *PLOTS]:
        (run_dir / name).unlink()
    assert main(["report", tiny.name, "--run", run_dir.name]) == 0
    assert all((run_dir / name).is_file() for name in PLOTS)
    assert read(run_dir, ANALYSIS)["confusion"] == analysis["confusion"]


@pytest.mark.slow
def test_report_of_an_unknown_run_says_how_to_list_runs(trained, capsys):
    tiny, _, _ = trained
    assert main(["report", tiny.name, "--run", "no-such-run"]) == 2
    assert f"./run.sh runs {tiny.name}" in capsys.readouterr().err
