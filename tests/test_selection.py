"""What a run reports is what the leaderboard will see: a fixed schedule keeps and scores its
final weights; keeping the best epoch is allowed, and then the run says that its score was
selected on the data that reports it."""
import json

import pandas as pd
import pytest

from compete.cli import main
from compete.config import Member, load_competition, resolve_run
from compete.errors import PipelineError
from compete.train import selects_best
from compete.runs import read_checkpoint

from helpers import nchw, make_competition, run_summary

# sgd at this rate peaks at its first epoch on this data, falls, and recovers by its last
# (validation accuracy 1.0, 0.625, 0.625, 1.0, 1.0 on the CPU): best and last epochs differ
MEMBER = {"model": "cnn", "model_args": {"widths": [8, 16], "convs": 1, "dropout": 0.0},
          "epochs": 5, "batch_size": 8, "optimizer": "sgd", "lr": 0.3, "warmup": 0.5, "pad_crop": 0}


def latest_run(workspace, name: str = "tiny"):
    return max((workspace / "submissions" / name / "runs").iterdir())


def logged_epochs(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def kept_epoch(run_dir) -> int:
    import torch
    return read_checkpoint(run_dir / "members" / "m0_f0.safetensors")["epoch"]


def test_select_defaults_to_last_and_patience_implies_best():
    assert Member().select == "last" and not selects_best(Member())
    assert selects_best(Member(select="best"))
    assert selects_best(Member(patience=2))  # early stopping needs a best epoch


def test_an_unknown_select_is_refused_at_load(workspace):
    make_competition(workspace, preset={"members": [{**MEMBER, "select": "first"}]})
    with pytest.raises(PipelineError, match="select: 'first' is not one of last, best"):
        load_competition("tiny")


@pytest.mark.slow
def test_a_fixed_schedule_keeps_its_last_epoch_and_says_nothing_is_selected(workspace, capsys):
    make_competition(workspace, n_train=64, preset={"val_fraction": 0.25, "members": [MEMBER]})
    assert main(["train", "tiny", "--device", "cpu"]) == 0
    run_dir = latest_run(workspace)
    summary = run_summary(run_dir)
    accuracies = [row["val_accuracy"] for row in logged_epochs(run_dir)]
    assert accuracies.index(max(accuracies)) + 1 < MEMBER["epochs"]  # the best epoch is not the last
    assert kept_epoch(run_dir) == MEMBER["epochs"]
    assert summary["selected_on_validation"] is False and summary["members"][0]["selected"] is False
    assert "optimistic" not in capsys.readouterr().out


@pytest.mark.slow
def test_select_best_keeps_the_best_epoch_and_the_summary_says_it_is_selected(workspace, capsys):
    make_competition(workspace, n_train=64, preset={"val_fraction": 0.25, "members": [
        {**MEMBER, "select": "best"}]})
    assert main(["train", "tiny", "--device", "cpu"]) == 0
    run_dir = latest_run(workspace)
    summary = run_summary(run_dir)
    accuracies = [row["val_accuracy"] for row in logged_epochs(run_dir)]
    assert kept_epoch(run_dir) == 1 + accuracies.index(max(accuracies)) < MEMBER["epochs"]
    assert summary["members"][0]["score"] == pytest.approx(max(accuracies))
    assert summary["selected_on_validation"] is True and summary["members"][0]["selected"] is True
    assert "selected on the hold-out that reports the score: optimistic" in capsys.readouterr().out


@pytest.mark.slow
def test_the_reported_score_is_the_saved_final_weights_score_with_the_submissions_views(workspace):
    """Computed here from the checkpoint alone: its weights, its member's TTA views, the log loss
    of scikit-learn on the hold-out rows of the run's split."""
    import numpy as np
    import torch
    from sklearn.metrics import log_loss

    from compete.augment import TTA
    from compete.data import training_dataset
    from compete.splits import validation_splits
    from compete.runs import load_checkpoint

    member = {**MEMBER, "ema": 0.9, "tta": ["identity", "hflip", "shift_left"]}
    tiny = make_competition(workspace, n_train=64, metric="log_loss", hflip=True,
                            preset={"val_fraction": 0.25, "members": [member]})
    pd.DataFrame({"id": tiny.test_ids, **{label: 1 / 3 for label in tiny.classes}}).to_csv(
        tiny.data_dir / "sample_submission.csv", index=False)  # log loss: a probability per class
    assert main(["train", "tiny", "--device", "cpu", "--set", "precision=fp32"]) == 0
    run_dir = latest_run(workspace)
    comp = load_competition("tiny")
    run = resolve_run(comp, "default")
    dataset = training_dataset(comp, run, tiny.data_dir)
    [(_, val_idx)] = validation_splits(dataset.strata, run, dataset.groups)
    model, saved = load_checkpoint(run_dir / "members" / "m0_f0.safetensors", torch.device("cpu"))
    scaled = nchw(dataset.train_images[val_idx]).float() / 255
    with torch.no_grad():
        views = [model(TTA[name](scaled)).softmax(1).numpy() for name in saved.tta]
    expected = log_loss(dataset.train_targets[val_idx], np.mean(views, axis=0), labels=[0, 1, 2])
    summary = run_summary(run_dir)
    assert summary["members"][0]["score"] == pytest.approx(expected, rel=1e-5)
    assert kept_epoch(run_dir) == member["epochs"]
    identity_alone = log_loss(dataset.train_targets[val_idx], views[0], labels=[0, 1, 2])
    assert identity_alone != pytest.approx(expected, rel=1e-5)  # the views made a difference
    logged = logged_epochs(run_dir)
    assert logged[-1]["val_log_loss_tta"] == pytest.approx(expected, rel=1e-5)
    assert all("val_log_loss_tta" not in row for row in logged[:-1])  # earlier epochs: identity only
