"""The run format: run folders and checkpoints carry a format number, checked in one place
(runs.check_format); a run written in another format is refused with one line that says how to
train it again, and saved settings this version does not know never end in a TypeError."""
import json

import pytest
import torch

from compete.cli import main
from compete.config import Member, RunConfig, competition_from_dict, member_from_dict, run_from_dict
from compete.errors import PipelineError
from compete.models import NetSpec, build_model
from compete.modelfiles import load_model_file, save_model_file
from compete.runs import RUN_FORMAT, load_checkpoint, save_checkpoint

from helpers import make_competition

OLD_CONFIG = {"competition": {"name": "tiny"}, "run": {"preset": "default", "seed": 3, "folds": 2, "refit": True}}


def old_run(workspace, name: str = "20200101-000000-default"):
    """A finished run folder of the format before run formats were numbered."""
    run_dir = workspace / "submissions" / "tiny" / "runs" / name
    (run_dir / "members").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(OLD_CONFIG))
    (run_dir / "summary.json").write_text("{}")
    return run_dir


@pytest.mark.parametrize("command", [["predict", "tiny"], ["report", "tiny"], ["train", "tiny", "--resume"]])
def test_an_old_run_is_refused_with_one_line_that_says_how_to_rebuild_it(workspace, capsys, command):
    make_competition(workspace)
    run_dir = old_run(workspace)
    if "--resume" in command:  # an interrupted one
        (run_dir / "summary.json").unlink()
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert f"Run {run_dir.name} was written in an older run format (1; this version reads {RUN_FORMAT})" in err
    assert err.endswith("train it again with ./run.sh train tiny --preset default --seed 3 --folds 2 --refit.")


def test_the_run_table_lists_an_old_run_with_how_to_rebuild_it(workspace, capsys):
    make_competition(workspace)
    run_dir = old_run(workspace)
    assert main(["runs", "tiny"]) == 0
    [line] = [line for line in capsys.readouterr().out.splitlines() if run_dir.name in line]
    assert "older run format" in line and "./run.sh train tiny --preset default" in line


def test_a_checkpoint_of_another_format_is_refused(tmp_path):
    run_dir = tmp_path / "runs" / "20200101-000000-default"
    (run_dir / "members").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(OLD_CONFIG))
    member = Member(model="cnn", model_args={"widths": [4], "convs": 1})
    spec = NetSpec(1, 8, 3, [0.5], [0.25])
    path = run_dir / "members" / "m0_f0.safetensors"
    save_checkpoint(path, build_model(member, spec).state_dict(), member, spec, {})
    model, loaded = load_checkpoint(path, torch.device("cpu"))  # this version's: read
    assert loaded == member
    save_model_file(path, {**load_model_file(path), "format": RUN_FORMAT - 1})
    with pytest.raises(PipelineError, match=r"older run format .* ./run.sh train tiny --preset default --seed 3"):
        load_checkpoint(path, torch.device("cpu"))


def test_saved_settings_this_version_does_not_know_are_refused_by_name():
    with pytest.raises(PipelineError, match=r"m0_f0.pt: settings this version does not know: learning_rate"):
        member_from_dict({"model": "cnn", "learning_rate": 0.1}, "m0_f0.pt")
    saved = {**{k: v for k, v in vars(RunConfig()).items() if k != "members"}, "members": [{"lr": 0.1}],
             "old_setting": 1}
    with pytest.raises(PipelineError, match=r"config.json: settings this version does not know: old_setting"):
        run_from_dict(saved)
    del saved["old_setting"]
    assert run_from_dict(saved).members == [Member(lr=0.1)]
    with pytest.raises(PipelineError, match=r"settings this version does not know: img_size"):
        competition_from_dict({"name": "tiny", "img_size": 28})
    assert competition_from_dict({"name": "tiny", "image_size": 28}).image_size == 28
