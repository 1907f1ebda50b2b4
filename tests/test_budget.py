"""--time-limit: the planning arithmetic on given throughputs, and runs that apply the plan."""
import json
import subprocess
import sys
from dataclasses import replace

import pytest

from compete import budget
from compete.budget import MARGIN, MemberCost, fold_seconds, plan_run, run_seconds
from compete.cli import main
from compete.config import Member
from compete.errors import PipelineError

from compete.train import LabelledImages

from helpers import REPO, TINY_PRESET, compete_env, cpu_session, make_competition, only_run, run_summary

ELAPSED, END = 12.0, 5.0  # seconds gone before planning, and after the last fold


def available(limit: float) -> float:
    return limit * (1 - MARGIN) - ELAPSED - END


def planned(plan, members: list[Member]) -> list[Member]:
    """The members as the plan trains them."""
    return [replace(member, epochs=epochs, epoch_steps=steps)
            for member, epochs, steps in zip(members, plan.epochs, plan.epoch_steps)]


def planned_seconds(plan, members, costs, sizes) -> float:
    sized = planned(plan, members)
    return run_seconds(sized, costs, [member.epochs for member in sized], sizes[:plan.folds])


def total_steps(plan) -> list[int]:
    return [epochs * steps for epochs, steps in zip(plan.epochs, plan.epoch_steps)]


def test_one_member_gets_the_most_steps_that_fit():
    member = Member(epochs=16, batch_size=256)
    cost = MemberCost(step_s=0.06, image_s=1e-4, epoch_s=0.05)  # 54,000 images: 12.7 s an epoch
    sizes = [(54000, 6000)]
    plan = plan_run(120, ELAPSED, [member], [cost], sizes, end_s=END)
    spent = planned_seconds(plan, [member], [cost], sizes)
    assert spent <= available(120)
    # what is left is less than one more step per epoch and one more validation: planning in whole
    # epochs would leave up to a 12.7 s epoch unused
    assert available(120) - spent < plan.epochs[0] * cost.step_s + 6000 * cost.image_s + cost.epoch_s
    assert plan.epoch_steps[0] < 54000 // 256 and plan.preset_epoch_steps == [54000 // 256]
    assert plan.estimate_s <= 120 * (1 - MARGIN)
    assert plan.train_images_per_s == [pytest.approx(256 / 0.06)]


def test_epochs_are_shortened_not_dropped_so_the_schedule_keeps_its_shape():
    member, cost = Member(epochs=16, batch_size=256), MemberCost(0.06, 1e-4, 0.05)
    plan = plan_run(300, ELAPSED, [member], [cost], [(54000, 6000)], end_s=END)
    full = 54000 // 256
    # the fractional epoch count is spread over whole epochs of equal length
    assert (plan.epochs[0] - 1) * full < total_steps(plan)[0] <= plan.epochs[0] * full


def test_more_time_never_plans_less_training():
    member, cost = Member(epochs=16, batch_size=256), MemberCost(0.06, 1e-4, 0.05)
    steps = [total_steps(plan_run(limit, ELAPSED, [member], [cost], [(54000, 6000)], end_s=END))[0]
             for limit in (60, 120, 300, 600, 1200)]
    assert steps == sorted(steps) and steps[0] < steps[-1]
    assert steps[-1] > member.epochs * (54000 // 256)  # a generous limit trains longer than the preset


def test_members_keep_the_proportions_of_their_epochs():
    members = [Member(epochs=10, batch_size=100), Member(epochs=5, batch_size=100)]
    costs = [MemberCost(0.1, 1e-4), MemberCost(0.1, 1e-4)]
    sizes = [(10000, 1000)]
    plan = plan_run(300, ELAPSED, members, costs, sizes, end_s=END)
    first, second = total_steps(plan)
    assert abs(first - 2 * second) <= 2 * 100  # within a step per epoch of each
    assert available(300) - planned_seconds(plan, members, costs, sizes) < 5


def test_tta_views_are_scored_once_per_fold():
    plain, four_views = Member(batch_size=100), Member(batch_size=100, tta=["identity", "hflip", "shift_left", "shift_right"])
    cost = MemberCost(step_s=0.1, image_s=0.001)
    extra = fold_seconds(four_views, cost, 3, 1000, 200) - fold_seconds(plain, cost, 3, 1000, 200)
    assert extra == pytest.approx(200 * 4 * 0.001)


def test_selecting_the_best_epoch_scores_the_tta_views_every_epoch():
    views = ["identity", "hflip", "shift_left", "shift_right"]
    plain, four_views = Member(batch_size=100, select="best"), Member(batch_size=100, select="best", tta=views)
    cost = MemberCost(step_s=0.1, image_s=0.001)
    extra = fold_seconds(four_views, cost, 3, 1000, 200) - fold_seconds(plain, cost, 3, 1000, 200)
    assert extra == pytest.approx(3 * 200 * 4 * 0.001)


@pytest.mark.parametrize("refit", [False, True])
def test_a_refit_is_planned_as_one_more_fit_on_every_image(monkeypatch, refit):
    import numpy as np
    import torch
    from compete.config import RunConfig
    planned = {}
    monkeypatch.setattr(budget, "measure_member", lambda *args: MemberCost(0.1, 0.001))
    monkeypatch.setattr(budget, "plan_run", lambda limit, elapsed, members, costs, sizes: planned.update(sizes=sizes))
    run = RunConfig(time_limit=100, refit=refit, members=[Member()])
    splits = [(np.arange(90), np.arange(90, 100))]
    budget.plan_time_limit(cpu_session(run=run), LabelledImages(None, torch.zeros(100)), splits, lambda m: None)
    assert planned["sizes"] == [(90, 10)] + ([(100, 0)] if refit else [])


def test_folds_are_left_out_before_members():
    members = [Member(epochs=4, batch_size=100), Member(epochs=4, batch_size=100)]
    costs = [MemberCost(1.0, 1e-6), MemberCost(1.0, 1e-6)]  # 100 s per epoch and fold
    sizes = [(10000, 5000)] * 3
    plan = plan_run(500, ELAPSED, members, costs, sizes, end_s=END)  # 4 fold-epochs fit
    assert (plan.members, plan.folds) == (2, 2)
    assert 400 < planned_seconds(plan, members, costs, sizes) <= available(500)  # the rest is trained too
    plan = plan_run(300, ELAPSED, members, costs, sizes, end_s=END)  # 2 fit: one fold, both members
    assert (plan.members, plan.folds) == (2, 1)
    plan = plan_run(150, ELAPSED, members, costs, sizes, end_s=END)
    assert (plan.members, plan.folds) == (1, 1)


def test_a_limit_too_short_for_one_epoch_is_refused_with_what_would_do():
    member, cost = Member(epochs=16, batch_size=256), MemberCost(0.06, 1e-4, 0.05)
    with pytest.raises(PipelineError, match=r"--time-limit 20 is too short.*at least \d+ s"):
        plan_run(20, ELAPSED, [member], [cost], [(54000, 6000)], end_s=END)


@pytest.mark.slow
def test_process_seconds_counts_from_the_process_start_not_the_import():
    code = "import time; time.sleep(0.6); from compete.budget import process_seconds; print(process_seconds())"
    out = subprocess.run([sys.executable, "-c", code], env=compete_env(REPO), capture_output=True, text=True)
    assert 0.6 <= float(out.stdout) < 60


def log_epochs(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_train_measures_plans_and_trains_the_planned_epochs(workspace, monkeypatch, capsys):
    """Real measurements; a clock on which nothing has gone yet and the end costs nothing, so
    the run trains for about 6 s whatever the machine's load."""
    tiny = make_competition(workspace)
    monkeypatch.setattr(budget, "process_seconds", lambda: 0.0)
    monkeypatch.setattr(budget, "END_S", 0.0)
    assert main(["train", tiny.name, "--device", "cpu", "--time-limit", "6"]) == 0
    out = capsys.readouterr().out
    run_dir = only_run(workspace, tiny.name)
    config = json.loads((run_dir / "config.json").read_text())
    plan = config["time_plan"]
    assert "Time limit 6 s" in out and f"{plan['epochs'][0]} epochs of {plan['epoch_steps'][0]} steps (preset 3 " in out
    member = config["run"]["members"][0]
    assert config["run"]["time_limit"] == 6 and (member["epochs"], member["epoch_steps"]) == \
        (plan["epochs"][0], plan["epoch_steps"][0])
    assert len(log_epochs(run_dir)) == plan["epochs"][0]  # the schedule was built for these epochs


@pytest.fixture
def fake_costs(monkeypatch):
    """Every member costs 4 s a step and 10 ms an image; 10 s have gone when the plan is made, and
    the end of the run takes 6 s."""
    monkeypatch.setattr(budget, "process_seconds", lambda: 10.0)
    monkeypatch.setattr(budget, "END_S", 6.0)
    monkeypatch.setattr(budget, "measure_member", lambda *args: MemberCost(step_s=4.0, image_s=0.01))


@pytest.mark.slow
def test_folds_that_do_not_fit_are_not_trained_even_when_resumed(workspace, fake_costs):
    tiny = make_competition(workspace, n_train=36)  # 3 folds: 24 training images (3 steps), 12 validated
    # one epoch of a fold: 3 steps x 4 s + 12 x 0.01 s = 12.1 s; 45 s less 10 gone, 6 at the end and
    # a 1.35 s margin leave 27.6 s: two folds of one epoch
    assert main(["train", tiny.name, "--device", "cpu", "--folds", "3", "--time-limit", "45"]) == 0
    run_dir = only_run(workspace, tiny.name)
    assert sorted(p.name for p in (run_dir / "members").iterdir()) == ["m0_f0.safetensors", "m0_f1.safetensors"]
    summary = run_summary(run_dir)
    assert summary["folds"] == 2 and summary["validated"] == 24
    (run_dir / "summary.json").unlink()  # as if killed during the second fold
    (run_dir / "members" / "m0_f1.safetensors").unlink()
    assert main(["train", tiny.name, "--device", "cpu", "--resume"]) == 0
    assert sorted(p.name for p in (run_dir / "members").iterdir()) == ["m0_f0.safetensors", "m0_f1.safetensors"]
    assert main(["predict", tiny.name, "--device", "cpu"]) == 0


@pytest.mark.slow
def test_a_preset_limit_applies_unless_epochs_are_given(workspace, fake_costs, capsys):
    tiny = make_competition(workspace, presets={"default": {**TINY_PRESET, "time_limit": 100}})
    assert main(["train", tiny.name, "--device", "cpu", "--epochs", "2"]) == 0
    config = json.loads((only_run(workspace, tiny.name) / "config.json").read_text())
    assert config["time_plan"] is None and config["run"]["time_limit"] == 0
    assert config["run"]["members"][0]["epochs"] == 2
    assert main(["train", tiny.name, "--device", "cpu", "--epochs", "2", "--time-limit", "60"]) == 2
    assert "--epochs and --time-limit" in capsys.readouterr().err


@pytest.mark.slow
def test_runs_lists_the_limit_beside_the_time_taken(workspace, fake_costs, capsys):
    tiny = make_competition(workspace)
    assert main(["train", tiny.name, "--device", "cpu", "--time-limit", "95"]) == 0
    capsys.readouterr()
    assert main(["runs", tiny.name]) == 0
    header, row = capsys.readouterr().out.splitlines()[1:3]
    assert header.split()[-3:] == ["wall", "limit", "commit"]
    assert row.split()[-2] == "1m35s"
