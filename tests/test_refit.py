"""train --refit: after validation each member trains again on every labelled image, predict
uses those models (or blends them with the fold models), and an interrupted refit resumes."""
import json

import numpy as np
import pytest
import torch

from compete import pipeline, predict, train
from compete.cli import main
from compete.config import load_competition, resolve_run
from compete.errors import PipelineError
from compete.history import MANIFEST
from compete.leaderboard import upload_message
from compete.runs import read_checkpoint

from helpers import TINY_PRESET, make_competition, run_summary

MEMBER = TINY_PRESET["members"][0]


def latest_run(workspace):
    return max((workspace / "submissions" / "tiny" / "runs").iterdir())


@pytest.fixture
def fits(monkeypatch) -> list[dict]:
    """Every fit the pipeline starts: its fold's index, training and validation rows, epochs."""
    calls = []

    def spy(model, member, session, data, fold, log=None):
        calls.append({"index": fold.index, "train": np.sort(fold.train_idx), "val": fold.val_idx,
                      "epochs": member.epochs, "seed": fold.seed})
        return train.fit(model, member, session, data, fold, log)
    monkeypatch.setattr(pipeline, "fit", spy)
    return calls


@pytest.mark.slow  # trains for real
def test_refit_trains_every_member_on_every_image_after_validating(workspace, fits, capsys):
    tiny = make_competition(workspace, n_train=48)
    assert main(["train", "tiny", "--device", "cpu", "--refit"]) == 0
    held_out, refit = fits
    assert held_out["index"] == 0 and len(held_out["val"]) == 12 and len(held_out["train"]) == 36
    assert refit["index"] is None and len(refit["val"]) == 0
    assert np.array_equal(refit["train"], np.arange(len(tiny.train)))  # every labelled image
    assert refit["epochs"] == MEMBER["epochs"] and refit["seed"] != held_out["seed"]
    run_dir = latest_run(workspace)
    summary = run_summary(run_dir)
    assert summary["refit"] is True and summary["members"][0]["refit_epochs"] == MEMBER["epochs"]
    assert summary["members"][0]["score"] is not None  # the hold-out model's validation score
    assert sorted(p.name for p in (run_dir / "members").iterdir()) == ["m0_f0.safetensors", "m0_full.safetensors"]
    assert "refit on every labelled image: m0 3 epochs" in capsys.readouterr().out


@pytest.mark.slow  # trains for real
def test_a_member_that_kept_its_best_epoch_refits_for_its_folds_mean_best_epoch(workspace, fits):
    make_competition(workspace, n_train=48, preset={"members": [{**MEMBER, "select": "best", "epochs": 4}]})
    assert main(["train", "tiny", "--device", "cpu", "--refit", "--folds", "2"]) == 0
    run_dir = latest_run(workspace)
    kept = [read_checkpoint(run_dir / "members" / f"m0_f{f}.safetensors")["epoch"] for f in range(2)]
    assert fits[-1]["index"] is None and fits[-1]["epochs"] == max(1, int(np.mean(kept) + 0.5))
    assert fits[-1]["epochs"] < 4  # not the preset's schedule: the folds kept epochs 2 and 4 here
    assert run_summary(run_dir)["members"][0]["refit_epochs"] == fits[-1]["epochs"]


@pytest.mark.slow  # trains for real
@pytest.mark.parametrize("blend", [False, True])
def test_predict_uses_the_refit_models_or_blends_them(workspace, monkeypatch, capsys, blend):
    make_competition(workspace, n_train=48)
    assert main(["train", "tiny", "--device", "cpu", "--refit", "--set", f"refit_blend={blend}"]) == 0
    loaded = loaded_checkpoints(monkeypatch)
    capsys.readouterr()
    assert main(["predict", "tiny", "--device", "cpu"]) == 0
    assert sorted(loaded) == (["m0_f0.safetensors", "m0_full.safetensors"] if blend else ["m0_full.safetensors"])
    said = capsys.readouterr().out
    assert ("refit and fold models, half and half" if blend else "refit models, trained on every") in said
    assert manifest(workspace)["models"] == ("blend" if blend else "refit")


def loaded_checkpoints(monkeypatch) -> list[str]:
    """The names of the checkpoints predict loads from now on."""
    loaded = []
    real_load = predict.load_checkpoint

    def spy(path, device):
        loaded.append(path.name)
        return real_load(path, device)
    monkeypatch.setattr(predict, "load_checkpoint", spy)
    return loaded


def manifest(workspace) -> dict:
    return json.loads((workspace / "submissions" / "tiny" / MANIFEST).read_text())


@pytest.mark.slow  # trains for real
def test_predict_models_chooses_among_a_refit_runs_models_and_each_is_its_own_prediction(workspace, monkeypatch):
    make_competition(workspace, n_train=48)
    assert main(["train", "tiny", "--device", "cpu", "--refit"]) == 0
    loaded, run_dir = loaded_checkpoints(monkeypatch), latest_run(workspace)
    assert main(["predict", "tiny", "--device", "cpu"]) == 0
    assert manifest(workspace)["models"] == "blend"  # the default: it beat the refit alone (BENCHMARKS)
    probs = {}
    for models, names in (("folds", ["m0_f0.safetensors"]), ("refit", ["m0_full.safetensors"]), ("blend", ["m0_f0.safetensors", "m0_full.safetensors"])):
        loaded.clear()
        assert main(["predict", "tiny", "--device", "cpu", "--models", models]) == 0
        assert sorted(loaded) == names and manifest(workspace)["models"] == models
        probs[models] = np.load(run_dir / "test_probs.npy")
    assert not np.allclose(probs["folds"], probs["refit"])  # two different models
    np.testing.assert_allclose(probs["blend"], (probs["folds"] + probs["refit"]) / 2, atol=1e-6)
    assert "members cnn (blend) local" in upload_message(run_dir, manifest(workspace))  # what Kaggle shows


@pytest.mark.slow  # trains for real
def test_predict_without_a_refit_uses_the_fold_models(workspace, capsys):
    make_competition(workspace, n_train=48)
    assert main(["train", "tiny", "--device", "cpu"]) == 0
    assert main(["predict", "tiny", "--device", "cpu"]) == 0
    assert "(fold models)" in capsys.readouterr().out
    assert run_summary(latest_run(workspace))["refit"] is False
    assert "members cnn local" in upload_message(latest_run(workspace), manifest(workspace))
    capsys.readouterr()
    assert main(["predict", "tiny", "--device", "cpu", "--models", "refit"]) == 2
    assert "has no refit models, so --models refit has nothing to use. Train with --refit" in capsys.readouterr().err


@pytest.mark.slow  # trains for real
def test_an_interrupted_refit_resumes_to_the_weights_of_an_uninterrupted_one(workspace, tmp_path,
                                                                               monkeypatch, capsys):
    make_competition(workspace, n_train=48)
    assert main(["train", "tiny", "--device", "cpu", "--refit"]) == 0
    expected = read_checkpoint(latest_run(workspace) / "members" / "m0_full.safetensors")["state_dict"]

    real_log = train._log

    def interrupt(record, log_path, label):  # Ctrl-C after the refit's second epoch is logged
        real_log(record, log_path, label)
        if "refit" in label and record["epoch"] == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(train, "_log", interrupt)
    assert main(["train", "tiny", "--device", "cpu", "--refit"]) == 130
    interrupted = latest_run(workspace)
    assert (interrupted / "members" / "resume_m0_full.pt").is_file()
    assert not (interrupted / "members" / "m0_full.safetensors").exists()
    assert not (interrupted / "summary.json").exists()

    monkeypatch.setattr(train, "_log", real_log)
    capsys.readouterr()
    assert main(["train", "tiny", "--device", "cpu", "--resume"]) == 0
    assert "refit on all 48 images: resuming after epoch 1" in capsys.readouterr().out
    actual = read_checkpoint(interrupted / "members" / "m0_full.safetensors")["state_dict"]
    assert actual.keys() == expected.keys()
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name
    assert not (interrupted / "members" / "resume_m0_full.pt").exists()
    assert run_summary(interrupted)["refit"] is True


def test_refit_without_anything_held_out_is_refused_at_load(workspace):
    make_competition(workspace, preset={"val_fraction": 0.0, "members": [MEMBER]})
    with pytest.raises(PipelineError, match="refit: true with val_fraction 0 and no folds"):
        resolve_run(load_competition("tiny"), "default", {"refit": True})
