"""Duplicate images: `check` names exact and near-duplicate images within train (labels that
disagree called out) and across train and test; the perceptual hash finds edited copies and
never pairs distinct pictures; the bucketed search finds exactly what comparing all pairs finds."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from compete.cli import main
from compete.config import Competition
from compete.leakage import exact_hashes, near_pairs, perceptual_hashes

from helpers import decoded, image_bytes, make_competition, picture, put_file, with_pictures

MAX_BITS = Competition("defaults").near_duplicate_bits


def resized(array: np.ndarray, side: int) -> bytes:
    image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).resize((side, side), Image.BILINEAR)
    return image_bytes(np.asarray(image).reshape(side, side, array.shape[2]))


EDITS = {  # file bytes of a copy; the pipeline decodes any of them back to 32 x 32
    "jpeg": lambda a: image_bytes(a, "JPEG", quality=90),
    "smaller": lambda a: resized(a, 30),
    "larger": lambda a: resized(a, 34),
    "brighter": lambda a: image_bytes(np.clip(a.astype(np.int16) + 20, 0, 255).astype(np.uint8)),
}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("edit", EDITS)
def test_an_edited_copy_is_near_its_original_and_distinct_pictures_are_not(edit, channels):
    rng = np.random.default_rng(channels)
    originals = np.stack([picture(rng, channels) for _ in range(200)])
    copies = np.stack([decoded(EDITS[edit](image), channels, 32) for image in originals[:20]])
    assert not np.array_equal(copies, originals[:20])
    hashes = perceptual_hashes(np.concatenate([originals, copies]))
    first, second, _ = near_pairs(hashes, MAX_BITS)
    assert sorted(zip(first.tolist(), second.tolist())) == [(i, 200 + i) for i in range(20)]


def test_exact_hashes_are_of_the_pixels_not_the_file_bytes():
    image = picture(np.random.default_rng(0))
    files = [image_bytes(image, compress_level=0), image_bytes(image, compress_level=9), image_bytes(image, "BMP")]
    assert len(set(files)) == 3
    assert len(set(exact_hashes(np.stack([decoded(file, 1, 32) for file in files])))) == 1


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 300), max_distance=st.integers(0, 40))
def test_bucketed_search_finds_exactly_the_pairs_that_comparing_all_pairs_finds(seed, n, max_distance):
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64 - 1, (n, 4), dtype=np.uint64, endpoint=True)
    for _ in range(n // 3):  # near copies: up to 24 of their 256 bits flipped
        source, target = rng.choice(n, 2, replace=False)
        hashes[target] = hashes[source]
        for bit in rng.choice(256, rng.integers(0, 25), replace=False):
            hashes[target, bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    first, second, distance = near_pairs(hashes, max_distance)
    i, j = np.triu_indices(n, 1)
    every = np.bitwise_count(hashes[i] ^ hashes[j]).sum(axis=1, dtype=np.int64)
    close = every <= max_distance
    assert np.array_equal(first, i[close]) and np.array_equal(second, j[close])
    assert np.array_equal(distance, every[close])


@pytest.fixture
def pictured(workspace):
    tiny = make_competition(workspace, n_train=30, n_test=8, size=32, classes=("a", "b", "c"))
    return tiny, with_pictures(tiny)


def check_output(tiny, capsys) -> tuple[int, str]:
    status = main(["check", tiny.name])
    return status, capsys.readouterr().out


def test_a_set_without_duplicates_reports_none(pictured, workspace, capsys):
    tiny, _ = pictured
    status, out = check_output(tiny, capsys)
    assert status == 0 and "warning:" not in out
    assert "duplicates: none within train or across train and test (38 images compared" in out
    assert not (workspace / "submissions" / tiny.name / "duplicates.csv").exists()


def test_check_names_planted_duplicates_within_train_and_across_train_and_test(pictured, workspace, capsys):
    tiny, pixels = pictured
    labels = dict(zip(tiny.train["id"], tiny.train["label"]))
    assert labels["3"] != labels["7"] and labels["4"] == labels["19"]
    put_file(tiny, "train/7.png", image_bytes(pixels["train/3.png"], compress_level=0))  # same pixels, other bytes
    put_file(tiny, "train/19.png", EDITS["jpeg"](pixels["train/4.png"]))
    put_file(tiny, "test/33.png", image_bytes(pixels["train/10.png"], "BMP"))
    put_file(tiny, "test/34.png", EDITS["brighter"](pixels["train/11.png"]))
    put_file(tiny, "test/35.png", EDITS["smaller"](pixels["train/16.png"]))

    status, out = check_output(tiny, capsys)
    assert status == 0  # warnings: training still works
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 4
    exact_train, near_train, exact_test, near_test = warnings
    assert "train: 1 training image(s) have the same pixels as another one" in exact_train
    assert "train '3' (train/3.png) = train '7' (train/7.png)" in exact_train
    assert f"conflicting labels: '3' is {labels['3']!r} but '7' is {labels['7']!r}" in exact_train
    assert "train: 1 training image(s) are near-duplicates of another one" in near_train
    assert "train '4' (train/4.png) = train '19' (train/19.png)" in near_train and "conflicting" not in near_train
    assert "test: 1 test image(s) have the same pixels" in exact_test and "test '33' (test/33.png)" in exact_test
    assert "test: 2 test image(s) have a near-duplicate" in near_test
    assert "train '11' (train/11.png) = test '34'" in near_test
    assert "train '16' (train/16.png) = test '35'" in near_test

    listed = pd.read_csv(workspace / "submissions" / tiny.name / "duplicates.csv", dtype=str)
    found = set(zip(listed.kind, listed.first_id, listed.second_id))
    assert found == {("exact", "3", "7"), ("near", "4", "19"), ("exact", "10", "33"),
                     ("near", "11", "34"), ("near", "16", "35")}
