"""Honest ensemble scores: temperatures, weights and decisions are scored only on rows they were
not fitted on (cross-fitting); a temperature calibrates the fold model it was fitted on, before
folds are averaged; normalisation statistics come from each fold's own training part."""
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from compete.config import Member, load_competition, resolve_run
from compete.data import training_dataset
from compete.splits import validation_splits
from compete.ensemble import (Ensemble, blend_run, calibrate_rows, cross_fitted, crossfit_parts,
                              fit_ensemble, fold_temperature, member_score)
from compete.imagestore import channel_stats
from compete.metrics import decided_score, score
from compete.models import NetSpec, build_model
from compete.runtime import start_session
from compete.pipeline import OutOfFold, _summarize, print_summary, train_competition
from compete.predict import fold_outputs
from compete.runs import read_checkpoint, save_checkpoint
from compete.targets import target_from_dict

from helpers import cpu_session, make_competition, with_pictures

BINARY = target_from_dict({"kind": "binary", "classes": ["no", "yes"]})
SINGLE = target_from_dict({"kind": "single_label", "classes": ["a", "b", "c"]})


def noise_run(seed: int, rows: int = 200, members: int = 10):
    """Out-of-fold outputs of members that know nothing: random labels, random probabilities."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, rows)
    return [rng.random((rows, 1)).astype(np.float32) for _ in range(members)], targets


def test_members_of_pure_noise_look_better_than_chance_in_sample_but_not_cross_fitted():
    """Weights and a threshold fitted on the rows they score find patterns in noise."""
    in_sample, crossed = [], []
    for seed in range(20):
        oof, targets = noise_run(seed)
        folds = np.zeros(len(targets), np.int64)  # a hold-out: one fold model

        def fit(probs, fit_targets, fit_folds):
            return fit_ensemble(probs, fit_targets, fit_folds, 1, BINARY, "accuracy")
        fitted = fit(oof, targets, folds)
        in_sample.append(score("accuracy", BINARY, targets, fitted.outputs(oof, folds, BINARY), fitted.decisions))
        parts = crossfit_parts(folds, targets, seed)
        crossed.append(cross_fitted(fit, oof, targets, folds, parts, BINARY).score("accuracy", BINARY, targets))
    assert np.mean(in_sample) > 0.54  # chance is 0.5: the in-sample fit overstates
    assert abs(np.mean(crossed) - 0.5) < 0.03


def test_a_members_fitted_threshold_is_scored_out_of_sample():
    in_sample, crossed = [], []
    for seed in range(20):
        [probs], targets = noise_run(seed, members=1)
        parts = crossfit_parts(np.zeros(len(targets), np.int64), targets, seed)
        in_sample.append(decided_score("accuracy", BINARY, targets, probs)[0])
        crossed.append(member_score(probs, targets, parts, BINARY, "accuracy"))
    assert np.mean(in_sample) > 0.54 and abs(np.mean(crossed) - 0.5) < 0.03


def test_the_recorded_and_printed_ensemble_score_is_the_cross_fitted_one(capsys):
    oof, targets = noise_run(seed=0)
    folds = np.zeros(len(targets), np.int64)
    parts = crossfit_parts(folds, targets, seed=0)
    job = SimpleNamespace(session=SimpleNamespace(comp=SimpleNamespace(metric="accuracy"), run=SimpleNamespace(seed=0)),
                          data=SimpleNamespace(target=BINARY), splits=[None])  # a hold-out run
    rows = [{"member": m, "model": "cnn", "score": 0.5, "seconds": 1.0, "selected": False} for m in range(len(oof))]
    out_of_fold = OutOfFold(np.arange(len(targets)), oof, targets, folds, parts)
    summary, predictions = _summarize(job, out_of_fold, rows, 0, time.perf_counter())

    def fit(probs, fit_targets, fit_folds):
        return fit_ensemble(probs, fit_targets, fit_folds, 1, BINARY, "accuracy")
    crossed = cross_fitted(fit, oof, targets, folds, parts, BINARY).score("accuracy", BINARY, targets)
    assert summary["ensemble_score"] == crossed < summary["ensemble_score_in_sample"]
    assert np.mean(predictions.decided == targets) == crossed  # the predictions the report analyses
    assert summary["crossfit_parts"] == 5 and np.bincount(parts).min() >= 35  # five stratified parts
    print_summary(summary)
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ensemble")]
    assert line.split()[1] == f"{crossed:.4f}"


def test_no_part_is_scored_by_a_fit_that_saw_it():
    """Every row is predicted once, by a fit that never received it."""
    rows = 60
    oof = [np.arange(rows, dtype=np.float64)[:, None] / rows]  # a row's output names the row
    targets = np.arange(rows) % 2
    folds = np.repeat(np.arange(3), rows // 3)  # k-fold: the parts are the run's folds
    seen, predicted = [], []

    class Recorded(Ensemble):
        def outputs(self, probs, fold_of_rows, target):
            predicted.append(set(np.rint(probs[0][:, 0] * rows).astype(int)))
            return probs[0]

    def fit(probs, fit_targets, fit_folds):
        seen.append(set(np.rint(probs[0][:, 0] * rows).astype(int)))
        return Recorded([[1.0] * 3], np.ones(1), {})

    crossed = cross_fitted(fit, oof, targets, folds, crossfit_parts(folds, targets, 0), BINARY)
    np.testing.assert_array_equal(crossed.outputs, oof[0])  # each row's prediction is back in its place
    assert len(seen) == 3 and all(not (fitted & held) for fitted, held in zip(seen, predicted))
    assert sorted(row for held in predicted for row in held) == list(range(rows))


def test_each_fold_model_gets_the_temperature_of_its_own_outputs():
    """Fold 0 over-confident, fold 1 under-confident: one shared temperature suits neither."""
    rng = np.random.default_rng(5)
    truth = rng.dirichlet(np.full(3, 0.7), size=6000)
    targets = (rng.random((len(truth), 1)) > truth.cumsum(1)).sum(1).clip(max=2)
    folds = np.arange(len(truth)) % 2
    oof = np.where((folds == 0)[:, None], SINGLE.calibrate(truth, 0.5), SINGLE.calibrate(truth, 2.0))
    [temperatures] = fit_ensemble([oof], targets, folds, 2, SINGLE, "log_loss").temperatures
    assert temperatures[0] == pytest.approx(2.0, rel=0.15) and temperatures[1] == pytest.approx(0.5, rel=0.15)
    np.testing.assert_allclose(calibrate_rows(oof, folds, temperatures, SINGLE), truth, atol=0.05)


def write_fold_model(run_dir, fold: int, sharpness: float) -> None:
    """A member checkpoint whose logits are scaled by `sharpness`."""
    shape = NetSpec(channels=1, image_size=8, num_classes=3, mean=[0.5], std=[0.25])
    member = Member(model="cnn", model_args={"widths": [4], "convs": 1})
    torch.manual_seed(fold)
    model = build_model(member, shape)
    state = {key: value * sharpness if key.endswith("weight") and value.ndim == 2 else value
             for key, value in model.state_dict().items()}  # the linear head
    save_checkpoint(run_dir / "members" / f"m0_f{fold}.safetensors", state, member, shape, {"fold": fold})


def test_prediction_calibrates_each_fold_model_before_the_folds_are_averaged(tmp_path):
    (tmp_path / "members").mkdir()
    write_fold_model(tmp_path, 0, sharpness=8.0)
    write_fold_model(tmp_path, 1, sharpness=0.5)
    images = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    [folds] = fold_outputs(tmp_path, images, cpu_session().runtime)
    (_, sharp), (_, soft) = folds
    summary = {"temperatures": [[4.0, 0.6]], "weights": [1.0]}
    expected = (SINGLE.calibrate(sharp, 4.0) + SINGLE.calibrate(soft, 0.6)) / 2
    np.testing.assert_allclose(blend_run([folds], summary, SINGLE), expected, atol=1e-6)
    averaged_then_calibrated = SINGLE.calibrate((sharp + soft) / 2, np.mean([4.0, 0.6]))
    assert np.abs(expected - averaged_then_calibrated).max() > 0.01  # the old order differs


def test_a_model_refit_on_all_images_takes_its_members_mean_fold_temperature():
    assert fold_temperature([0.5, 1.5, 1.0], None) == pytest.approx(1.0)
    assert fold_temperature([0.5, 1.5, 1.0], 1) == 1.5
    probs = np.random.default_rng(1).dirichlet(np.ones(3), 5)
    np.testing.assert_allclose(blend_run([[(None, probs)]], {"temperatures": [[0.5, 1.5]], "weights": [1.0]}, SINGLE),
                               SINGLE.calibrate(probs, 1.0))


def test_kfold_statistics_come_from_each_folds_training_part(workspace):
    preset = {"members": [{"model": "cnn", "model_args": {"widths": [4], "convs": 1}, "epochs": 1,
                           "batch_size": 8, "lr": 0.01, "pad_crop": 0, "normalize": "data"}]}
    tiny = make_competition(workspace, n_train=36, size=16, preset=preset)
    with_pictures(tiny)
    comp = load_competition(tiny.name)
    run = resolve_run(comp, "default", {"device": "cpu", "folds": 3})
    run_dir = train_competition(start_session(comp, run), tiny.data_dir)
    dataset = training_dataset(comp, run, tiny.data_dir)
    splits = validation_splits(dataset.strata, run, dataset.groups)
    means = []
    for f, (train_idx, _) in enumerate(splits):
        shape = read_checkpoint(run_dir / "members" / f"m0_f{f}.safetensors")["shape"]
        mean, std = channel_stats(dataset.train_images, train_idx)
        np.testing.assert_allclose(shape["mean"], mean, rtol=1e-6)
        np.testing.assert_allclose(shape["std"], std, rtol=1e-6)
        means.append(shape["mean"][0])
    assert len(set(means)) == 3  # one per fold
    assert channel_stats(dataset.train_images)[0][0] not in means  # never every image's
    [temperatures] = json.loads((run_dir / "summary.json").read_text())["temperatures"]
    assert len(temperatures) == 3  # one per fold model
    folds = np.load(run_dir / "oof_folds.npy")
    assert all((folds[val_idx] == f).all() for f, (_, val_idx) in enumerate(splits))
