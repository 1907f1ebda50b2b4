"""bench/blend_runs.py: members of separate runs scored on their shared hold-out split."""
import subprocess
import sys

import pytest

from compete.cli import main

from helpers import REPO, compete_env, make_competition, run_summary

pytestmark = pytest.mark.slow  # trains for real

MEMBER = {"model": "cnn", "model_args": {"widths": [8, 16], "convs": 1, "dropout": 0.0},
          "epochs": 2, "batch_size": 8, "lr": 0.004, "pad_crop": 0, "tta": ["identity"]}


def blend_runs(workspace, *args):
    return subprocess.run([sys.executable, str(REPO / "bench" / "blend_runs.py"), "tiny", *args,
                           "--device", "cpu"], env=compete_env(workspace), capture_output=True, text=True)


def test_blend_rebuilds_each_runs_split_and_refuses_runs_split_otherwise(workspace):
    preset = {"val_fraction": 0.25, "members": [MEMBER, {**MEMBER, "model_args": {"widths": [4, 8], "convs": 1}}]}
    make_competition(workspace, n_train=60, preset=preset)
    for seed in ("0", "0", "1"):
        assert main(["train", "tiny", "--device", "cpu", "--seed", seed]) == 0
    first, second, other_seed = sorted((workspace / "submissions" / "tiny" / "runs").iterdir())
    scores = [m["score"] for m in run_summary(first)["members"]]
    scores.append(run_summary(second)["members"][1]["score"])

    result = blend_runs(workspace, first.name, f"{first.name}:1", f"{second.name}:1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("15 hold-out images (seed 0")
    alone = [float(line.split()[0]) for line in lines[1:4]]
    assert alone == [round(score, 4) for score in scores]  # the same images the training scored
    assert len(lines) == 1 + 3 + 3 + 1  # three alone, three pairs, all three
    assert all("equal weights" in line for line in lines[4:])

    refused = blend_runs(workspace, first.name, other_seed.name)
    assert refused.returncode == 1
    assert f"error: Run {other_seed.name} was split differently" in refused.stderr
