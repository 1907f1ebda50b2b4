"""One training step for training, lr-find and --time-limit's measure: what the finder and the
time plan measure is the loop that trains."""
import copy

import numpy as np
import torch

from compete import train
from compete.budget import measure_member
from compete.config import Competition, Member, RunConfig
from compete.lrfind import SweepRange, lr_sweep, sweep_step
from compete.models import NetSpec, build_model
from compete.train import Fold, LabelledImages, TrainStep, fit

from helpers import TINY_PRESET, cpu_session, pattern


def test_lr_find_the_time_limit_and_training_run_the_same_step_function(monkeypatch):
    rng = np.random.default_rng(0)
    targets = np.arange(48) % 3
    images = torch.from_numpy(np.stack([pattern(t, 1, 8, rng) for t in targets]).transpose(0, 3, 1, 2).copy())
    data = LabelledImages(images, torch.from_numpy(targets))
    member = Member(**{**TINY_PRESET["members"][0], "epochs": 1, "rotate": 10.0})  # photo augmentation on
    session = cpu_session(Competition(name="tiny", image_size=8, hflip=True), RunConfig(members=[member]))
    torch.manual_seed(0)
    model = build_model(member, NetSpec(1, 8, 3, [0.3], [0.3]))
    steps = {}
    real = train.train_step

    def spy(step, net, batch, labels, *taught):
        steps.setdefault(caller, []).append(step)
        return real(step, net, batch, labels, *taught)
    monkeypatch.setattr(train, "train_step", spy)

    caller = "lr-find"
    lr_sweep(copy.deepcopy(model), sweep_step(model, member, session, data), data, SweepRange(steps=3))
    caller = "time-limit"
    measure_member(copy.deepcopy(model), member, session, data)
    caller = "training"
    fit(copy.deepcopy(model), member, session, data, Fold(0, np.arange(36), np.arange(36, 48), seed=0))

    assert sorted(steps) == ["lr-find", "time-limit", "training"]
    built = [calls[0] for calls in steps.values()]
    assert all(isinstance(step, TrainStep) for step in built)
    # the same augmentation (the photo transforms at the member's side, the flips), the same loss
    assert {(step.member.rotate, step.photo_size, step.hflip, step.vflip) for step in built} == {(10.0, 8, True, False)}
    logits, labels = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2] * 2)
    assert len({step.criterion(logits, labels).item() for step in built}) == 1  # label smoothing alike
