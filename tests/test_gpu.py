"""The CUDA path, end to end: reproducibility, the NCCL launch, torch.compile, and GPU inference
against CPU inference. Skipped without a CUDA GPU; `bench/gpu.sh` runs it on the device machine
(`pytest -s` prints the measured differences)."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from compete.config import load_competition, resolve_run
from compete.runtime import start_session
from compete.pipeline import train_competition
from compete.predict import predict_competition

from helpers import compete_env, make_competition, member_weights, needs_cuda, run_summary

pytestmark = [pytest.mark.slow, needs_cuda]  # trains for real, on a GPU

# every random source on (crops, cutout, mixup, CutMix, EMA, shifted TTA), on both model families
PRESET = {"val_fraction": 0.25, "members": [
    {"model": "cnn", "model_args": {"widths": [16, 32], "convs": 1, "dropout": 0.1}, "epochs": 8,
     "batch_size": 32, "lr": 0.01, "pad_crop": 2, "cutout": 4, "mixup": 0.2, "cutmix": 1.0,
     "ema": 0.9, "tta": ["identity", "shift_left"]},
    {"model": "resnet_small", "model_args": {"widths": [16, 32, 64]}, "epochs": 8, "batch_size": 32,
     "optimizer": "sgd", "lr": 0.05, "pad_crop": 2, "tta": ["identity", "shift_left"]}]}
SCORE_TOLERANCE = 0.05      # hold-out accuracy of two seeded runs with cuDNN autotuning on
AGREEMENT = 0.95            # share of test rows given the same label by two such runs


@pytest.fixture
def gpu_tiny(workspace):
    return make_competition(workspace, n_train=320, n_test=80, classes=("ant", "bee", "cat", "dog"),
                            channels=3, size=16, preset=PRESET)  # no flips: class = quadrant


def train_and_predict(tiny, **settings):
    comp = load_competition(tiny.name)
    run = resolve_run(comp, "default", {"seed": 3, "device": "cuda", **settings})
    run_dir = train_competition(start_session(comp, run), tiny.data_dir)
    submission = pd.read_csv(predict_competition(comp, tiny.data_dir, run_dir.name, "cuda"), dtype=str)
    summary = run_summary(run_dir)
    return run_dir, submission, summary, member_weights(run_dir)


def largest_difference(first: dict, second: dict) -> float:
    return max((a[key].float() - b[key].float()).abs().max().item()
               for name, a in first.items() for b in [second[name]] for key in a)


def test_deterministic_cuda_runs_repeat_bit_for_bit(gpu_tiny):
    _, first_submission, _, first = train_and_predict(gpu_tiny, deterministic=True)
    _, second_submission, _, second = train_and_predict(gpu_tiny, deterministic=True)
    difference = largest_difference(first, second)
    print(f"\ndeterministic=true: largest weight difference {difference:g}")
    assert difference == 0
    assert first_submission.equals(second_submission)


def test_default_cuda_runs_agree_within_tolerance(gpu_tiny):
    _, first_submission, first_summary, first = train_and_predict(gpu_tiny)
    _, second_submission, second_summary, second = train_and_predict(gpu_tiny)
    agreement = (first_submission["label"] == second_submission["label"]).mean()
    gap = abs(first_summary["ensemble_score"] - second_summary["ensemble_score"])
    print(f"\ndefault (cuDNN autotuning): largest weight difference {largest_difference(first, second):g}, "
          f"hold-out score gap {gap:.4f}, test labels agreeing {agreement:.3f}")
    assert first_summary["ensemble_score"] > 0.8  # it learned
    assert gap <= SCORE_TOLERANCE
    assert agreement >= AGREEMENT


def test_a_cuda_run_predicts_on_the_cpu_like_on_the_gpu(gpu_tiny):
    run_dir, gpu_submission, _, _ = train_and_predict(gpu_tiny)
    comp = load_competition(gpu_tiny.name)
    cpu_submission = pd.read_csv(predict_competition(comp, gpu_tiny.data_dir, run_dir.name, "cpu"), dtype=str)
    agreement = (gpu_submission["label"] == cpu_submission["label"]).mean()
    print(f"\nGPU against CPU inference of one run: test labels agreeing {agreement:.3f}")
    assert list(gpu_submission["id"]) == list(cpu_submission["id"])
    assert agreement >= AGREEMENT


def test_compiled_members_train_and_predict(gpu_tiny):
    _, submission, summary, _ = train_and_predict(gpu_tiny, compile=True)
    assert summary["ensemble_score"] > 0.8
    assert len(submission) == 80


def test_the_nccl_path_runs_under_torchrun(gpu_tiny, workspace):
    """One process per GPU through torchrun: NCCL process group, DDP with device_ids, reductions."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={torch.cuda.device_count()}", "-m", "compete", "train", gpu_tiny.name,
               "--device", "cuda"]
    result = subprocess.run(command, env=compete_env(workspace), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = list((workspace / "submissions" / gpu_tiny.name / "runs").iterdir())
    assert len(runs) == 1
    assert run_summary(runs[0])["ensemble_score"] > 0.8
    assert Path(runs[0] / "members").is_dir()
