"""Training internals: the weight average, schedules run to their end, and a fit that meets a deadline."""
import copy
import json
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from compete.config import Competition, Member
from compete.models import NetSpec, build_model
from compete.train import FitLog, Fold, LabelledImages, ema_update, fit

from helpers import TINY_PRESET, cpu_session, pattern


def average_of(values: list[float], decay: float) -> tuple[float, AveragedModel]:
    """The EMA of a one-parameter model whose weight takes `values` in turn."""
    model = nn.Linear(1, 1, bias=False)
    ema = AveragedModel(model, multi_avg_fn=ema_update(decay), use_buffers=True)
    for value in values:
        model.weight.data.fill_(value)
        ema.update_parameters(model)
    return ema.module.weight.item(), ema


def test_the_first_update_copies_and_the_next_ones_warm_up():
    # n = 1 after the copy: keep (1 + 1) / (10 + 1) of the average, take 9/11 of the new weight
    assert average_of([0.0, 1.0], 0.999)[0] == pytest.approx(9 / 11)
    # n = 2: keep 3/12 of 9/11
    assert average_of([0.0, 1.0, 1.0], 0.999)[0] == pytest.approx(1 - 3 / 12 * 2 / 11)


def test_after_the_warm_up_the_decay_is_the_members():
    steps = 2000
    got, _ = average_of([0.0] * steps + [1.0], 0.9)
    assert got == pytest.approx(0.1)  # (1 + n) / (10 + n) > 0.9 long before: capped at 0.9


def test_a_short_run_forgets_the_random_start():
    # 300 steps at 1.0 after a start at 0.0: a plain 0.999 EMA would still hold 0.999**300 = 74%
    # of the start; the warmed-up one holds (1 + 1) / (10 + 1) * ... = almost none of it
    got, _ = average_of([0.0] + [1.0] * 300, 0.999)
    assert got > 0.95


def test_integer_buffers_are_copied_not_averaged():
    model = nn.BatchNorm1d(2)
    ema = AveragedModel(model, multi_avg_fn=ema_update(0.99), use_buffers=True)
    for _ in range(3):
        model.train()(torch.randn(8, 2))
        ema.update_parameters(model)
    assert ema.module.num_batches_tracked.item() == model.num_batches_tracked.item() == 3


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_every_short_schedule_runs_to_its_end(schedule):
    # OneCycleLR fails on a warm-up of exactly one step (0.2 x 5, 0.1 x 10, 0.5 x 2)
    from compete.config import Member
    from compete.train import _scheduler
    for warmup in (0.1, 0.2, 0.25, 0.5):
        for total_steps in range(1, 25):
            optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
            scheduler = _scheduler(optimizer, Member(schedule=schedule, warmup=warmup), total_steps)
            for _ in range(total_steps):
                optimizer.step()
                scheduler.step()
                assert 0 <= optimizer.param_groups[0]["lr"] <= 0.1 + 1e-9, (warmup, total_steps)


def walk(schedule: str, epochs: int, steps: int, replan_after: int, new_steps: int) -> tuple[list[float], list[float]]:
    """The learning rates of a schedule built for epochs x steps, walked plainly and by a Pace
    whose epochs after the first `replan_after` take `new_steps` steps."""
    from compete.config import Member
    from compete.pace import Pace
    from compete.train import _scheduler

    def rates(pace):
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
        scheduler = _scheduler(optimizer, Member(schedule=schedule, warmup=0.2), epochs * steps)
        seen = []
        for epoch in range(epochs):
            if pace is not None and epoch == replan_after:
                pace.steps = new_steps
                pace.rate = (pace.total - pace.position) / (new_steps * (epochs - epoch))
            for _ in range(pace.steps if pace is not None else steps):
                optimizer.step()
                pace.advance(scheduler) if pace is not None else scheduler.step()
                seen.append(optimizer.param_groups[0]["lr"])
        return seen
    return rates(None), rates(Pace(total=epochs * steps, steps=steps))


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
@pytest.mark.parametrize("new_steps", [3, 10, 17])  # fewer steps, as many, more
def test_a_paced_schedule_keeps_its_shape_and_still_ends_at_its_last_step(schedule, new_steps):
    plain, paced = walk(schedule, epochs=5, steps=10, replan_after=2, new_steps=new_steps)
    assert paced[:20] == plain[:20]                  # identical until the pace changes
    assert len(paced) == 20 + 3 * new_steps
    assert paced[-1] == pytest.approx(plain[-1], rel=1e-6, abs=1e-12)  # annealed to the same end
    assert max(paced) <= max(plain) + 1e-12


def test_replan_fits_the_remaining_epochs_into_the_time_left():
    from compete.pace import Pace
    pace = Pace(total=100, steps=20, position=40)
    # 3 epochs left, 0.5 s a step, 2 s of validation an epoch and 4 s more for the last one's views
    pace.replan(3, step_s=0.5, epoch_s=2.0, last_extra_s=4.0, seconds_left=40.0, most=20)
    spent = 3 * (pace.steps * 0.5 + 2.0) + 4.0
    assert spent <= 40.0 < spent + 3 * 0.5          # one more step per epoch would not fit
    assert pace.rate * pace.steps * 3 == pytest.approx(60)  # the rest of the schedule, exactly
    pace.replan(3, step_s=0.01, epoch_s=2.0, last_extra_s=4.0, seconds_left=400.0, most=20)
    assert pace.steps == 20                          # never more than it may take
    pace.replan(3, step_s=5.0, epoch_s=2.0, last_extra_s=4.0, seconds_left=1.0, most=20)
    assert pace.steps == 1                           # late: the least that still anneals


def test_deadlines_share_the_time_left_by_the_planned_seconds(monkeypatch):
    from compete import budget
    clock = {"process": 10.0}
    monkeypatch.setattr(budget, "process_seconds", lambda: clock["process"])
    plan = {"limit_s": 130.0, "end_s": 6.0, "margin_s": 4.0, "fit_s": [[20.0, 20.0], [40.0, 40.0]]}
    deadlines = budget.Deadlines(plan)
    now = budget.time.monotonic()
    assert deadlines.of(0, 0) - now == pytest.approx(110 * 20 / 120, abs=0.5)
    clock["process"] = 50.0  # the first fit ran 40 s where 20 were planned: the rest are shortened
    assert deadlines.of(0, 1) - budget.time.monotonic() == pytest.approx(70 * 20 / 100, abs=0.5)


@pytest.mark.slow
def test_a_fit_resizes_its_later_epochs_to_its_deadline_and_still_anneals(tmp_path):
    """A fit whose deadline has passed by the end of its first epoch (a machine slower than
    the plan measured) takes one step in each later epoch; one far ahead of its deadline takes
    two passes; either way the schedule ends where it would have, at the last step."""
    rng = np.random.default_rng(0)
    labels = np.arange(64) % 3
    images = torch.from_numpy(np.stack([pattern(t, 1, 8, rng) for t in labels]).transpose(0, 3, 1, 2).copy())
    member = replace(Member(**TINY_PRESET["members"][0]), epochs=4, batch_size=8)
    torch.manual_seed(0)
    model = build_model(member, NetSpec(1, 8, 3, [0.3], [0.3]))
    comp, labels = Competition(name="tiny", image_size=8, hflip=False), torch.from_numpy(labels)
    fold = Fold(0, np.arange(48), np.arange(48, 64), seed=0)
    logs = {}
    for name, deadline in (("plain", None), ("late", 0.0), ("early", 3600.0)):
        logs[name] = tmp_path / f"{name}.jsonl"
        paced = replace(fold, deadline=None if deadline is None else time.monotonic() + deadline)
        fit(copy.deepcopy(model), member, cpu_session(comp), LabelledImages(images, labels), paced,
            FitLog(log_path=logs[name]))
    plain, late, early = ([json.loads(line) for line in logs[key].read_text().splitlines()]
                          for key in ("plain", "late", "early"))
    assert [r["steps"] for r in plain] == [6, 6, 6, 6] and [r["steps"] for r in late] == [6, 1, 1, 1]
    assert [r["steps"] for r in early] == [6, 12, 12, 12]  # ahead of time: up to two passes an epoch
    for paced in (late, early):
        assert paced[0]["lr"] == plain[0]["lr"]
        assert paced[-1]["lr"] == pytest.approx(plain[-1]["lr"], rel=1e-6, abs=1e-12)
