"""train -> predict as a user runs it, on tiny competitions the tests write."""
import pandas as pd
import pytest

from compete.cli import main

from conftest import make_competition


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


def test_predict_without_a_trained_run_says_what_to_do(tiny, capsys):
    assert main(["predict", tiny.name, "--device", "cpu"]) == 2
    assert f"./run.sh train {tiny.name}" in capsys.readouterr().err
