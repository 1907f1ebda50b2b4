"""`./run.sh check NAME`: every input check at once, before any training.

The checks are the ones training and prediction run (files.py, tables.py, data.py), given a `Problems`
that collects instead of raising, so the report lists every problem, not just the first. Duplicate
images (leakage.py) are warnings: training works, but a validation score may mislead.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import write_atomically
from .config import Competition, resolve_run, submissions_dir, target_settings
from .errors import PipelineError
from .data import Decoded, load_images
from .splits import straddling_groups, validation_splits
from .layout import image_paths
from .files import DataDir, Problems, examples
from .leakage import NEAR_DUPLICATES, find_duplicates, pairs_table, report_duplicates, train_groups
from .metadata import check_metadata
from .metrics import check_metric
from .submission import submission_format
from .tables import Tables, load_tables
from .targets import Target, fit_target


def check_competition(comp: Competition, data_dir: Path, preset: str = "default") -> Problems:
    """Run every input check on the competition's files; returns what was found."""
    problems = Problems(collect=True)
    try:
        data = DataDir(data_dir)
    except PipelineError as error:
        problems.report(str(error))
        return problems
    tables = load_tables(comp, data, problems)
    if tables.train_metadata is not None:
        where = (data.describe(comp.train_csv), data.describe(comp.test_csv or comp.sample_submission))
        for line in check_metadata(tables.train_metadata, tables.test_metadata, problems, where):
            problems.note(f"metadata {line}")
    for member in data.unsafe_members:
        problems.warn(f"{member}: a zip member named with '..' or an absolute path is never read (it "
                      f"would name a file outside its folder). Ask for a clean copy if it was needed.")
    for zip_path, why in data.bad_zips().items():
        problems.report(f"{zip_path} is not a readable zip file ({why}): download it again, "
                        f"or remove it from {data.root}.")
    decoded = {}
    for tag, folder, ids in (("train", comp.train_images, tables.train_ids),
                             ("test", comp.test_images, tables.test_ids)):
        decoded[tag] = load_images(comp, data, folder, ids, tag, problems=problems)
        if decoded[tag].formats:
            shape = f"{comp.image_size}x{comp.image_size} ({comp.resize}), {comp.channels} channel(s)"
            problems.note(f"{tag} images ({len(ids) - len(decoded[tag].bad)} read): "
                          f"{examples([f'{k} x{n}' for k, n in decoded[tag].formats.items()])}; "
                          f"all become {shape}.")
    _check_duplicates(comp, tables, decoded["train"], decoded["test"], problems)
    if tables.train_labels:
        groups = _check_groups(comp, data, tables.train_ids, decoded["train"].images, problems)
        _check_target(comp, tables, groups, preset, problems, data.describe(comp.sample_submission))
    return problems


def _searched(comp: Competition, tag: str, ids: list[str], labels: list[str], decoded: Decoded):
    """The readable images of one split and a table naming them (split, id, file, label)."""
    rows = np.setdiff1d(np.arange(len(ids)), list(decoded.bad))
    folder = comp.train_images if tag == "train" else comp.test_images
    paths = image_paths(comp, tag, folder, ids)
    table = pd.DataFrame({"split": tag, "id": [ids[i] for i in rows],
                          "file": [paths[i] for i in rows],
                          "label": [labels[i] for i in rows] if labels else ""})
    if not len(decoded.images):  # no ids: an empty array, not a store
        return decoded.images, table
    return decoded.images.subset(rows), table  # a view: rows are read in chunks when hashed


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


def _check_target(comp: Competition, tables: Tables, groups: np.ndarray | None, preset: str,
                  problems: Problems, sample_where: str) -> None:
    """The target kind must fit the labels, the metric and the sample; the preset's hold-out or
    k-fold split must be possible and keep every group whole; the class balance and every class too small for it are noted."""
    try:
        target = fit_target(target_settings(comp), tables.train_labels)
        targets = target.encode(tables.train_labels)
        check_metric(comp.metric, target)
    except PipelineError as error:
        problems.report(str(error))
        return
    if tables.sample is not None:
        found = Problems(collect=True)
        submission_format(tables.sample, comp.id_column, comp.label_column, target, comp.metric,
                          found, sample_where)
        for message in found.found:  # the sample's columns were checked with the tables already
            if message not in problems.found:
                problems.report(message)
    try:
        run = resolve_run(comp, preset)
    except PipelineError as error:
        problems.note(f"Split not checked: {error}")
        return
    for note in split_notes(target, targets, run):
        problems.note(note)
    try:
        splits = validation_splits(target.strata(targets), run, groups)
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


def class_balance(target: Target, targets: np.ndarray) -> str:
    """Images per class (tag, grade), largest first, with shares and the imbalance ratio."""
    counts = target.counts(targets)
    if not counts:  # ungraded numbers
        return (f"labels: {len(targets)} numbers from {targets.min():g} to {targets.max():g} "
                f"(mean {targets.mean():g}, median {np.median(targets):g})")
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    unit = {"multi_label": "images per tag"}.get(target.kind, "images per class")
    shares = ", ".join(f"{name} {n} ({n / len(targets):.1%})" for name, n in ranked)
    ratio = ranked[0][1] / max(ranked[-1][1], 1)
    return f"class balance ({unit}, largest first; largest/smallest {ratio:.1f}x): {shares}"


def split_notes(target: Target, targets: np.ndarray, run) -> list[str]:
    """The class balance, and every class (tag, grade) too small for the run's split: fewer
    images than folds (never validated), or too few for the hold-out to hold one of them."""
    notes = [class_balance(target, targets)]
    if run.folds > 1:
        minimum, why = run.folds, f"{run.folds} folds: never validated, always trained on"
    elif run.val_fraction > 0:
        minimum = max(2, math.ceil(1 / run.val_fraction))
        why = (f"the val_fraction {run.val_fraction} hold-out: less than one validation image "
               f"expected (one image: never validated)")
    else:
        return notes
    small = [f"{name} ({n})" for name, n in target.counts(targets).items() if n < minimum]
    if small:
        notes.append(f"{len(small)} class(es) have fewer than {minimum} images, too few for {why}: "
                     f"{', '.join(small)}.")
    return notes


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
