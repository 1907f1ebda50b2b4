"""Splits that keep groups whole (a `group_column`, or clusters of near-duplicate images), and
statistics that see only the training part: normalization and the learning-rate sweep."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from hypothesis import given, settings, strategies as st

from compete import check as check_module
from compete import lrfind
from compete.cli import main
from compete.config import RunConfig, load_competition, resolve_run
from compete.errors import PipelineError
from compete.imagestore import channel_stats
from compete.splits import always_trained, holdout_split, kfold_splits, straddling_groups, validation_splits
from compete.lrfind import LRSweep, find_lrs
from compete.runtime import start_session
from compete.pipeline import train_competition, training_dataset
from compete.runs import read_checkpoint

from helpers import TINY_PRESET, make_competition, image_bytes, put_file, read_file, with_pictures


def random_groups(draw_seed: int, n: int, classes: int, groups: int):
    rng = np.random.default_rng(draw_seed)
    targets = rng.integers(0, classes, n)
    # a few large groups and many small ones, as patients or near-duplicate clusters come
    group_of = np.minimum(rng.zipf(1.6, n), groups) - 1
    return targets, rng.permutation(groups)[group_of]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(20, 400), classes=st.integers(2, 5),
       groups=st.integers(2, 200), folds=st.integers(2, 6), fraction=st.sampled_from([0.1, 0.2, 0.25, 0.3]))
def test_a_group_never_straddles_a_split(seed, n, classes, groups, folds, fraction):
    targets, group_of = random_groups(seed, n, classes, groups)
    for splits in (lambda: [holdout_split(targets, fraction, seed, group_of)],
                   lambda: kfold_splits(targets, folds, seed, group_of)):
        try:
            made = splits()
        except PipelineError as error:  # only when too few groups are left to fill the parts
            assert "groups" in str(error)
            continue
        assert straddling_groups(group_of, made) == []
        for train_idx, val_idx in made:
            assert not set(train_idx) & set(val_idx)
            assert sorted(np.concatenate([train_idx, val_idx])) == list(range(n))
        validated = np.concatenate([val for _, val in made])
        assert len(validated) == len(set(validated.tolist()))  # each image validated once at most


def test_groups_of_a_class_too_small_to_validate_always_train():
    targets = np.array([0] * 12 + [1] * 12 + [2])  # one class-2 image: never validated
    groups = np.arange(25) // 2                     # pairs of images
    groups[24] = groups[0]                          # the class-2 image is in images 0 and 1's group
    assert always_trained(targets, 2, groups).tolist() == [True, True] + [False] * 22 + [True]
    for train_idx, _ in kfold_splits(targets, 3, seed=0, groups=groups):
        assert {0, 1, 24} <= set(train_idx)


def test_group_aware_holdout_and_folds_stay_stratified():
    targets = np.repeat([0, 1], [600, 400])
    groups = np.arange(1000)
    groups[:300] = np.arange(300) // 3  # class 0 in groups of three, the rest single images
    [(_, val_idx)] = validation_splits(targets, RunConfig(val_fraction=0.1), groups)
    assert len(val_idx) == pytest.approx(100, abs=6)
    assert np.mean(targets[val_idx] == 0) == pytest.approx(0.6, abs=0.05)
    for _, val_idx in validation_splits(targets, RunConfig(folds=5), groups):
        assert len(val_idx) == pytest.approx(200, abs=6)
        assert np.mean(targets[val_idx] == 0) == pytest.approx(0.6, abs=0.05)


def add_group_column(tiny, groups: list) -> None:
    frame = pd.read_csv(tiny.data_dir / "train.csv", dtype=str).assign(patient=groups)
    put_file(tiny, "train.csv", frame.to_csv(index=False).encode())


def set_yaml(workspace, name: str, **values) -> None:
    path = workspace / "competition" / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **values}))


def test_group_column_keeps_each_patient_on_one_side_and_check_reports_the_groups(workspace, capsys):
    tiny = make_competition(workspace, n_train=48)
    patients = np.array([f"p{i % 12}" for i in range(48)])  # 12 patients, 4 images each
    add_group_column(tiny, patients.tolist())
    set_yaml(workspace, tiny.name, group_column="patient")
    comp = load_competition(tiny.name)
    for seed in range(5):
        run = resolve_run(comp, overrides={"seed": seed})
        dataset = training_dataset(comp, run, tiny.data_dir)
        for folds in (0, 3):
            run.folds = folds
            for train_idx, val_idx in validation_splits(dataset.train_targets, run, dataset.groups):
                assert not set(patients[train_idx]) & set(patients[val_idx])
    assert main(["check", tiny.name]) == 0
    out = capsys.readouterr().out
    assert "groups (column 'patient'): 12 group(s) over 48 images, 12 of them with several images" in out
    assert "Each stays on one side of every split" in out


def test_check_reports_too_few_groups_a_missing_column_and_a_group_split_apart(workspace, capsys, monkeypatch):
    tiny = make_competition(workspace, n_train=48, preset={**TINY_PRESET, "folds": 5})
    add_group_column(tiny, [f"p{i % 3}" for i in range(48)])
    set_yaml(workspace, tiny.name, group_column="patient")
    assert main(["check", tiny.name]) == 1
    assert "Cannot make 5 folds of 48 images in 3 groups" in capsys.readouterr().out

    set_yaml(workspace, tiny.name, group_column="ward")
    assert main(["check", tiny.name]) == 1
    assert "no column 'ward' (group_column in competition/tiny.yaml)" in capsys.readouterr().out

    set_yaml(workspace, tiny.name, group_column="patient", presets={"default": TINY_PRESET})
    monkeypatch.setattr(check_module, "validation_splits",  # a split that ignores the groups
                        lambda targets, run, groups: [(np.arange(0, 48, 2), np.arange(1, 48, 2))])
    assert main(["check", tiny.name]) == 1
    assert "3 group(s) could not be kept on one side of the split: the groups of ids '1', '2', '3'" \
        in capsys.readouterr().out


def test_near_duplicate_groups_keep_copies_on_one_side(workspace):
    tiny = make_competition(workspace, n_train=40, size=32, groups="near_duplicates")
    pixels = with_pictures(tiny)
    copies = {"2": "9", "5": "6", "30": "31"}  # original -> copy (the same pixels, or brighter)
    brighter = np.clip(pixels["train/5.png"].astype(int) + 15, 0, 255).astype(np.uint8)
    put_file(tiny, "train/9.png", image_bytes(pixels["train/2.png"]))
    put_file(tiny, "train/6.png", image_bytes(brighter))
    put_file(tiny, "train/31.png", read_file(tiny, "train/30.png"))
    comp = load_competition(tiny.name)
    run = resolve_run(comp)
    dataset = training_dataset(comp, run, tiny.data_dir)
    ids = dataset.tables.train_ids
    row = {image_id: i for i, image_id in enumerate(ids)}
    assert len(set(dataset.groups.tolist())) == 40 - len(copies)
    for original, copy in copies.items():
        assert dataset.groups[row[original]] == dataset.groups[row[copy]]
    for seed in range(5):
        for folds in (0, 4):
            run.seed, run.folds = seed, folds
            for train_idx, val_idx in validation_splits(dataset.train_targets, run, dataset.groups):
                for original, copy in copies.items():
                    assert (row[original] in val_idx) == (row[copy] in val_idx)


def test_group_settings_are_one_or_the_other(workspace):
    tiny = make_competition(workspace, group_column="patient", groups="near_duplicates")
    comp = load_competition(tiny.name)
    with pytest.raises(PipelineError, match="set either group_column"):
        training_dataset(comp, resolve_run(comp), tiny.data_dir)


@pytest.mark.slow
def test_normalization_statistics_come_from_the_training_part_only(workspace):
    tiny = make_competition(workspace, n_train=48, seed=5)
    comp = load_competition(tiny.name)
    run = resolve_run(comp)
    dataset = training_dataset(comp, run, tiny.data_dir)
    [(train_idx, _)] = validation_splits(dataset.train_targets, run, dataset.groups)
    expected, everything = channel_stats(dataset.train_images[train_idx]), channel_stats(dataset.train_images)
    assert expected != everything  # the hold-out would move them
    run_dir = train_competition(start_session(comp, run), tiny.data_dir)
    shape = json.loads((run_dir / "config.json").read_text())["shape"]
    checkpoint = read_checkpoint(run_dir / "members" / "m0_f0.safetensors")
    for recorded in (shape, checkpoint["shape"]):
        assert (recorded["mean"], recorded["std"]) == expected


def test_lr_find_sweeps_on_the_training_part_only(workspace, monkeypatch):
    tiny = make_competition(workspace, n_train=48)
    comp = load_competition(tiny.name)
    run = resolve_run(comp)
    swept = []

    def sweep(model, step, data, *args, **kwargs):
        swept.append((data.images, data.labels))
        return LRSweep([1e-3, 1e-2], [1.0, 0.5], [1.0, 0.5], 1e-3)

    monkeypatch.setattr(lrfind, "lr_sweep", sweep)
    find_lrs(start_session(comp, run), tiny.data_dir)
    dataset = training_dataset(comp, run, tiny.data_dir)
    [(train_idx, val_idx)] = validation_splits(dataset.train_targets, run)
    [(images, labels)] = swept
    assert len(val_idx) and torch.equal(images.images.cpu(), torch.from_numpy(np.asarray(dataset.train_images[train_idx])))
    assert torch.equal(labels, torch.from_numpy(dataset.train_targets[train_idx]))
