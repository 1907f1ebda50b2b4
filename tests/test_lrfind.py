"""The learning-rate finder: a sweep that leaves no trace, a suggestion inside the range, and
`train --lr auto`."""
import copy
import json
import re

import numpy as np
import pytest
import torch

from compete.cli import main
from compete.config import Competition, Member
from compete.finetune import head_parameters
from compete.lrfind import SweepRange, lr_sweep, suggest, sweep_step
from compete import train
from compete.train import LabelledImages
from compete.models import NetSpec, build_model

from helpers import TINY_PRESET, cpu_session, only_run, pattern


def sweep_of(model, member, comp, data, span=SweepRange(), optimizer=None):
    """The member's sweep of `model` on `data` (with `optimizer` in place of its own)."""
    session = cpu_session(comp)
    step = sweep_step(model, member, session, data)
    if optimizer is not None:
        step.optimizer = optimizer
    return lr_sweep(model, step, data, span)


@pytest.fixture
def setup():
    """A tiny BatchNorm CNN and 64 learnable 8x8 images of 3 classes, as uint8 (N, C, H, W)."""
    rng = np.random.default_rng(0)
    targets = np.arange(64) % 3
    images = np.stack([pattern(t, 1, 8, rng) for t in targets]).transpose(0, 3, 1, 2)
    member = Member(**TINY_PRESET["members"][0])
    torch.manual_seed(0)
    model = build_model(member, NetSpec(1, 8, 3, [0.3], [0.3]))
    comp = Competition(name="tiny", image_size=8, hflip=False)
    return model, member, comp, torch.from_numpy(images.copy()), torch.from_numpy(targets)


def test_sweep_restores_every_weight_and_buffer_exactly(setup):
    model, member, comp, images, labels = setup
    model.eval()
    before = copy.deepcopy(model.state_dict())
    sweep = sweep_of(model, member, comp, LabelledImages(images, labels), SweepRange(steps=12))
    assert len(sweep.lrs) > 5  # it did train: BatchNorm statistics and weights moved meanwhile
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert not model.training  # the mode is restored too


def test_sweep_restores_a_given_optimizer(setup):
    model, member, comp, images, labels = setup
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(images[:8].float() / 255).sum().backward()
    optimizer.step()  # some Adam state to keep
    before = copy.deepcopy(optimizer.state_dict())
    sweep_of(model, member, comp, LabelledImages(images, labels), SweepRange(steps=20), optimizer)
    after = optimizer.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for key, state in before["state"].items():
        assert all(torch.equal(state[name], after["state"][key][name]) for name in state)


def test_a_member_that_trains_its_head_first_is_swept_with_the_backbone_frozen(setup, monkeypatch):
    model, member, comp, images, labels = setup
    member.freeze_epochs = 1
    head = {id(p) for p in head_parameters(model)}
    seen = []

    def spy(step, net, *args):
        seen.append({id(p) for p in net.parameters() if p.requires_grad})
        return train_step(step, net, *args)

    train_step = train.train_step
    monkeypatch.setattr(train, "train_step", spy)
    sweep_of(model, member, comp, LabelledImages(images, labels), SweepRange(steps=5))
    assert seen and all(trainable == head for trainable in seen)
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again afterwards


@pytest.mark.slow
def test_suggestion_lies_inside_the_swept_range(setup):
    model, member, comp, images, labels = setup
    sweep = sweep_of(model, member, comp, LabelledImages(images, labels), SweepRange(1e-5, 10.0, 60))
    assert 1e-5 <= sweep.suggestion <= 10.0
    assert sweep.suggestion == pytest.approx(max(sweep.lrs[int(np.argmin(sweep.smoothed))] / 10, 1e-5))
    assert np.all(np.diff(sweep.lrs) > 0)
    if len(sweep.lrs) < 60:  # stopped early: only because the loss blew up
        assert sweep.smoothed[-1] > 4 * min(sweep.smoothed)


def test_suggest_divides_the_minimum_by_ten():
    lrs = list(np.logspace(-6, 0, 7))
    assert suggest(lrs, [3.0, 2.5, 2.0, 1.0, 0.5, 2.0, 9.0]) == pytest.approx(1e-3)
    assert suggest(lrs, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]) == pytest.approx(1e-6)  # clamped to the start


@pytest.mark.slow
def test_lr_find_command_writes_a_plot_and_prints_the_suggestion(tiny, workspace, capsys):
    assert main(["lr-find", tiny.name, "--device", "cpu", "--member", "0"]) == 0
    assert re.search(r"m0 cnn: suggested lr [0-9.e-]+", capsys.readouterr().out)
    plot = workspace / "submissions" / tiny.name / "lr_find-0.png"
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_lr_find_rejects_a_member_the_preset_lacks(tiny, capsys):
    assert main(["lr-find", tiny.name, "--device", "cpu", "--member", "3"]) == 2
    assert "members 0 to 0" in capsys.readouterr().err


@pytest.mark.slow
def test_train_with_lr_auto_trains_at_the_suggestion(tiny, workspace, capsys):
    assert main(["train", tiny.name, "--device", "cpu", "--lr", "auto"]) == 0
    suggested = float(re.search(r"suggested lr ([0-9.e+-]+) ", capsys.readouterr().out)[1])
    run_dir = only_run(workspace, tiny.name)
    lr = json.loads((run_dir / "config.json").read_text())["run"]["members"][0]["lr"]
    assert lr == pytest.approx(suggested, rel=5e-3)
    assert lr != TINY_PRESET["members"][0]["lr"]


def test_lr_must_be_a_number_or_auto(tiny, capsys):
    with pytest.raises(SystemExit):
        main(["train", tiny.name, "--lr", "fast"])
    assert "number or 'auto'" in capsys.readouterr().err

