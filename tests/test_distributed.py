"""`--gpus N` runs data-parallel through torchrun; on CPU the same code path uses gloo."""
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import make_competition

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 0.1  # validation accuracy; per-process BatchNorm statistics differ slightly
PRESET = {"val_fraction": 0.25, "members": [{
    "model": "cnn", "model_args": {"widths": [8, 16], "convs": 1, "dropout": 0.0},
    "epochs": 4, "batch_size": 8, "lr": 0.01, "pad_crop": 0}]}


def train(workspace: Path, *extra: str) -> dict:
    env = {**os.environ, "COMPETE_ROOT": str(workspace), "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "-m", "compete", "train", "tiny", "--device", "cpu", *extra],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    run_dir = Path(result.stdout.strip().splitlines()[-1].split("Run saved in ")[1])
    return json.loads((run_dir / "summary.json").read_text())


def test_two_gloo_processes_match_one_process(workspace):
    make_competition(workspace, n_train=160, size=8, preset=PRESET)
    single = train(workspace)
    parallel = train(workspace, "--gpus", "2")
    assert parallel["validated"] == single["validated"]
    assert abs(parallel["ensemble_score"] - single["ensemble_score"]) <= TOLERANCE
    assert parallel["ensemble_score"] > 0.8  # it learned, rather than both failing alike
    runs = list((workspace / "submissions" / "tiny" / "runs").iterdir())
    assert len(runs) == 2  # one run folder per run: only rank 0 creates and writes files


def test_batch_size_must_split_over_processes(workspace):
    make_competition(workspace, n_train=40, size=8,
                     preset={**PRESET, "members": [{**PRESET["members"][0], "batch_size": 7}]})
    env = {**os.environ, "COMPETE_ROOT": str(workspace), "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "-m", "compete", "train", "tiny", "--device", "cpu",
                             "--gpus", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "does not split evenly" in result.stdout + result.stderr
