"""Photo competitions: JPEGs of mixed sizes decoded in parallel to the training size by the
competition's resize policy, trained with photo augmentation, and the streamed path giving what
the resident one gives."""
import json

import numpy as np
import pandas as pd

import pytest
import torch
import yaml
from PIL import Image

from compete import imagestore
from compete.cli import main
from compete.config import load_competition, resolve_run
from compete.data import load_images
from compete.files import DataDir
from compete.runtime import start_session
from compete.pipeline import train_competition
from compete.predict import predict_competition

from helpers import image_bytes, make_competition, member_weights, needs_albumentations, run_summary

TINTS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


def photo(tint, width: int, height: int, rng, mode: str = "RGB") -> bytes:
    """A JPEG of noise around one colour (the class): survives crops, rotation and jitter."""
    noise = rng.integers(-50, 50, (height, width, 3))
    image = Image.fromarray(np.clip(np.array(tint) + noise, 0, 255).astype(np.uint8)).convert(mode)
    return image_bytes(image, "JPEG", quality=85)


def make_photos(root, name: str = "photos", n_train: int = 60, n_test: int = 9, preset=None,
                **yaml_overrides):
    """inputs/NAME/ with train.csv, train/<id>.jpg and test/<id>.jpg of random sizes and aspects."""
    rng = np.random.default_rng(0)
    data_dir = root / "inputs" / name
    for folder in ("train", "test"):
        (data_dir / folder).mkdir(parents=True)
    labels = [list(TINTS)[i % 3] for i in range(n_train)]
    ids = [f"p{i:03d}" for i in range(n_train + n_test)]
    for i, image_id in enumerate(ids):
        tint = TINTS[labels[i]] if i < n_train else list(TINTS.values())[i % 3]
        width, height = rng.integers(40, 120, 2)
        folder = "train" if i < n_train else "test"
        (data_dir / folder / f"{image_id}.jpg").write_bytes(photo(tint, width, height, rng))
    pd.DataFrame({"id": ids[:n_train], "label": labels}).to_csv(data_dir / "train.csv", index=False)
    pd.DataFrame({"id": ids[n_train:]}).to_csv(data_dir / "test.csv", index=False)
    pd.DataFrame({"id": ids[n_train:], "label": "red"}).to_csv(data_dir / "sample_submission.csv", index=False)
    member = {"model": "cnn", "model_args": {"widths": [8, 16], "convs": 1, "dropout": 0.0},
              "epochs": 4, "batch_size": 8, "lr": 0.01, "pad_crop": 0, "crop_scale": 0.5, "rotate": 10,
              "jitter": 0.2, "tta": ["identity", "hflip", "zoom"]}
    spec = {"channels": 3, "image_size": 24, "resize": "crop", "image_template": "{id}.jpg", "hflip": True,
            "presets": {"default": preset or {"val_fraction": 0.25, "loader_workers": 1, "members": [member]}},
            **yaml_overrides}
    (root / "competition" / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return data_dir


def run_once(name: str, data_dir, **overrides):
    comp = load_competition(name)
    run = resolve_run(comp, "default", {"seed": 3, "device": "cpu", **overrides})
    run_dir = train_competition(start_session(comp, run), data_dir)
    submission = predict_competition(comp, data_dir, run_dir.name, "cpu")
    return run_dir, pd.read_csv(submission, dtype=str)


@needs_albumentations
@pytest.mark.slow
def test_a_photo_competition_trains_and_predicts_on_the_loader_and_on_the_device(workspace):
    data_dir = make_photos(workspace)
    results = {where: run_once("photos", data_dir, photo_augment=where) for where in ("loader", "device")}
    scores = {}
    for where, (run_dir, submission) in results.items():
        assert submission.columns.tolist() == ["id", "label"]
        assert submission["id"].tolist() == [f"p{i:03d}" for i in range(60, 69)]
        assert set(submission["label"]) <= set(TINTS)
        scores[where] = run_summary(run_dir)["ensemble_score"]
        log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
        assert all(0 <= record["data_wait"] <= 1 for record in log)
    assert scores["loader"] >= 0.8 and scores["device"] >= 0.8  # the colour is learnt either way
    assert abs(scores["loader"] - scores["device"]) <= 0.2


RANDOM_PRESET = {"folds": 2, "members": [{  # crops, flips, cutout, mixing, EMA and TTA all on
    "model": "cnn", "model_args": {"widths": [8, 16], "convs": 1, "dropout": 0.1},
    "epochs": 2, "batch_size": 8, "lr": 0.01, "pad_crop": 2, "cutout": 3, "mixup": 0.2, "cutmix": 1.0,
    "ema": 0.9, "tta": ["identity", "hflip", "crop_tl"]}]}


@pytest.mark.slow
def test_a_streamed_run_gives_exactly_what_a_resident_run_gives(workspace):
    tiny = make_competition(workspace, classes=("ant", "bee", "cat"), channels=3, preset=RANDOM_PRESET, hflip=True)
    resident_dir, resident = run_once(tiny.name, tiny.data_dir)
    streamed_dir, streamed = run_once(tiny.name, tiny.data_dir, resident_gb=0.0, loader_workers=2)
    assert json.loads((streamed_dir / "config.json").read_text())["run"]["resident_gb"] == 0.0
    first, second = member_weights(resident_dir), member_weights(streamed_dir)
    assert first.keys() == second.keys() and first
    for name, state in first.items():
        for key, tensor in state.items():
            assert torch.equal(tensor, second[name][key]), f"{name} {key}"
    assert resident.equals(streamed)


@pytest.mark.slow
@needs_albumentations
def test_streamed_training_needs_no_more_than_the_cli(workspace):
    data_dir = make_photos(workspace, n_train=24, n_test=3)
    assert main(["train", "photos", "--device", "cpu", "--epochs", "1", "--set", "resident_gb=0"]) == 0
    assert main(["predict", "photos", "--device", "cpu"]) == 0
    assert (workspace / "submissions" / "photos" / "submission.csv").is_file() and data_dir.is_dir()


def put_image(folder, name: str, image: Image.Image, fmt: str) -> None:
    (folder / name).write_bytes(image_bytes(image, fmt))


@pytest.mark.parametrize("policy", ["squash", "crop", "letterbox"])
def test_the_resize_policy_decides_the_geometry_of_the_stored_images(workspace, policy):
    data_dir = make_photos(workspace, n_train=3, n_test=0, resize=policy, image_template="{id}.png")
    wide = np.zeros((40, 120, 3), np.uint8)
    wide[:, :40] = (255, 0, 0)     # red | green | blue thirds
    wide[:, 40:80] = (0, 255, 0)
    wide[:, 80:] = (0, 0, 255)
    put_image(data_dir / "train", "wide.png", Image.fromarray(wide), "PNG")
    comp = load_competition("photos")
    image = load_images(comp, DataDir(data_dir), "train", ["wide"], "train").images[0].astype(int)
    assert image.shape == (24, 24, 3)
    middle = image[12]
    if policy == "squash":   # all three colours, side by side
        assert middle[2, 0] > 200 and middle[12, 1] > 200 and middle[21, 2] > 200
    if policy == "crop":     # only the centre square: green
        assert (middle[2:-2, 1] > 200).all() and (middle[2:-2, 0] < 40).all()
    if policy == "letterbox":  # everything, at a third of the height, black above and below
        assert (image[:8] == 0).all() and (image[16:] == 0).all() and middle[1, 0] > 200 and middle[22, 2] > 200


@pytest.mark.slow
@pytest.mark.parametrize("zipped", [False, True])
def test_parallel_decoding_matches_decoding_in_this_process(workspace, monkeypatch, zipped):
    data_dir = make_photos(workspace, n_train=40, n_test=0)
    if zipped:  # the decoding processes open the zip themselves
        import shutil
        shutil.make_archive(str(data_dir / "train"), "zip", data_dir, "train")
        shutil.rmtree(data_dir / "train")
    comp = load_competition("photos")
    ids = [f"p{i:03d}" for i in range(40)]
    alone = np.asarray(load_images(comp, DataDir(data_dir), "train", ids, "train").images)
    for cached in (workspace / "inputs" / ".cache").rglob("*"):
        cached.unlink() if cached.is_file() else None
    monkeypatch.setattr(imagestore, "POOL_MIN_IMAGES", 0)
    monkeypatch.setattr(imagestore, "CHUNK_IMAGES", 6)
    monkeypatch.setattr(imagestore, "worker_count", lambda: 2)
    decoded = load_images(comp, DataDir(data_dir), "train", ids, "train")
    assert np.array_equal(np.asarray(decoded.images), alone) and alone.std() > 10
    assert sum(decoded.formats.values()) == 40 and all(k.startswith("JPEG RGB") for k in decoded.formats)
