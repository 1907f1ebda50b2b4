"""Learning from a teacher run: `train --pseudo RUN` (the test images join every fold's training
part with the teacher's soft targets) and `train --distill RUN` (the teacher's out-of-fold outputs
on the train images too), for every target kind, refused when the teacher cannot teach."""
import signal
import time

import numpy as np
import pytest
import torch

from compete import budget, pipeline, report, train
from compete.cli import main
from compete.config import Member, RunConfig
from compete.losses import SoftTargets, criterion, soft_loss
from compete.runs import read_checkpoint
from compete.targets import Binary, MultiLabel, Regression, Target
from compete.ensemble import blend_per_fold
from compete.teaching import Teacher, confidence, joined_splits, lesson, teacher_saw

from helpers import cli_process, make_competition, run_summary
from test_target_kinds import aptos_task, cactus_task, planet_task, write_competition

PRESET = {"val_fraction": 0.25, "members": [{
    "model": "cnn", "model_args": {"widths": [8, 16], "convs": 1, "dropout": 0.0},
    "epochs": 2, "batch_size": 8, "lr": 0.01, "pad_crop": 0}]}


def runs(workspace, name="tiny") -> list:
    return sorted((workspace / "submissions" / name / "runs").iterdir())


def teacher_run(workspace, *options: str, name: str = "tiny"):
    """A trained and predicted run of `name`: its folder."""
    assert main(["train", name, "--device", "cpu", *options]) == 0
    run_dir = runs(workspace, name)[-1]
    assert main(["predict", name, "--device", "cpu", "--run", run_dir.name]) == 0
    return run_dir


@pytest.fixture
def fits(monkeypatch) -> list:
    """Every fit the pipeline starts: its fold, and every row whose soft target a training step used."""
    calls = []
    real_rows = SoftTargets.rows

    def spy_rows(self, index):
        calls[-1]["taught"].update(index.tolist())
        return real_rows(self, index)

    def spy_fit(model, member, session, data, fold, log=None):
        calls.append({"fold": fold, "taught": set(), "labelled": len(data.labels) if data.soft is None
                      else int((data.soft.label_weight > 0).sum()), "rows": len(data.labels),
                      "soft": None if data.soft is None else data.soft.values.cpu().numpy()})
        return train.fit(model, member, session, data, fold, log)
    monkeypatch.setattr(SoftTargets, "rows", spy_rows)
    monkeypatch.setattr(pipeline, "fit", spy_fit)
    return calls


def test_the_joined_rows_join_each_training_part_and_no_validation_part():
    splits = [(np.array([0, 1, 2]), np.array([3, 4])), (np.array([3, 4]), np.array([0, 1, 2]))]
    joined = joined_splits(splits, 5, 3)
    for (train_idx, val_idx), (old_train, old_val) in zip(joined, splits):
        assert np.array_equal(val_idx, old_val)
        assert np.array_equal(train_idx, np.r_[old_train, 5, 6, 7])


@pytest.mark.slow  # trains for real
def test_no_validation_row_ever_sees_a_pseudo_target(workspace, fits, capsys):
    tiny = make_competition(workspace, n_train=48, n_test=16, preset=PRESET)
    teacher = teacher_run(workspace, "--folds", "2")
    fits.clear()
    capsys.readouterr()
    assert main(["train", "tiny", "--device", "cpu", "--folds", "2", "--pseudo", teacher.name, "--refit"]) == 0
    assert f"pseudo-labels from run {teacher.name}: 16 test images join" in capsys.readouterr().out
    assert len(fits) == 3  # two folds, then the refit
    per_fold = np.load(teacher / "test_probs_folds.npy")  # the teacher's blend of each fold's models
    assert per_fold.shape == (2, 16, 3) and not np.allclose(per_fold[0], per_fold[1])
    for call in fits:
        val = set(call["fold"].val_idx.tolist())
        assert call["taught"], "no step used a soft target"
        assert not val & call["taught"], "a validation row was trained on with a pseudo target"
        assert set(range(48, 64)) <= set(call["fold"].train_idx.tolist())  # every test image trains
        assert max(val, default=0) < len(tiny.train)  # validation: labelled images only
        # same seed and folds: fold f learns from the teacher's fold f, which never saw its validation
        # images; the refit on every image learns the teacher's blend
        index = call["fold"].index
        taught_by = np.load(teacher / "test_probs.npy") if index is None else per_fold[index]
        assert np.allclose(call["soft"][48:], taught_by, atol=1e-6)
    summary = run_summary(runs(workspace)[-1])
    assert summary["teacher"]["run"] == teacher.name and summary["teacher"]["mode"] == "pseudo"
    assert summary["teacher"]["per_fold"] and summary["teacher"]["saw_validation_images"] == 0
    assert summary["validated"] == 48
    # a pseudo run's predictions teach the next round
    assert main(["predict", "tiny", "--device", "cpu"]) == 0
    assert main(["train", "tiny", "--device", "cpu", "--pseudo", runs(workspace)[-1].name]) == 0
    capsys.readouterr()
    assert main(["runs", "tiny"]) == 0
    assert f"taught by {teacher.name} (pseudo)" in capsys.readouterr().out


@pytest.mark.slow  # trains for real
def test_a_teacher_that_trained_on_the_validation_images_teaches_per_fold_or_is_named(workspace, capsys):
    """A hold-out teacher refit on every image: its blend (fold model and refit) has seen every
    validation image of a run on its split, which `train` says; predicted with its fold models
    alone, it teaches per fold and has seen none. A predict that cannot blend per fold removes the
    earlier per-fold file rather than leave it beside outputs it did not come from."""
    make_competition(workspace, n_train=48, n_test=16, preset=PRESET)
    teacher = teacher_run(workspace, "--refit")
    per_fold = teacher / "test_probs_folds.npy"
    assert np.load(per_fold).shape == (1, 16, 3)  # predict's default: fold model and refit blended
    assert main(["predict", "tiny", "--device", "cpu", "--run", teacher.name, "--models", "refit"]) == 0
    assert not per_fold.exists()
    capsys.readouterr()
    assert main(["train", "tiny", "--device", "cpu", "--pseudo", teacher.name]) == 0
    said = capsys.readouterr().out
    assert "note: the teacher trained on 12 of this run's validation images" in said
    assert run_summary(runs(workspace)[-1])["teacher"]["saw_validation_images"] == 12
    assert main(["predict", "tiny", "--device", "cpu", "--run", teacher.name, "--models", "folds"]) == 0
    capsys.readouterr()
    assert main(["train", "tiny", "--device", "cpu", "--pseudo", teacher.name]) == 0
    said = capsys.readouterr().out
    assert "each fold taught them by the teacher's model of the same fold" in said
    assert "note: the teacher trained on" not in said
    summary = run_summary(runs(workspace)[-1])
    assert summary["teacher"]["per_fold"] and summary["teacher"]["saw_validation_images"] == 0
    # distilled, its out-of-fold outputs are on this run's validation images alone: none trains on one
    assert main(["train", "tiny", "--device", "cpu", "--distill", teacher.name]) == 0
    said = capsys.readouterr().out
    assert "0 train images' out-of-fold outputs" in said and "no train image learns from it" in said
    assert run_summary(runs(workspace)[-1])["teacher"]["taught_train_images"] == 0
    assert main(["train", "tiny", "--device", "cpu", "--pseudo", teacher.name, "--seed", "1"]) == 0
    assert "note: the teacher trained on" in capsys.readouterr().out  # another split: the blend teaches


@pytest.mark.slow  # trains for real
def test_distillation_learns_from_the_teachers_out_of_fold_outputs_and_its_test_outputs(workspace, fits):
    make_competition(workspace, n_train=48, n_test=16, preset=PRESET)
    teacher = teacher_run(workspace, "--folds", "2")
    fits.clear()
    assert main(["train", "tiny", "--device", "cpu", "--folds", "2", "--distill", teacher.name]) == 0
    for call in fits:
        val = set(call["fold"].val_idx.tolist())
        assert not val & call["taught"]
        assert set(call["fold"].train_idx.tolist()) == call["taught"]  # every training row: oof or test
    assert run_summary(runs(workspace)[-1])["teacher"]["taught_train_images"] == 48


@pytest.mark.slow  # trains for real
@pytest.mark.parametrize("refused", ["other competition", "other classes", "no test predictions"])
def test_a_teacher_that_cannot_teach_is_refused_with_one_line(workspace, capsys, refused):
    make_competition(workspace, n_train=24, n_test=8, preset=PRESET)
    make_competition(workspace, "other", n_train=24, n_test=8, preset=PRESET,
                     classes=("0", "1") if refused == "other classes" else ("0", "1", "2"))
    if refused == "other competition":
        teacher = teacher_run(workspace, name="other")
    elif refused == "other classes":  # the same competition, its labels changed since
        teacher = teacher_run(workspace, name="other")
        (workspace / "submissions" / "tiny" / "runs").mkdir(parents=True)
        teacher.rename(workspace / "submissions" / "tiny" / "runs" / teacher.name)
        config = (workspace / "submissions" / "tiny" / "runs" / teacher.name / "config.json")
        config.write_text(config.read_text().replace('"name": "other"', '"name": "tiny"'))
    else:
        assert main(["train", "tiny", "--device", "cpu"]) == 0
        teacher = runs(workspace)[-1]
    capsys.readouterr()
    run_id = str(teacher) if refused == "other competition" else teacher.name
    assert main(["train", "tiny", "--device", "cpu", "--pseudo", run_id]) == 2
    error = capsys.readouterr().err.split("\r")[-1]  # after the decoding bars
    assert error.count("\n") == 1 and error.startswith(f"error: Cannot learn from run {teacher.name}")
    assert {"other competition": "belongs to competition other, not tiny",
            "other classes": "was trained for other classes",
            "no test predictions": "has no test predictions"}[refused] in error


def test_one_teacher_per_run_and_settings_in_range(workspace, capsys):
    make_competition(workspace, n_train=24, n_test=8, preset=PRESET)
    assert main(["train", "tiny", "--device", "cpu", "--pseudo", "a", "--distill", "b"]) == 2
    assert "give one of --pseudo, --distill" in capsys.readouterr().err
    assert main(["train", "tiny", "--device", "cpu", "--set", "distill_temperature=0"]) == 2
    assert "distill_temperature 0.0 is outside (0, inf]" in capsys.readouterr().err


KINDS = {"single_label": Target(["a", "b", "c"]), "binary": Binary(["n", "y"]),
         "multi_label": MultiLabel(["p", "q"]), "regression": Regression([], 2.0, 0.5)}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_the_soft_loss_is_least_where_the_student_agrees_with_the_teacher(kind, temperature):
    """The student whose outputs are the teacher's has the least loss, softened or not (both
    sides divide by the same temperature)."""
    target = KINDS[kind]
    soft = torch.tensor({"single_label": [[0.7, 0.2, 0.1]], "binary": [[0.8]], "multi_label": [[0.9, 0.2]],
                         "regression": [[2.5]]}[kind])
    agreeing = soft.log() if kind == "single_label" else target.standardize(soft) if kind == "regression" \
        else soft.logit()
    tempered = torch.from_numpy(target.calibrate(soft.numpy(), temperature)).float()
    at_best = soft_loss(target, agreeing, tempered, temperature)
    assert at_best.shape == (1,)
    nudge = torch.zeros_like(agreeing)
    nudge[0, 0] = 0.5
    for shift in (-1, 1):
        assert soft_loss(target, agreeing + shift * nudge, tempered, temperature) > at_best + 1e-6


def test_a_taught_batch_weighs_label_and_soft_losses_per_row():
    target = Target(["a", "b"])
    loss = criterion(target, Member(label_smoothing=0.0), np.array([0, 1]))
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    values = torch.tensor([[0.5, 0.5], [0.1, 0.9]])
    labels_only = SoftTargets(values, torch.ones(2), torch.zeros(2))
    assert torch.isclose(loss(logits, labels, labels_only), loss(logits, labels))
    soft_only = SoftTargets(values, torch.zeros(2), torch.ones(2))
    assert torch.isclose(loss(logits, labels, soft_only), soft_loss(target, logits, values).mean())


def test_the_floor_leaves_out_unsure_test_images_and_distill_mixes_out_of_fold_rows():
    target = Target(["a", "b"])
    test = np.array([[0.9, 0.1], [0.55, 0.45], [0.2, 0.8]])
    oof = np.array([[0.7, 0.3], [0.0, 0.0], [0.4, 0.6]])
    teacher = Teacher("t", test, oof, np.array([0, -1, 0]), 1)
    pseudo = lesson(RunConfig(pseudo="t", pseudo_floor=0.6, pseudo_weight=0.5), teacher, target, np.array([0, 1, 1]))
    assert pseudo.test_rows.tolist() == [0, 2] and pseudo.labels.tolist() == [0, 1]
    assert pseudo.label_weight.tolist() == [1, 1, 1, 0, 0] and pseudo.soft_weight.tolist() == [0, 0, 0, 0.5, 0.5]
    distill = lesson(RunConfig(distill="t", distill_weight=0.3, distill_temperature=2.0), teacher, target,
                     np.array([0, 1, 1]))
    assert len(distill.test_rows) == 3  # no floor: every test image
    assert np.allclose(distill.label_weight, [0.7, 1, 0.7, 0, 0, 0])
    assert np.allclose(distill.soft_weight, [0.3, 0, 0.3, 0.3, 0.3, 0.3])
    assert np.allclose(distill.values[0], target.calibrate(oof[:1], 2.0))  # softened by T
    assert confidence(MultiLabel(["p", "q"]), np.array([[0.9, 0.4]])).tolist() == [0.6]


def test_each_fold_of_a_teacher_with_the_runs_folds_teaches_its_own_and_what_the_teachers_saw_is_counted():
    target = Target(["a", "b"])
    splits = [(np.array([2, 3]), np.array([0, 1])), (np.array([0, 1]), np.array([2, 3]))]
    test = np.array([[0.6, 0.4], [0.3, 0.7]])
    per_fold = np.array([[[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.3], [0.4, 0.6]]])
    oof = np.full((4, 2), 0.5)

    def teacher(fold_of, folds=2, refit=False, fold_test=per_fold):
        return Teacher("t", test, oof, np.asarray(fold_of), folds, fold_test, refit)
    same = teacher([0, 0, 1, 1])
    assert same.same_folds(splits, 4) and not teacher([1, 1, 0, 0]).same_folds(splits, 4)
    assert not teacher([0, 0, 1, 1], fold_test=None).same_folds(splits, 4)  # no per-fold outputs
    pseudo = lesson(RunConfig(pseudo="t"), same, target, np.array([0, 0, 1, 1]), per_fold=True)
    for fold in (0, 1):
        assert np.allclose(pseudo.soft_targets(torch.device("cpu"), fold).values[4:], per_fold[fold])
    assert np.allclose(pseudo.soft_targets(torch.device("cpu")).values[4:], test)  # the refit: the blend
    assert teacher_saw(same, pseudo, splits, 4) == 0
    distill = lesson(RunConfig(distill="t", distill_temperature=1.0), same, target, np.array([0, 0, 1, 1]), True)
    assert teacher_saw(same, distill, splits, 4) == 4  # its other fold's out-of-fold rows saw them
    blended = lesson(RunConfig(pseudo="t"), same, target, np.array([0, 0, 1, 1]))
    assert teacher_saw(same, blended, splits, 4) == 4  # every fold model teaches every fold
    holdout = [(np.array([2, 3]), np.array([0, 1]))]
    on_split = teacher([0, 0, -1, -1], folds=1, fold_test=per_fold[:1])
    assert teacher_saw(on_split, blended, holdout, 4) == 0
    refit = teacher([0, 0, -1, -1], folds=1, refit=True, fold_test=None)
    assert teacher_saw(refit, blended, holdout, 4) == 2  # its refit trained on every image


def test_the_per_fold_blend_calibrates_each_fold_model_and_needs_every_weighted_members_folds():
    target = Target(["a", "b"])
    member = [(0, np.array([[0.8, 0.2]])), (1, np.array([[0.6, 0.4]])), (None, np.array([[0.1, 0.9]]))]
    summary = {"folds": 2, "temperatures": [[2.0, 0.5], [1.0, 1.0]], "weights": [0.75, 0.25]}
    other = [(0, np.array([[0.5, 0.5]])), (1, np.array([[0.2, 0.8]]))]
    blended = blend_per_fold([member, other], summary, target)
    assert blended.shape == (2, 1, 2)
    for f in (0, 1):
        expected = 0.75 * target.calibrate(member[f][1], summary["temperatures"][0][f]) + 0.25 * other[f][1]
        assert np.allclose(blended[f], expected)
    assert blend_per_fold([member, other[:1]], summary, target) is None  # its fold 1 was not predicted
    dropped = {**summary, "weights": [1.0, 0.0]}  # a member a time limit dropped (weight 0) is not needed
    assert np.allclose(blend_per_fold([member, [(None, np.full((1, 2), 0.5))]], dropped, target)[1],
                       target.calibrate(member[1][1], 0.5))


KIND_TASKS = {"binary": (cactus_task, {"target": "binary", "metric": "roc_auc"}),
              "multi_label": (planet_task, {"target": {"kind": "multi_label", "delimiter": " "},
                                            "metric": "f2_samples"}),
              "regression": (aptos_task, {"target": {"kind": "regression", "grades": [0, 4]},
                                          "metric": "quadratic_weighted_kappa"})}


@pytest.mark.slow  # trains for real
@pytest.mark.parametrize("kind", KIND_TASKS)
def test_every_target_kind_learns_from_a_teacher_end_to_end(workspace, fits, kind):
    task, spec = KIND_TASKS[kind]
    labels, bands, _ = task()
    write_competition(workspace, "kinds", labels, bands, {"label": "0"}, spec, len(bands) - len(labels))
    teacher = teacher_run(workspace, "--folds", "2", "--epochs", "2", name="kinds")
    fits.clear()  # distillation: soft targets on train and test images (pseudo: on the latter alone)
    assert main(["train", "kinds", "--device", "cpu", "--folds", "2", "--epochs", "2", "--distill", teacher.name]) == 0
    assert main(["predict", "kinds", "--device", "cpu"]) == 0
    for call in fits:
        assert call["taught"] and not set(call["fold"].val_idx.tolist()) & call["taught"]
        assert set(range(len(labels), len(bands))) & call["taught"]  # test images trained
    summary = run_summary(runs(workspace, "kinds")[-1])
    assert summary["teacher"]["mode"] == "distill" and summary["ensemble_score"] is not None
    assert summary["teacher"]["taught_train_images"] == len(labels)


@pytest.mark.slow  # trains for real
def test_a_time_limited_pseudo_run_plans_with_the_test_images_in_every_fit(workspace, fits, monkeypatch):
    make_competition(workspace, n_train=48, n_test=16, preset=PRESET)
    teacher = teacher_run(workspace)
    fits.clear()
    # a clock on which nothing has gone yet (the teacher trained in this process) and the end
    # costs nothing: the run trains for about 8 s whatever the machine's load (as test_budget)
    monkeypatch.setattr(budget, "process_seconds", lambda: 0.0)
    monkeypatch.setattr(budget, "END_S", 0.0)
    assert main(["train", "tiny", "--device", "cpu", "--pseudo", teacher.name, "--time-limit", "8"]) == 0
    assert fits and all(set(range(48, 64)) <= set(call["fold"].train_idx.tolist()) for call in fits)
    assert all(call["fold"].deadline is not None for call in fits)  # each fit was paced to the plan
    assert run_summary(runs(workspace)[-1])["teacher"]["test_images"] == 16


RESUMED = {"val_fraction": 0.25, "members": [{
    "model": "cnn", "model_args": {"widths": [8, 16], "convs": 1, "dropout": 0.1},
    "epochs": 5, "batch_size": 8, "lr": 0.01, "pad_crop": 1, "ema": 0.9}]}


@pytest.mark.slow  # trains for real
def test_a_distilled_member_killed_mid_training_resumes_to_the_same_weights(workspace):
    make_competition(workspace, n_train=320, n_test=64, size=16, preset=RESUMED)
    teacher = teacher_run(workspace, "--epochs", "1")
    command = ("train", "tiny", "--device", "cpu", "--distill", teacher.name)
    first = cli_process(workspace, *command)
    first.communicate(timeout=300)
    assert first.returncode == 0
    expected = read_checkpoint(runs(workspace)[-1] / "members" / "m0_f0.safetensors")["state_dict"]

    process = cli_process(workspace, *command)
    deadline = time.time() + 120
    while not list(runs(workspace)[-1].glob("members/resume_m0_f0.pt")) and time.time() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "training finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted = runs(workspace)[-1]
    assert not (interrupted / "summary.json").exists()
    resumed = cli_process(workspace, "train", "tiny", "--device", "cpu", "--resume")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and "resuming after epoch" in output, output
    assert "distilling run" in output
    weights = read_checkpoint(interrupted / "members" / "m0_f0.safetensors")["state_dict"]
    assert weights.keys() == expected.keys()
    for key in expected:
        assert torch.equal(weights[key], expected[key]), key


def test_the_report_names_the_teacher_what_it_taught_and_what_it_saw():
    summary = {"teacher": {"run": "r1", "mode": "distill", "test_images": 16, "taught_train_images": 40,
                           "temperature": 2.0, "per_fold": True, "saw_validation_images": 0}}
    assert report._teacher(summary) == ("run r1 (distill: 40 train images' out-of-fold outputs and 16 test "
                                        "images, each fold's from its model of that fold)")
    summary["teacher"].update(mode="pseudo", per_fold=False, saw_validation_images=12)
    assert report._teacher(summary) == "run r1 (pseudo: 16 test images); it trained on 12 validation images (optimistic score)"
    assert report._teacher({}) == "-"
