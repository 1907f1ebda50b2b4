"""Two seeded CPU runs of train -> predict give identical weights and identical submissions."""
import pytest
import torch

from compete.config import load_competition, resolve_run
from compete.runtime import start_session
from compete.pipeline import train_competition
from compete.predict import predict_competition

from helpers import make_competition, member_weights

pytestmark = pytest.mark.slow  # trains for real


# every source of randomness on: k-fold shuffling, crops, flips, cutout, mixup, CutMix, EMA, TTA
RANDOM_PRESET = {"folds": 2, "members": [{
    "model": "cnn", "model_args": {"widths": [8, 16], "convs": 1, "dropout": 0.1},
    "epochs": 2, "batch_size": 8, "lr": 0.01, "pad_crop": 2, "cutout": 3, "mixup": 0.2, "cutmix": 1.0,
    "ema": 0.9, "tta": ["identity", "hflip"]}]}


def train_and_predict(tiny):
    comp = load_competition(tiny.name)
    run = resolve_run(comp, "default", {"seed": 7, "device": "cpu"})
    run_dir = train_competition(start_session(comp, run), tiny.data_dir)
    submission = predict_competition(comp, tiny.data_dir, run_dir.name, "cpu").read_bytes()
    return submission, member_weights(run_dir)


def test_two_seeded_cpu_runs_are_identical(workspace):
    tiny = make_competition(workspace, classes=("ant", "bee", "cat"), channels=3,
                            preset=RANDOM_PRESET, hflip=True)
    first_submission, first_weights = train_and_predict(tiny)
    second_submission, second_weights = train_and_predict(tiny)
    assert first_weights.keys() == second_weights.keys() and first_weights
    for name, state in first_weights.items():
        for key, tensor in state.items():
            assert torch.equal(tensor, second_weights[name][key]), f"{name} {key}"
    assert first_submission == second_submission
