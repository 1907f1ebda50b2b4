"""The weight average kept during training."""
import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from compete.train import ema_update


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
