"""`--gpus N` runs data-parallel through torchrun; on CPU the same code path uses gloo. Each
process trains on its half of every batch and the gradients are averaged over processes, so
two processes end where one process on the whole batches ends."""
from pathlib import Path

import pytest
import torch

from helpers import cli_process, make_competition, member_weights, run_summary

pytestmark = pytest.mark.slow  # trains for real

TOLERANCE = 0.1  # validation accuracy; per-process BatchNorm statistics differ slightly
PRESET = {"val_fraction": 0.25, "members": [{
    "model": "cnn", "model_args": {"widths": [8, 16], "convs": 1, "dropout": 0.0},
    "epochs": 4, "batch_size": 8, "lr": 0.01, "pad_crop": 0}]}


def train(workspace: Path, *extra: str) -> tuple[int, str]:
    process = cli_process(workspace, "train", "tiny", "--device", "cpu", *extra)
    output, _ = process.communicate(timeout=300)
    return process.returncode, output


def summary_printed(output: str) -> dict:
    """The summary of the run that `train` printed it saved."""
    saved = [line for line in output.splitlines() if line.startswith("Run saved in ")]
    return run_summary(Path(saved[-1][len("Run saved in "):]))


def test_two_gloo_processes_match_one_process(workspace):
    make_competition(workspace, n_train=160, size=8, preset=PRESET)
    (single_status, single_output), (parallel_status, parallel_output) = \
        train(workspace), train(workspace, "--gpus", "2")
    assert single_status == 0 and parallel_status == 0, single_output[-2000:] + parallel_output[-2000:]
    single, parallel = summary_printed(single_output), summary_printed(parallel_output)
    assert parallel["validated"] == single["validated"]
    assert abs(parallel["ensemble_score"] - single["ensemble_score"]) <= TOLERANCE
    assert parallel["ensemble_score"] > 0.8  # it learned, rather than both failing alike
    runs = list((workspace / "submissions" / "tiny" / "runs").iterdir())
    assert len(runs) == 2  # one run folder per run: only rank 0 creates and writes files


def test_two_gloo_processes_end_with_the_weights_of_one_process_on_whole_batches(workspace):
    """Without the gradient all-reduce each process would follow its own half of the data: the
    weights would differ by about 0.04 here (measured with DistributedDataParallel removed)."""
    frozen_bn = {**PRESET["members"][0], "epochs": 2, "freeze_bn": True}  # no per-process BN statistics
    make_competition(workspace, n_train=64, size=8, preset={**PRESET, "members": [frozen_bn]})
    for extra in ((), ("--gpus", "2")):
        status, output = train(workspace, *extra)
        assert status == 0, output[-2000:]
    runs = sorted((workspace / "submissions" / "tiny" / "runs").iterdir())  # oldest first
    single, parallel = (member_weights(run) for run in runs)
    assert single.keys() == parallel.keys() == {"m0_f0.safetensors"}
    for name, tensor in single["m0_f0.safetensors"].items():
        assert torch.allclose(parallel["m0_f0.safetensors"][name], tensor, rtol=0, atol=2e-3), name  # float sums: ~1e-4


def test_batch_size_must_split_over_processes(workspace):
    make_competition(workspace, n_train=40, size=8,
                     preset={**PRESET, "members": [{**PRESET["members"][0], "batch_size": 7}]})
    status, output = train(workspace, "--gpus", "2")
    assert status != 0
    assert "does not split evenly" in output
