"""Every layout a download comes in, as a new user meets it: `init` writes the yaml from the files
alone, then `check`, `train` and `predict` run with no hand edits to a valid submission.

Layouts: one folder per class (no train CSV; photos of mixed sizes, EXIF orientations and modes;
a test folder with no CSV), CSV ids that carry an extension or a path inside the image folder
(with test ids that do not: separate name templates), and one NAME.zip holding the other zips."""
import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from compete.cli import main
from compete.config import load_competition, resolve_run
from compete.data import load_train
from compete.files import DataDir
from compete.layout import unsafe_ids

from helpers import image_bytes, pattern

MODES = ["RGB", "L", "RGBA", "P"]  # cycled over the images (RGBA and P as PNG, the others JPEG)


def picture(label_index: int, size: tuple[int, int], mode: str, rng) -> Image.Image:
    """A learnable image of any size and mode: the class's bright square, scaled."""
    image = Image.fromarray(pattern(label_index, 3, 16, rng)).resize(size, Image.NEAREST)
    return image.convert(mode)


def encoded(image: Image.Image, orientation: int = 1) -> tuple[bytes, str]:
    """(bytes, extension): JPEG with an EXIF orientation for RGB and gray, PNG for alpha and palette."""
    if image.mode in ("RGB", "L"):
        exif = Image.Exif()
        exif[0x0112] = orientation
        # stored sideways, as a camera does: the viewer (and the pipeline) turns it back
        stored = image.transpose(Image.ROTATE_90) if orientation == 6 else image
        return image_bytes(stored, "JPEG", quality=90, exif=exif), "jpg"
    return image_bytes(image), "png"


def write(folder: Path, files: dict[str, bytes]) -> None:
    for relpath, content in files.items():
        (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
        (folder / relpath).write_bytes(content)


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def photos(count: int, classes, rng, side=(70, 110)) -> list[tuple[str, bytes, str]]:
    """(label, bytes, extension) of photos of mixed sizes, modes and orientations."""
    result = []
    for i in range(count):
        label = i % len(classes)
        size = (int(rng.integers(*side)), int(rng.integers(*side)))
        content, extension = encoded(picture(label, size, MODES[i % len(MODES)], rng), (1, 6)[i % 2])
        result.append((classes[label], content, extension))
    return result


def class_folder_download(folder: Path, classes=("ants", "bees"), n_train=24, n_test=8) -> None:
    """Plant-seedlings style: train/<class>/<file>, test/<file>, sample = file,species."""
    rng = np.random.default_rng(0)
    files = {f"train/{label}/{'more/' * (i % 5 == 0)}{label}{i}.{ext}": content
             for i, (label, content, ext) in enumerate(photos(n_train, classes, rng))}
    files["train/README.txt"] = b"not an image"
    names = []
    for i, (_, content, ext) in enumerate(photos(n_test, classes, rng)):
        names.append(f"t{i:03d}.{ext}")
        files[f"test/{names[-1]}"] = content
    files["sample_submission.csv"] = pd.DataFrame({"file": names, "species": classes[0]}).to_csv(
        index=False).encode()
    write(folder, files)


def path_id_download(folder: Path, n_train=24, n_test=8) -> None:
    """Train ids are paths inside images/ with their extension; test ids are bare names whose
    files are test_images/<id>.jpg."""
    rng = np.random.default_rng(1)
    rows, files = [], {}
    for i, (label, content, ext) in enumerate(photos(n_train, ["cat", "dog"], rng, side=(16, 17))):
        image_id = f"batch{i % 2}/{i:04d}.{ext}"
        rows.append((image_id, label))
        files[f"images/{image_id}"] = content
    test_ids = [f"x{i}" for i in range(n_test)]
    for image_id, (_, content, _) in zip(test_ids, photos(n_test, ["cat", "dog"], rng, side=(16, 17))):
        files[f"test_images/{image_id}.jpg"] = encoded(Image.open(io.BytesIO(content)).convert("RGB"))[0]
    files["labels.csv"] = pd.DataFrame(rows, columns=["image", "label"]).to_csv(index=False).encode()
    files["sample_submission.csv"] = pd.DataFrame({"image": test_ids, "label": "cat"}).to_csv(
        index=False).encode()
    write(folder, files)


def nested_zip_download(folder: Path, name: str, n_train=24, n_test=8) -> None:
    """One NAME.zip holding train.zip (train.csv, train/<id>.png), test.zip and the sample."""
    rng = np.random.default_rng(2)
    png = {i: image_bytes(pattern(i % 3, 1, 8, rng)) for i in range(1, n_train + n_test + 1)}
    train_ids, test_ids = range(1, n_train + 1), range(n_train + 1, n_train + n_test + 1)
    train = pd.DataFrame({"id": list(train_ids), "label": [f"c{i % 3}" for i in train_ids]})
    inner = {"train.zip": zipped({"train.csv": train.to_csv(index=False).encode(),
                                  **{f"train/{i}.png": png[i] for i in train_ids}}),
             "test.zip": zipped({f"test/{i}.png": png[i] for i in test_ids}),
             "sample_submission.csv": pd.DataFrame({"id": list(test_ids), "label": "c0"}).to_csv(
                 index=False).encode()}
    folder.mkdir(parents=True)
    (folder / f"{name}.zip").write_bytes(zipped(inner))


DOWNLOADS = {"class folders": class_folder_download, "path ids": path_id_download,
             "nested zip": nested_zip_download}
EXPECTED = {  # what init must find in each download
    "class folders": {"layout": "folders", "test_csv": None, "train_images": "train", "test_images": "test",
                      "id_column": "file", "label_column": "species", "image_template": "{id}",
                      "channels": 3, "image_size": 64},
    "path ids": {"train_csv": "labels.csv", "train_images": "images", "test_images": "test_images",
                 "id_column": "image", "train_template": "{id}", "test_template": "{id}.jpg",
                 "channels": 3, "image_size": 16},
    "nested zip": {"train_csv": "train.csv", "train_images": "train", "test_images": "test",
                   "image_template": "{id}.png", "channels": 1, "image_size": 8},
}


def download(kind: str, workspace: Path, name: str) -> Path:
    folder = workspace / "downloads" / name
    if kind == "nested zip":
        nested_zip_download(folder, name)
    else:
        folder.mkdir(parents=True)
        DOWNLOADS[kind](folder)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("kind", DOWNLOADS)
def test_init_then_check_train_predict_without_edits(workspace, capsys, kind):
    data = download(kind, workspace, "comp")
    assert main(["init", "comp", "--data", str(data)]) == 0
    written = yaml.safe_load((workspace / "competition" / "comp.yaml").read_text())
    for key, value in EXPECTED[kind].items():
        assert written.get(key, "absent") == value, key
    assert main(["check", "comp", "--data", str(data)]) == 0, capsys.readouterr().out
    assert main(["train", "comp", "--data", str(data), "--device", "cpu", "--epochs", "1"]) == 0
    assert main(["predict", "comp", "--data", str(data), "--device", "cpu"]) == 0
    submission = pd.read_csv(workspace / "submissions" / "comp" / "submission.csv", dtype=str)
    sample = DataDir(data).read_csv(written["sample_submission"])
    assert list(submission.columns) == list(sample.columns)
    assert submission.iloc[:, 0].tolist() == sample.iloc[:, 0].tolist()
    labels = load_train(load_competition("comp"), DataDir(data)).tables.classes
    assert set(submission[written["label_column"]]) <= set(labels)


def test_class_folders_give_the_labels_and_leave_other_files_out(workspace, capsys):
    data = download("class folders", workspace, "comp")
    assert main(["init", "comp", "--data", str(data)]) == 0
    dataset = load_train(load_competition("comp"), DataDir(data))
    ids, labels = dataset.tables.train_ids, dataset.tables.train_labels
    assert len(ids) == 24 and "ants/more/ants0.jpg" in ids and "bees/bees3.png" in ids
    assert all(image_id.split("/")[0] == label for image_id, label in zip(ids, labels))
    assert dataset.train_images.shape == (24, 64, 64, 3)
    assert main(["check", "comp", "--data", str(data)]) == 0
    assert "left out: README.txt" in capsys.readouterr().out


def test_check_points_a_csv_yaml_at_the_class_folders(workspace, capsys):
    data = download("class folders", workspace, "comp")
    (workspace / "competition" / "comp.yaml").write_text(yaml.safe_dump(
        {"id_column": "file", "label_column": "species", "image_template": "{id}", "channels": 3,
         "image_size": 16, "presets": {"default": {"members": [{"model": "cnn"}]}}}))
    assert main(["check", "comp", "--data", str(data)]) == 1
    out = capsys.readouterr().out
    assert "train.csv not found, but train/ holds one folder per class (ants, bees)" in out
    assert "layout: folders" in out and "./run.sh init comp --force" in out and "Found train" not in out


def test_init_refuses_to_overwrite_a_yaml_unless_forced(workspace, capsys):
    data = download("nested zip", workspace, "comp")
    (workspace / "competition" / "comp.yaml").write_text("channels: 1\n")
    assert main(["init", "comp", "--data", str(data)]) == 2
    assert "exists already" in capsys.readouterr().err
    assert (workspace / "competition" / "comp.yaml").read_text() == "channels: 1\n"
    assert main(["init", "comp", "--data", str(data), "--force"]) == 0
    assert "Confirm" in capsys.readouterr().out and load_competition("comp").image_size == 8


def test_init_names_the_cache_file_the_photo_presets_need_when_it_is_absent(workspace, tmp_path,
                                                                           monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    data = download("class folders", workspace, "comp")
    assert main(["init", "comp", "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path}/empty-cache/hub/checkpoints/mobilenet_v2-7ebf99e0.pth; offline, put" in out
    assert "--set pretrained=false" in out
    member = resolve_run(load_competition("comp")).members[0]
    assert (member.model, member.pretrained, member.weights) == ("tv/mobilenet_v2", True, None)


def test_init_says_nothing_of_weights_when_the_cache_holds_them(workspace, capsys):
    data = download("class folders", workspace, "comp")
    assert main(["init", "comp", "--data", str(data)]) == 0
    assert "offline, put" not in capsys.readouterr().out


def test_files_inside_a_zip_inside_a_zip_are_named_by_both(workspace):
    data = DataDir(download("nested zip", workspace, "comp"))
    assert data.exists("train/5.png") and data.exists("train.csv") and data.exists("sample_submission.csv")
    assert data.describe("train/5.png").endswith("comp.zip:train.zip:train/5.png")
    assert sorted(data.walk("test")) == [f"{i}.png" for i in sorted(range(25, 33), key=str)]
    assert not list(data.root.glob("*.png")), "nothing is unpacked into the data folder"


def test_a_zip_without_a_top_folder_serves_its_files_under_its_name(workspace):
    folder = workspace / "download"
    folder.mkdir()
    (folder / "train.zip").write_bytes(zipped({"1.png": b"a"}))
    (folder / "test.zip").write_bytes(zipped({"1.png": b"b"}))
    data = DataDir(folder)
    assert data.read_bytes("train/1.png") == b"a" and data.read_bytes("test/1.png") == b"b"


@pytest.mark.parametrize("image_id,refused", [
    ("001.jpg", False), ("train/ants/001.jpg", False), ("a b/ç.png", False),
    ("../x.png", True), ("a/../../x.png", True), ("/etc/passwd", True), ("C:\\x.png", True),
    ("\\\\server\\x.png", True), ("a/", True), (".", True), ("tab\there", True)])
def test_ids_may_be_relative_paths_but_never_leave_the_image_folder(image_id, refused):
    assert bool(unsafe_ids(pd.Series([image_id])).iloc[0]) == refused
