"""Loading tiny competitions: folders and zips, labels, every PNG flavour, splits, the cache."""
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from compete.config import load_competition
from compete.data import load_images, load_train
from compete.splits import holdout_split, kfold_splits
from compete.files import DataDir
from compete.tables import load_tables
from compete.submission import build_submission, write_submission

from helpers import decoded, decode_calls, image_bytes, make_competition, put_file


@pytest.mark.parametrize("channels,classes", [(1, ("0", "1", "2")), (3, ("cat", "dog", "frog", "ship"))])
def test_folder_and_zip_load_the_same_images_and_labels(workspace, channels, classes):
    folder = make_competition(workspace, "folder", channels=channels, classes=classes, seed=3)
    zipped = make_competition(workspace, "zipped", channels=channels, classes=classes, seed=3, zipped=True)
    loaded = [load_train(load_competition(t.name), DataDir(t.data_dir)) for t in (folder, zipped)]
    for dataset in loaded:
        assert dataset.train_images.shape == (48, 8, 8, channels)
        assert dataset.train_images.dtype == np.uint8
        assert dataset.tables.train_ids == folder.train["id"].tolist()
        assert [dataset.tables.classes[t] for t in dataset.train_targets] == folder.train["label"].tolist()
    assert np.array_equal(loaded[0].train_images, loaded[1].train_images)


def test_integer_labels_sort_by_value_and_string_labels_alphabetically(workspace):
    ints = make_competition(workspace, "ints", classes=("10", "9", "007", "1"))
    strings = make_competition(workspace, "strings", classes=("zebra", "ant", "Bee"))
    assert load_tables(load_competition("ints"), DataDir(ints.data_dir)).classes == ["1", "007", "9", "10"]
    assert load_tables(load_competition("strings"), DataDir(strings.data_dir)).classes == ["Bee", "ant", "zebra"]


def palette_image() -> Image.Image:
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 200, 100, 0])
    return image


def transparent_palette_image() -> Image.Image:
    image = palette_image()
    image.info["transparency"] = 1  # palette entry 1 (the orange) is see-through
    return image


LUMA = 118  # 0.299 * 200 + 0.587 * 100
GRAY16 = np.full((8, 8), 40000, dtype=np.uint16)
FLAVOURS = {
    "gray": (Image.new("L", (8, 8), 77), (77,), (77, 77, 77)),
    "rgb": (Image.new("RGB", (8, 8), (200, 100, 0)), (LUMA,), (200, 100, 0)),
    "rgba": (Image.new("RGBA", (8, 8), (200, 100, 0, 255)), (LUMA,), (200, 100, 0)),
    "rgba transparent": (Image.new("RGBA", (8, 8), (200, 100, 0, 0)), (255,), (255, 255, 255)),
    "gray+alpha transparent": (Image.new("LA", (8, 8), (77, 0)), (255,), (255, 255, 255)),
    "palette transparent": (transparent_palette_image(), (255,), (255, 255, 255)),
    "palette": (palette_image(), (LUMA,), (200, 100, 0)),
    "16-bit": (Image.fromarray(GRAY16), (156,), (156, 156, 156)),  # 40000 / 257
    "bilevel": (Image.new("1", (8, 8), 1), (255,), (255, 255, 255)),
}


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_png_flavour_decodes_to_the_declared_channels(flavour, channels):
    image, gray, colour = FLAVOURS[flavour]
    array = decoded(image_bytes(image), channels, 8)
    assert array.shape == (8, 8, channels) and array.dtype == np.uint8
    assert tuple(array[0, 0]) == (gray if channels == 1 else colour)


def test_half_transparent_pixels_blend_with_white_not_with_the_hidden_colour():
    array = decoded(image_bytes(Image.new("RGBA", (8, 8), (0, 0, 200, 128))), 3, 8)
    assert np.abs(array[0, 0].astype(int) - [127, 127, 227]).max() <= 1  # 50% blue over white


def jpeg_with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return image_bytes(image, "JPEG", quality=95, exif=exif)


@pytest.mark.parametrize("orientation,turned", [(1, "as stored"), (3, "upside down"), (6, "rotated"),
                                                (8, "rotated back")])
def test_exif_orientation_turns_photos_upright(orientation, turned):
    """A photo stored 16 wide x 8 high, bright on its left half; the camera's EXIF tag says how
    to turn it. Upright, the bright half is where a viewer shows it."""
    stored = np.zeros((8, 16, 3), dtype=np.uint8)
    stored[:, :8] = 250
    array = decoded(jpeg_with_orientation(Image.fromarray(stored), orientation), 1, 16)[:, :, 0]
    bright = array > 128
    expected = {1: (slice(None), slice(0, 8)), 3: (slice(None), slice(8, 16)),  # squashed to 16x16
                6: (slice(0, 8), slice(None)), 8: (slice(8, 16), slice(None))}[orientation]
    assert bright[expected].mean() > 0.9 and bright.mean() == pytest.approx(0.5, abs=0.1), turned


def test_other_sizes_are_resized_to_the_declared_size():
    assert decoded(image_bytes(Image.new("L", (13, 5), 9)), 1, 8).shape == (8, 8, 1)


def test_labels_and_leading_zero_ids_round_trip_to_the_submission(workspace):
    tiny = make_competition(workspace, classes=("007", "7", "10"))
    sample = pd.DataFrame({"id": ["0001", "002", "3"], "label": "7"})
    put_file(tiny, "sample_submission.csv", sample.to_csv(index=False).encode())
    put_file(tiny, "test.csv", sample[["id"]].to_csv(index=False).encode())
    tables = load_tables(load_competition(tiny.name), DataDir(tiny.data_dir))
    probs = np.eye(3)[[0, 1, 2]]  # one row per class
    path = write_submission(build_submission(tables.sample, "id", "label", tables.classes, probs),
                            workspace / "out")
    assert path.read_text().splitlines() == ["id,label", "0001,007", "002,7", "3,10"]


def test_probability_samples_get_one_column_per_class(workspace):
    sample = pd.DataFrame({"id": ["a", "b"], "dog": "0", "cat": "0"})
    frame = build_submission(sample, "id", "label", ["cat", "dog"], np.array([[0.9, 0.1], [0.2, 0.8]]))
    assert list(frame.columns) == ["id", "dog", "cat"]
    assert frame["cat"].tolist() == [0.9, 0.2]


def test_a_column_beside_the_class_columns_keeps_the_samples_values(workspace):
    sample = pd.DataFrame({"id": ["a", "b"], "dog": "0", "cat": "0", "Usage": ["Public", "Private"]})
    frame = build_submission(sample, "id", "label", ["cat", "dog"], np.array([[0.9, 0.1], [0.2, 0.8]]))
    assert list(frame.columns) == ["id", "dog", "cat", "Usage"]
    assert frame["dog"].tolist() == [0.1, 0.8] and frame["Usage"].tolist() == ["Public", "Private"]


def test_holdout_split_keeps_class_proportions():
    targets = np.repeat([0, 1, 2], [40, 20, 12])
    train_idx, val_idx = holdout_split(targets, 0.25, seed=0)
    assert sorted(np.concatenate([train_idx, val_idx])) == list(range(len(targets)))
    assert np.bincount(targets[val_idx]).tolist() == [10, 5, 3]


def test_holdout_split_trains_on_a_single_image_class_and_on_everything_at_fraction_zero():
    targets = np.array([0] * 10 + [1] * 10 + [2])
    train_idx, val_idx = holdout_split(targets, 0.2, seed=0)
    assert 20 in train_idx and 20 not in val_idx
    train_idx, val_idx = holdout_split(targets, 0.0, seed=0)
    assert len(train_idx) == len(targets) and len(val_idx) == 0


def test_kfold_validates_every_image_once_with_balanced_folds():
    targets = np.repeat([0, 1, 2], [15, 10, 5])
    splits = kfold_splits(targets, 5, seed=0)
    validated = np.concatenate([val for _, val in splits])
    assert sorted(validated) == list(range(len(targets)))
    for train_idx, val_idx in splits:
        assert not set(train_idx) & set(val_idx)
        assert np.bincount(targets[val_idx]).tolist() == [3, 2, 1]


def test_kfold_trains_small_classes_in_every_fold():
    targets = np.array([0] * 9 + [1] * 2)
    for train_idx, val_idx in kfold_splits(targets, 3, seed=0):
        assert {9, 10} <= set(train_idx) and not {9, 10} & set(val_idx)


@pytest.mark.parametrize("zipped", [False, True])
def test_cache_is_reused_and_invalidated_when_an_image_changes(workspace, monkeypatch, zipped):
    tiny = make_competition(workspace, zipped=zipped)
    comp = load_competition(tiny.name)
    calls = decode_calls(monkeypatch)
    first = load_images(comp, DataDir(tiny.data_dir), "train", tiny.train["id"].tolist(), "train")
    again = load_images(comp, DataDir(tiny.data_dir), "train", tiny.train["id"].tolist(), "train")
    assert len(calls) == 1 and np.array_equal(first.images, again.images)

    put_file(tiny, "train/1.png", image_bytes(np.full((8, 8, 1), 123, dtype=np.uint8)))
    changed = tiny.data_dir / ("train.zip" if zipped else "train/1.png")
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    fresh = load_images(comp, DataDir(tiny.data_dir), "train", tiny.train["id"].tolist(), "train")
    assert len(calls) == 2
    assert (fresh.images[0] == 123).all() and np.array_equal(fresh.images[1:], first.images[1:])


def test_cache_is_invalidated_when_the_ids_change(workspace, monkeypatch):
    tiny = make_competition(workspace)
    comp = load_competition(tiny.name)
    calls = decode_calls(monkeypatch)
    ids = tiny.train["id"].tolist()
    load_images(comp, DataDir(tiny.data_dir), "train", ids, "train")
    reordered = load_images(comp, DataDir(tiny.data_dir), "train", ids[::-1], "train")
    assert len(calls) == 2 and reordered.images.shape[0] == len(ids)


def snapshot(folder):
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("zipped", [False, True])
def test_loading_never_writes_into_the_data_folder(workspace, zipped):
    tiny = make_competition(workspace, zipped=zipped)
    before = snapshot(tiny.data_dir)
    os.chmod(tiny.data_dir, 0o555)  # read-only, as a shared dataset mount would be
    try:
        load_train(load_competition(tiny.name), DataDir(tiny.data_dir))
    finally:
        os.chmod(tiny.data_dir, 0o755)
    assert snapshot(tiny.data_dir) == before
    assert list((workspace / "inputs" / ".cache" / tiny.name).glob("train-*.npy"))
