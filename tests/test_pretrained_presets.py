"""Presets any user can run: `init` on a photo competition writes members that start from
torchvision's own pretrained weights (`tv/mobilenet_v2`, pretrained: true), read from its cache
($TORCH_HOME, ../shared/torch_home in the tests), with no weights folder at all."""
import shutil

import pandas as pd
import pytest
import torch

from compete.cli import main
from compete.models import torchvision_cache_file
from compete.runs import read_checkpoint

from helpers import REPO, only_run

BEES = REPO.parent / "shared" / "datasets" / "bees"


def few_bees(folder, per_class: int = 8, tests: int = 6):
    """A small copy of the bees competition: the first images of each class folder and the
    first test images, with their rows of the sample submission."""
    for label in ("ants", "bees"):
        (folder / "train" / label).mkdir(parents=True)
        for path in sorted((BEES / "train" / label).glob("*.jpg"))[:per_class]:
            shutil.copy(path, folder / "train" / label / path.name)
    sample = pd.read_csv(BEES / "sample_submission.csv").head(tests)
    (folder / "test").mkdir()
    for name in sample["file"]:
        shutil.copy(BEES / "test" / name, folder / "test" / name)
    sample.to_csv(folder / "sample_submission.csv", index=False)
    return folder


@pytest.mark.slow  # trains MobileNetV2's head on 16 photos for an epoch (about 20 s on 2 CPU cores)
@pytest.mark.skipif(not BEES.is_dir(), reason=f"{BEES} not present")
def test_init_on_bees_trains_the_pretrained_default_from_torch_home_alone(workspace, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COMPETE_WEIGHTS", str(tmp_path / "no-weights-folder"))
    cache_file = torchvision_cache_file("mobilenet_v2")
    assert cache_file.is_file(), "TORCH_HOME holds torchvision's MobileNetV2 (conftest)"
    data = few_bees(tmp_path / "bees")
    assert main(["init", "bees", "--data", str(data)]) == 0
    assert "offline, put" not in capsys.readouterr().out  # the cache holds what the presets need
    assert main(["train", "bees", "--data", str(data), "--epochs", "1", "--set", "freeze_epochs=1"]) == 0
    assert main(["predict", "bees", "--data", str(data)]) == 0
    checkpoint = read_checkpoint(only_run(workspace, "bees") / "members" / "m0_f0.safetensors")
    assert checkpoint["member"]["model"] == "tv/mobilenet_v2" and checkpoint["member"]["pretrained"]
    cached = torch.load(cache_file, weights_only=True)
    frozen = [key for key in cached if key.startswith("features.") and cached[key].is_floating_point()]
    assert frozen and all(torch.equal(checkpoint["state_dict"][f"net.{key}"], cached[key]) for key in frozen)
    assert len(pd.read_csv(workspace / "submissions" / "bees" / "submission.csv")) == 6
