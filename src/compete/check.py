"""`./run.sh check NAME`: every input check at once, before any training.

The checks are the ones training and prediction run (files.py, tables.py, data.py), given a `Problems`
that collects instead of raising, so the report lists every problem, not just the first.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .config import Competition, PipelineError, resolve_run, target_settings
from .data import load_images, validation_splits
from .files import DataDir, Problems, examples
from .submission import submission_format
from .tables import Tables, load_tables
from .metrics import check_metric
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
    for zip_path, why in data.bad_zips().items():
        problems.report(f"{zip_path} is not a readable zip file ({why}): download it again, "
                        f"or remove it from {data.root}.")
    for tag, folder, ids in (("train", comp.train_images, tables.train_ids),
                             ("test", comp.test_images, tables.test_ids)):
        decoded = load_images(comp, data, folder, ids, tag, problems=problems)
        if decoded.formats:
            shape = f"{comp.image_size}x{comp.image_size}, {comp.channels} channel(s)"
            problems.note(f"{tag} images ({len(ids) - len(decoded.bad)} read): "
                          f"{examples([f'{k} x{n}' for k, n in decoded.formats.items()])}; "
                          f"all become {shape}.")
    if tables.train_labels:
        _check_target(comp, tables, preset, problems, data.describe(comp.sample_submission))
    return problems


def _check_target(comp: Competition, tables: Tables, preset: str, problems: Problems,
                  sample_where: str) -> None:
    """The target kind must fit the labels, the metric and the sample; the preset's hold-out or
    k-fold split must be possible; the class balance and every class too small for it are noted."""
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
        validation_splits(target.strata(targets), run)
    except PipelineError as error:
        problems.report(f"Preset '{preset}': {error}")


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
    if not problems.found:
        print(f"{comp.name}: no problems found in {data_dir}.")
        return 0
    print(f"{comp.name}: {len(problems.found)} problem(s) in {data_dir}:")
    for number, message in enumerate(problems.found, start=1):
        print(f"  {number}. {message}")
    return 1
