"""train -> predict as a user runs it, on tiny competitions the tests write."""
import numpy as np
import pandas as pd
import pytest

from compete.cli import main

from helpers import make_competition, only_run, run_summary

pytestmark = pytest.mark.slow  # trains for real


@pytest.mark.parametrize("zipped,channels,classes", [
    (False, 1, ("0", "1", "2")),
    (True, 3, ("cat", "dog", "frog", "ship")),
])
def test_train_then_predict_writes_a_valid_submission(workspace, zipped, channels, classes):
    tiny = make_competition(workspace, zipped=zipped, channels=channels, classes=classes)
    assert main(["train", tiny.name, "--device", "cpu"]) == 0
    assert main(["predict", tiny.name, "--device", "cpu"]) == 0
    submission = pd.read_csv(workspace / "submissions" / tiny.name / "submission.csv", dtype=str)
    sample = pd.read_csv(tiny.data_dir / "sample_submission.csv", dtype=str)
    assert list(submission.columns) == list(sample.columns)
    assert submission["id"].tolist() == sample["id"].tolist()
    assert set(submission["label"]) <= set(classes)


def test_kfold_ensemble_validates_every_image_out_of_fold(workspace):
    member = {"model": "cnn", "model_args": {"widths": [8, 16], "convs": 1, "dropout": 0.0},
              "epochs": 2, "batch_size": 8, "lr": 0.01, "pad_crop": 0}
    preset = {"members": [member, {**member, "model_args": {"widths": [4, 8], "convs": 1}}]}
    tiny = make_competition(workspace, n_train=36, preset=preset)
    assert main(["train", tiny.name, "--device", "cpu", "--folds", "3"]) == 0
    run_dir = only_run(workspace, tiny.name)
    summary = run_summary(run_dir)
    assert summary["folds"] == 3 and summary["validated"] == 36
    assert len(summary["weights"]) == 2 and abs(sum(summary["weights"]) - 1) < 1e-6
    assert sorted(p.name for p in (run_dir / "members").iterdir()) == \
        [f"m{m}_f{f}.safetensors" for m in range(2) for f in range(3)]
    oof = np.load(run_dir / "oof_m0.npy")
    assert np.allclose(oof.sum(1), 1, atol=1e-4)  # every training image predicted out of fold
    assert main(["predict", tiny.name, "--device", "cpu"]) == 0
