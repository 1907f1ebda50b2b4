"""A run killed with SIGKILL mid-training, then resumed, ends with the weights of an
uninterrupted run (fixed seed; on CPU, and on a GPU where there is one)."""
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from compete.runs import read_checkpoint

from helpers import cli_process, make_competition, needs_cuda

pytestmark = pytest.mark.slow  # trains for real

PRESET = {"val_fraction": 0.25, "members": [{
    "model": "cnn", "model_args": {"widths": [8, 16], "convs": 1, "dropout": 0.1},
    "epochs": 5, "batch_size": 8, "lr": 0.01, "pad_crop": 1, "ema": 0.9}]}


# on a GPU: deterministic kernels, and epochs enough to be caught mid-run
DEVICES = [pytest.param(("--device", "cpu"), id="cpu"),
           pytest.param(("--device", "cuda", "--set", "deterministic=true", "--epochs", "40"), id="cuda",
                        marks=needs_cuda)]


def train(workspace: Path, *extra: str) -> subprocess.Popen:
    return cli_process(workspace, "train", "tiny", *extra)


def final_weights(workspace: Path) -> dict:
    runs = sorted((workspace / "submissions" / "tiny" / "runs").iterdir())
    return read_checkpoint(runs[-1] / "members" / "m0_f0.safetensors")["state_dict"]


@pytest.mark.parametrize("device", DEVICES)
def test_sigkill_then_resume_matches_an_uninterrupted_run(workspace, device):
    make_competition(workspace, n_train=320, size=16, preset=PRESET)
    first = train(workspace, *device)
    first.communicate(timeout=300)
    assert first.returncode == 0
    expected = final_weights(workspace)

    process = train(workspace, *device)
    resume_files = workspace / "submissions" / "tiny" / "runs"
    deadline = time.time() + 120
    while not list(resume_files.glob("*/members/resume_m0_f0.pt")) and time.time() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "training finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)  # no chance to clean up
    process.wait()
    interrupted = max(resume_files.glob("*/config.json")).parent
    assert not (interrupted / "summary.json").exists()

    resumed = train(workspace, *device, "--resume")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert "resuming after epoch" in output
    assert (interrupted / "summary.json").exists()
    actual = read_checkpoint(interrupted / "members" / "m0_f0.safetensors")["state_dict"]
    assert actual.keys() == expected.keys()
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name
    assert not (interrupted / "members" / "resume_m0_f0.pt").exists()


def test_resume_without_an_interrupted_run_says_so(tiny, capsys):
    from compete.cli import main
    assert main(["train", "tiny", "--resume", "--device", "cpu"]) == 2
    assert "No interrupted run" in capsys.readouterr().err
