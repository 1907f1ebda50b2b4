"""`./run.sh check NAME`: every input check at once, before any training.

The checks are the ones training and prediction run (files.py, tables.py, data.py), given a `Problems`
that collects instead of raising, so the report lists every problem, not just the first. Duplicate
images (leakage.py) are warnings: training works, but a validation score may mislead.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import write_atomically
from .config import Competition, PipelineError, resolve_run, submissions_dir
from .data import (Decoded, always_trained, load_images, rare_classes, straddling_groups,
                   validation_splits)
from .layout import image_paths
from .files import DataDir, Problems, examples
from .leakage import NEAR_DUPLICATES, find_duplicates, pairs_table, report_duplicates, train_groups
from .tables import Tables, load_tables


def check_competition(comp: Competition, data_dir: Path, preset: str = "default") -> Problems:
    """Run every input check on the competition's files; returns what was found."""
    problems = Problems(collect=True)
    try:
        data = DataDir(data_dir)
    except PipelineError as error:
        problems.report(str(error))
        return problems
    tables = load_tables(comp, data, problems)
    for zip_path, why in data.bad_zips().items():
        problems.report(f"{zip_path} is not a readable zip file ({why}): download it again, "
                        f"or remove it from {data.root}.")
    decoded = {}
    for tag, folder, ids in (("train", comp.train_images, tables.train_ids),
                             ("test", comp.test_images, tables.test_ids)):
        decoded[tag] = load_images(comp, data, folder, ids, tag, problems=problems)
        if decoded[tag].formats:
            shape = f"{comp.image_size}x{comp.image_size}, {comp.channels} channel(s)"
            problems.note(f"{tag} images ({len(ids) - len(decoded[tag].bad)} read): "
                          f"{examples([f'{k} x{n}' for k, n in decoded[tag].formats.items()])}; "
                          f"all become {shape}.")
    _check_duplicates(comp, tables, decoded["train"], decoded["test"], problems)
    if tables.train_labels:
        groups = _check_groups(comp, data, tables.train_ids, decoded["train"].images, problems)
        _check_split(comp, tables, groups, preset, problems)
    return problems


def _searched(comp: Competition, tag: str, ids: list[str], labels: list[str], decoded: Decoded):
    """The readable images of one split and a table naming them (split, id, file, label)."""
    rows = np.setdiff1d(np.arange(len(ids)), list(decoded.bad))
    folder = comp.train_images if tag == "train" else comp.test_images
    paths = image_paths(comp, tag, folder, ids)
    table = pd.DataFrame({"split": tag, "id": [ids[i] for i in rows],
                          "file": [paths[i] for i in rows],
                          "label": [labels[i] for i in rows] if labels else ""})
    return decoded.images[rows], table


def _check_duplicates(comp: Competition, tables: Tables, train: Decoded, test: Decoded,
                      problems: Problems) -> None:
    """Exact and near-duplicate images within train and across train and test: warnings, and
    every pair in submissions/NAME/duplicates.csv."""
    started = time.perf_counter()
    train_images, train_table = _searched(comp, "train", tables.train_ids, tables.train_labels, train)
    test_images, test_table = _searched(comp, "test", tables.test_ids, [], test)
    found = find_duplicates(train_images, test_images, comp.near_duplicate_bits)
    images = pd.concat([train_table, test_table], ignore_index=True)
    fix = (f"groups: {NEAR_DUPLICATES} (set) keeps each cluster on one side." if comp.groups == NEAR_DUPLICATES
           else f"keep one copy (remove the other rows from {comp.train_csv}), or set groups: "
                f"{NEAR_DUPLICATES} in competition/{comp.name}.yaml to keep each cluster on one side.")
    table = pairs_table(found, images)
    report_duplicates(table, comp.near_duplicate_bits, problems, fix)
    searched = f"{len(images)} images compared in {time.perf_counter() - started:.1f} s"
    if table.empty:
        problems.note(f"duplicates: none within train or across train and test ({searched}).")
        return
    path = submissions_dir() / comp.name / "duplicates.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda file: file.write(table.to_csv(index=False).encode()))
    problems.note(f"duplicates: {len(table)} pair(s), every one listed in {path} ({searched}).")


def _check_groups(comp: Competition, data: DataDir, ids: list[str], images: np.ndarray,
                  problems: Problems) -> np.ndarray | None:
    """The training images' groups (None without), noted with their sizes."""
    try:
        groups = train_groups(comp, data, ids, images, problems)
    except PipelineError as error:
        problems.report(str(error))
        return None
    if groups is None:
        return None
    names, sizes = np.unique(groups, return_counts=True)
    source = f"column {comp.group_column!r}" if comp.group_column else "near-duplicate clusters"
    largest = ids[int(np.flatnonzero(groups == names[np.argmax(sizes)])[0])]
    problems.note(f"groups ({source}): {len(names)} group(s) over {len(ids)} images, "
                  f"{int((sizes > 1).sum())} of them with several images; the largest, with image "
                  f"{largest!r}, has {sizes.max()}. Each stays on one side of every split.")
    return groups


def _check_split(comp: Competition, tables: Tables, groups: np.ndarray | None, preset: str,
                 problems: Problems) -> None:
    """The preset's hold-out or k-fold split must be possible and keep every group whole; tiny
    classes are noted."""
    try:
        run = resolve_run(comp, preset)
    except PipelineError as error:
        problems.note(f"Split not checked: {error}")
        return
    classes = tables.classes
    index = {label: i for i, label in enumerate(classes)}
    targets = np.array([index[label] for label in tables.train_labels], dtype=np.int64)
    minimum = run.folds if run.folds > 1 else 2
    rare = [classes[i] for i in rare_classes(targets, minimum)]
    if rare:
        along = 0 if groups is None else always_trained(targets, minimum, groups).sum() - \
            always_trained(targets, minimum).sum()
        problems.note(f"{len(rare)} class(es) have fewer than {minimum} images ({examples(rare)}): "
                      f"they are always trained on and never validated"
                      f"{f', with {along} other image(s) of their groups' if along else ''}.")
    try:
        splits = validation_splits(targets, run, groups)
    except PipelineError as error:
        problems.report(f"Preset '{preset}': {error}")
        return
    if groups is not None:
        _check_groups_kept(groups, tables.train_ids, splits, run.folds, preset, problems)


def _check_groups_kept(groups: np.ndarray, ids: list[str], splits, folds: int, preset: str,
                       problems: Problems) -> None:
    """Every group whole on one side of every split; validation sizes, which large groups skew."""
    straddling = straddling_groups(groups, splits)
    if straddling:
        named = [repr(ids[int(np.flatnonzero(groups == g)[0])]) for g in straddling]
        problems.report(f"Preset '{preset}': {len(straddling)} group(s) could not be kept on one side "
                        f"of the split: the groups of ids {examples(named)}.")
    sizes = [len(val) for _, val in splits]
    kind = f"{folds} folds" if folds > 1 else "hold-out"
    problems.note(f"Preset '{preset}' {kind} with groups: validation part(s) of "
                  f"{min(sizes)}{'' if min(sizes) == max(sizes) else f' to {max(sizes)}'} images.")


def print_report(comp: Competition, data_dir: Path, problems: Problems) -> int:
    """Print the report; returns the exit status (1 when there are problems)."""
    for note in problems.notes:
        print(f"note: {note}")
    for warning in problems.warnings:
        print(f"warning: {warning}")
    if not problems.found:
        print(f"{comp.name}: no problems found in {data_dir}.")
        return 0
    print(f"{comp.name}: {len(problems.found)} problem(s) in {data_dir}:")
    for number, message in enumerate(problems.found, start=1):
        print(f"  {number}. {message}")
    return 1
