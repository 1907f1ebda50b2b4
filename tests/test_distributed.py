"""`--gpus N` runs data-parallel through torchrun; on CPU the same code path uses gloo."""
from pathlib import Path

import pytest

from conftest import cli_process, make_competition, run_summary

pytestmark = pytest.mark.slow  # trains for real

TOLERANCE = 0.1  # validation accuracy; per-process BatchNorm statistics differ slightly
PRESET = {"val_fraction": 0.25, "members": [{
    "model": "cnn", "model_args": {"widths": [8, 16], "convs": 1, "dropout": 0.0},
    "epochs": 4, "batch_size": 8, "lr": 0.01, "pad_crop": 0}]}


def train(workspace: Path, *extra: str) -> tuple[int, str]:
    process = cli_process(workspace, "train", "tiny", "--device", "cpu", *extra)
    output, _ = process.communicate(timeout=300)
    return process.returncode, output


def summary_of(output: str) -> dict:
    saved = [line for line in output.splitlines() if line.startswith("Run saved in ")]
    return run_summary(Path(saved[-1][len("Run saved in "):]))


def test_two_gloo_processes_match_one_process(workspace):
    make_competition(workspace, n_train=160, size=8, preset=PRESET)
    (single_status, single_output), (parallel_status, parallel_output) = \
        train(workspace), train(workspace, "--gpus", "2")
    assert single_status == 0 and parallel_status == 0, single_output[-2000:] + parallel_output[-2000:]
    single, parallel = summary_of(single_output), summary_of(parallel_output)
    assert parallel["validated"] == single["validated"]
    assert abs(parallel["ensemble_score"] - single["ensemble_score"]) <= TOLERANCE
    assert parallel["ensemble_score"] > 0.8  # it learned, rather than both failing alike
    runs = list((workspace / "submissions" / "tiny" / "runs").iterdir())
    assert len(runs) == 2  # one run folder per run: only rank 0 creates and writes files


def test_batch_size_must_split_over_processes(workspace):
    make_competition(workspace, n_train=40, size=8,
                     preset={**PRESET, "members": [{**PRESET["members"][0], "batch_size": 7}]})
    status, output = train(workspace, "--gpus", "2")
    assert status != 0
    assert "does not split evenly" in output
