"""`./run.sh check NAME`: every input check at once, before any training.

The checks are the ones training and prediction run (files.py, tables.py, data.py), given a `Problems`
that collects instead of raising, so the report lists every problem, not just the first.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import Competition, PipelineError, resolve_run
from .data import load_images, rare_classes, validation_splits
from .files import DataDir, Problems, examples
from .tables import load_tables


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
            shape = f"{comp.image_size}x{comp.image_size} ({comp.resize}), {comp.channels} channel(s)"
            problems.note(f"{tag} images ({len(ids) - len(decoded.bad)} read): "
                          f"{examples([f'{k} x{n}' for k, n in decoded.formats.items()])}; "
                          f"all become {shape}.")
    if tables.train_labels:
        _check_split(comp, tables.classes, tables.train_labels, preset, problems)
    return problems


def _check_split(comp: Competition, classes: list[str], labels: list[str], preset: str,
                 problems: Problems) -> None:
    """The preset's hold-out or k-fold split must be possible; tiny classes are noted."""
    try:
        run = resolve_run(comp, preset)
    except PipelineError as error:
        problems.note(f"Split not checked: {error}")
        return
    index = {label: i for i, label in enumerate(classes)}
    targets = np.array([index[label] for label in labels], dtype=np.int64)
    minimum = run.folds if run.folds > 1 else 2
    rare = [classes[i] for i in rare_classes(targets, minimum)]
    if rare:
        problems.note(f"{len(rare)} class(es) have fewer than {minimum} images ({examples(rare)}): "
                      f"they are always trained on and never validated.")
    try:
        validation_splits(targets, run)
    except PipelineError as error:
        problems.report(f"Preset '{preset}': {error}")


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
