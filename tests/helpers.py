"""What the tests share: tiny competitions written by the tests themselves, in a temporary
workspace, and small helpers. The fixtures that use them are in conftest.py."""
from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
# pretrained weights files named by presets: the shared folder beside the checkout (also in CI)
os.environ.setdefault("COMPETE_WEIGHTS", str(REPO.parent / "shared" / "weights"))
# torchvision's cache (hub/checkpoints), which holds the ImageNet MobileNetV2 that photo presets
# start from (`tv/mobilenet_v2`, pretrained: true) under torchvision's own file names
os.environ.setdefault("TORCH_HOME", str(REPO.parent / "shared" / "torch_home"))
TINY_PRESET = {"val_fraction": 0.25, "members": [{
    "model": "cnn", "model_args": {"widths": [8, 16], "convs": 1, "dropout": 0.0},
    "epochs": 3, "batch_size": 8, "lr": 0.01, "pad_crop": 0}]}


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_albumentations = pytest.mark.skipif(importlib.util.find_spec("albumentations") is None,
                                          reason="albumentations (requirements.txt) is not installed")


def cpu_session(comp=None, run=None):
    """A session on the CPU at full precision (fp32: the same numbers on every CPU)."""
    from compete.config import Competition, RunConfig
    from compete.runtime import Runtime, Session
    return Session(comp or Competition(name="tiny", image_size=8, hflip=False), run or RunConfig(),
                   Runtime(torch.device("cpu"), "fp32"))


def compete_env(workspace: Path) -> dict:
    """The environment of a child process that runs this checkout's compete in `workspace`."""
    return {**os.environ, "COMPETE_ROOT": str(workspace), "PYTHONPATH": str(REPO / "src")}


def cli_process(workspace: Path, *args: str) -> subprocess.Popen:
    """`python -m compete ARGS` as its own process (output and errors merged), in `workspace`."""
    return subprocess.Popen([sys.executable, "-m", "compete", *args], env=compete_env(workspace),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_summary(run_dir: Path) -> dict:
    """A finished run's summary.json."""
    return json.loads((run_dir / "summary.json").read_text())


def only_run(root: Path, name: str) -> Path:
    """The run folder of competition `name` in a workspace where it was trained once."""
    return next((root / "submissions" / name / "runs").iterdir())


def decode_calls(monkeypatch) -> list:
    """A list that grows by one each time data.py decodes a split's images (not read from cache)."""
    from compete import data
    calls = []
    original = data._decode_all
    monkeypatch.setattr(data, "_decode_all", lambda *args: calls.append(1) or original(*args))
    return calls


def gen(seed: int = 0) -> torch.Generator:
    """A seeded CPU random generator, as the augmentations take."""
    return torch.Generator().manual_seed(seed)


def resident_bytes() -> int:
    """This process's resident memory now (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def member_weights(run_dir: Path) -> dict:
    """Checkpoint file name -> saved state_dict, for every member and fold of a finished run."""
    from compete.runs import read_checkpoint
    return {path.name: read_checkpoint(path)["state_dict"]
            for path in sorted((run_dir / "members").glob("*.safetensors"))}


@contextmanager
def workspace_at(root: Path):
    """COMPETE_ROOT pointed at `root` within a with-block (for module-scoped fixtures)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COMPETE_ROOT", str(root))
        (root / "competition").mkdir(exist_ok=True)
        yield root


@dataclass
class Tiny:
    name: str
    data_dir: Path
    train: pd.DataFrame
    test_ids: list
    classes: list
    zipped: bool = False
    truth: list | None = None  # the test labels, where the generator knows them


def pattern(label_index: int, channels: int, size: int, rng) -> np.ndarray:
    """A learnable image: a bright square whose position encodes the class, plus noise."""
    image = rng.integers(0, 60, (size, size, channels), dtype=np.uint8)
    row, col = divmod(label_index % 4, 2)
    half = size // 2
    image[row * half:(row + 1) * half, col * half:(col + 1) * half] = 220
    return image


def image_bytes(image: np.ndarray | Image.Image, fmt: str = "PNG", **options) -> bytes:
    """The file bytes of `image` (a PIL image, or a (height, width, channels) uint8 array) in
    format `fmt`, with PIL's save `options` (quality=, exif=)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def make_competition(root: Path, name: str = "tiny", n_train: int = 48, n_test: int = 12,
                     classes=("0", "1", "2"), channels: int = 1, size: int = 8,
                     zipped: bool = False, seed: int = 0, preset: dict | None = None,
                     **yaml_overrides) -> Tiny:
    """Write inputs/<name>/ (folders or zips, as the sites hand them out) and competition/<name>.yaml."""
    rng = np.random.default_rng(seed)
    data_dir = root / "inputs" / name
    data_dir.mkdir(parents=True)
    labels = [classes[i % len(classes)] for i in range(n_train)]
    train = pd.DataFrame({"id": [str(i) for i in range(1, n_train + 1)], "label": labels})
    test_ids = [str(i) for i in range(n_train + 1, n_train + n_test + 1)]
    files = {"train.csv": train.to_csv(index=False).encode(),
             "test.csv": pd.DataFrame({"id": test_ids}).to_csv(index=False).encode()}
    for image_id, label in zip(train["id"], labels):
        files[f"train/{image_id}.png"] = image_bytes(pattern(classes.index(label), channels, size, rng))
    for image_id in test_ids:
        files[f"test/{image_id}.png"] = image_bytes(pattern(int(rng.integers(len(classes))), channels, size, rng))
    if zipped:
        for split in ("train", "test"):
            with zipfile.ZipFile(data_dir / f"{split}.zip", "w") as archive:
                for path, content in files.items():
                    if path.startswith(split):
                        archive.writestr(path, content)
    else:
        for path, content in files.items():
            (data_dir / path).parent.mkdir(parents=True, exist_ok=True)
            (data_dir / path).write_bytes(content)
    pd.DataFrame({"id": test_ids, "label": classes[0]}).to_csv(data_dir / "sample_submission.csv", index=False)
    spec = {"channels": channels, "image_size": size, "hflip": False,
            "presets": {"default": preset or TINY_PRESET}, **yaml_overrides}
    (root / "competition" / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return Tiny(name, data_dir, train, test_ids, list(classes), zipped)


def put_file(tiny: Tiny, relpath: str, content: bytes | None) -> None:
    """Replace one file of a tiny competition (None deletes it), inside its zip when zipped."""
    for zip_path in sorted(tiny.data_dir.glob("*.zip")):
        with zipfile.ZipFile(zip_path) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        if relpath in members:
            members.pop(relpath)
            if content is not None:
                members[relpath] = content
            with zipfile.ZipFile(zip_path, "w") as archive:
                for name, data in members.items():
                    archive.writestr(name, data)
            return
    path = tiny.data_dir / relpath
    if content is None:
        path.unlink()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def read_file(tiny: Tiny, relpath: str) -> bytes:
    """One file of a tiny competition, from disk or from inside its zip."""
    for zip_path in sorted(tiny.data_dir.glob("*.zip")):
        with zipfile.ZipFile(zip_path) as archive:
            if relpath in archive.namelist():
                return archive.read(relpath)
    return (tiny.data_dir / relpath).read_bytes()


def assert_nothing_half_written(workspace, name):
    """No run folder started, no submission written, and every decoded-image cache entry whole."""
    runs = workspace / "submissions" / name / "runs"
    assert not runs.exists() or not list(runs.iterdir()), "a run folder was started"
    assert not (workspace / "submissions" / name / "submission.csv").exists()
    cache = workspace / "inputs" / ".cache" / name
    leftovers = [p.name for p in cache.glob("*")] if cache.exists() else []
    assert not [p for p in leftovers if ".tmp" in p]
    for npy in cache.glob("*.npy"):  # every cache entry that exists is whole
        assert np.load(npy).ndim == 4 and json.loads(npy.with_suffix(".json").read_text())


def picture(rng, channels: int = 1, size: int = 32) -> np.ndarray:
    """A random picture (size, size, channels) uint8: overlapping shapes on a noisy background,
    with edges like a photo's objects; two of them are never alike."""
    colour = lambda: tuple(int(c) for c in rng.integers(0, 256, channels))  # noqa: E731
    image = Image.new("L" if channels == 1 else "RGB", (size, size), colour())
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x, y = rng.integers(-size // 4, size, 2)
        w, h = rng.integers(size // 8, size // 2, 2)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + w, y + h), fill=colour())
    pixels = np.asarray(image, dtype=np.int16).reshape(size, size, channels)
    return np.clip(pixels + rng.integers(-8, 9, pixels.shape), 0, 255).astype(np.uint8)


def with_pictures(tiny: Tiny, seed: int = 0) -> dict[str, np.ndarray]:
    """Replace every image of a (folder) tiny competition with a distinct picture; returns
    'train/<id>.png' -> pixels."""
    rng = np.random.default_rng(seed)
    spec = yaml.safe_load((tiny.data_dir.parents[1] / "competition" / f"{tiny.name}.yaml").read_text())
    pixels = {}
    for split, ids in (("train", tiny.train["id"]), ("test", tiny.test_ids)):
        for image_id in ids:
            pixels[f"{split}/{image_id}.png"] = picture(rng, spec["channels"], spec["image_size"])
            put_file(tiny, f"{split}/{image_id}.png", image_bytes(pixels[f"{split}/{image_id}.png"]))
    return pixels


def decoded(raw: bytes, channels: int, size: int) -> np.ndarray:
    """Image file bytes as the decoded-image store holds them: uint8 (size, size, channels)."""
    from compete.data import open_image, to_array
    return to_array(open_image(raw), channels, size)


def nchw(images) -> torch.Tensor:
    """(N, H, W, C) uint8 images (an array, or an ImageFile's rows) as a (N, C, H, W) tensor."""
    return torch.from_numpy(np.asarray(images).transpose(0, 3, 1, 2).copy())


class StandIn:
    """A stand-in `kaggle` command on PATH (tests write its script): its folder holds what it
    was asked (calls.jsonl) and what it will do next (scenario.json)."""

    def __init__(self, home: Path):
        self.home = home

    def script(self, **scenario) -> None:
        (self.home / "scenario.json").write_text(json.dumps(scenario))

    def calls(self) -> list[list[str]]:
        log = self.home / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def install_stand_in(home: Path, program: str, monkeypatch) -> StandIn:
    """`program` (a Python script's text) installed as `kaggle` first on PATH, with an empty scenario."""
    (home / "bin").mkdir()
    executable = home / "bin" / "kaggle"
    executable.write_text(program)
    executable.chmod(0o755)
    monkeypatch.setenv("KAGGLE_STAND_IN", str(home))
    monkeypatch.setenv("PATH", f"{home / 'bin'}{os.pathsep}{os.environ['PATH']}")
    stand_in = StandIn(home)
    stand_in.script()
    return stand_in


SITES = ("north", "south", "east")  # the categorical metadata column's training values


def make_metadata_competition(root: Path, name: str = "meta", n_train: int = 160, n_test: int = 40,
                              missing: float = 0.1, seed: int = 0, preset: dict | None = None,
                              **yaml_overrides) -> Tiny:
    """A competition that only metadata and image together solve: each image shows one of two
    patterns, each row has a `temperature` (a number; a share `missing` of its cells empty) and
    a `site` (a category, and one the training rows never have in the test CSV); the label is
    "yes" where the pattern suits the temperature (pattern 0 and above zero, or pattern 1 and
    below), so the image alone, or the temperature alone, is chance."""
    rng = np.random.default_rng(seed)
    tiny = make_competition(root, name, n_train=n_train, n_test=n_test, classes=("no", "yes"), seed=seed,
                            preset=preset, metadata=["temperature", "site"], **yaml_overrides)
    rows = {}
    for split, count, sites in (("train", n_train, SITES), ("test", n_test, SITES + ("moon",))):
        patterns = rng.integers(0, 2, count)
        temperature = rng.uniform(-20, 20, count).round(1)
        cells = np.where(rng.random(count) < missing, "", temperature.astype(str))
        rows[split] = pd.DataFrame({"temperature": cells, "site": rng.choice(sites, count)})
        rows[split]["label"] = np.where((patterns == 0) == (temperature > 0), "yes", "no")
        ids = tiny.train["id"] if split == "train" else tiny.test_ids
        for image_id, kind in zip(ids, patterns):
            (tiny.data_dir / split / f"{image_id}.png").write_bytes(image_bytes(pattern(int(kind), 1, 8, rng)))
    train = pd.DataFrame({"id": tiny.train["id"], **rows["train"]})
    train.to_csv(tiny.data_dir / "train.csv", index=False)
    pd.DataFrame({"id": tiny.test_ids, **rows["test"].drop(columns="label")}).to_csv(
        tiny.data_dir / "test.csv", index=False)
    pd.DataFrame({"id": tiny.test_ids, "label": "no"}).to_csv(tiny.data_dir / "sample_submission.csv", index=False)
    tiny.train, tiny.classes = train, ["no", "yes"]
    tiny.truth = rows["test"]["label"].tolist()
    return tiny
