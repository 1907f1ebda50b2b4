"""A member's `weights:` names a file in the weights folder ($COMPETE_WEIGHTS, else weights/ in the
workspace), never a path outside it; the shipped presets name files that are there."""
from pathlib import Path

import pytest

from compete.cli import main
from compete.config import load_competition, parse_sets, resolve_run
from compete.errors import PipelineError

from helpers import TINY_PRESET, make_competition

MEMBER = {"model": "mobilenet_v2", "normalize": "imagenet"}


def competition_with_weights(workspace, weights: str):
    make_competition(workspace, preset={"members": [{**MEMBER, "weights": weights}]})
    return load_competition("tiny")


def test_weights_resolve_inside_the_folder_the_environment_names(workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPETE_WEIGHTS", str(tmp_path / "mine"))
    comp = competition_with_weights(workspace, "nets/mobilenet.pth")
    assert resolve_run(comp).members[0].weights == str(tmp_path / "mine" / "nets" / "mobilenet.pth")


def test_without_the_environment_the_workspace_weights_folder_is_used(workspace, monkeypatch):
    monkeypatch.delenv("COMPETE_WEIGHTS")
    comp = competition_with_weights(workspace, "mobilenet.pth")
    assert resolve_run(comp).members[0].weights == str(workspace / "weights" / "mobilenet.pth")


@pytest.mark.parametrize("weights", ["../shared/weights/x.pth", "/etc/x.pth", "a/../../x.pth"])
def test_weights_outside_the_weights_folder_are_refused(workspace, weights):
    comp = competition_with_weights(workspace, weights)
    with pytest.raises(PipelineError, match="must name a file inside the weights folder"):
        resolve_run(comp)
    _, member_sets = parse_sets([f"weights={weights}"])
    make_competition(workspace, "plain", preset=TINY_PRESET)
    with pytest.raises(PipelineError, match=f"weights: {weights} must name a file"):
        resolve_run(load_competition("plain"), member_overrides=member_sets)


def test_weights_none_trains_the_same_preset_from_scratch(workspace):
    comp = competition_with_weights(workspace, "mobilenet.pth")
    _, member_sets = parse_sets(["weights=none"])
    assert resolve_run(comp, member_overrides=member_sets).members[0].weights is None


def test_a_missing_weights_file_names_the_folder_and_the_environment_variable(workspace, tmp_path,
                                                                             monkeypatch, capsys):
    monkeypatch.setenv("COMPETE_WEIGHTS", str(tmp_path / "empty"))
    tiny = make_competition(workspace, preset={"members": [{
        **MEMBER, "weights": "mobilenet.pth", "image_size": 32, "epochs": 1, "batch_size": 8}]})
    assert main(["train", tiny.name, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"mobilenet.pth not found in {tmp_path / 'empty'}" in err and "COMPETE_WEIGHTS" in err
