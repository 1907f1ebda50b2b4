"""Splits of the labelled images: the stratified hold-out or k folds a run validates on, each
group of images (a patient, near-duplicates) kept on one side, classes too small to split always
trained on."""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from .errors import PipelineError


def rare_classes(targets: np.ndarray, minimum: int) -> np.ndarray:
    """Class indices with fewer than `minimum` images."""
    return np.flatnonzero((np.bincount(targets) < minimum) & (np.bincount(targets) > 0))


def always_trained(targets: np.ndarray, minimum: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Which images train in every split: those of classes with fewer than `minimum` images, and
    every image of their groups."""
    rare = np.isin(targets, rare_classes(targets, minimum))
    return rare if groups is None else np.isin(groups, groups[rare])


def holdout_split(targets: np.ndarray, fraction: float, seed: int,
                  groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation indices. Classes too small to split (one image) stay in
    training; fraction 0 trains on everything without validation. With groups, the hold-out is
    one of round(1 / fraction) stratified group folds (0.1: a tenth, 0.3: a third)."""
    everything = np.arange(len(targets))
    if fraction <= 0:
        return everything, everything[:0]
    rare = always_trained(targets, 2, groups)
    common = np.flatnonzero(~rare)
    try:
        if groups is None:
            train_idx, val_idx = train_test_split(
                common, test_size=fraction, random_state=seed, stratify=targets[common])
        else:
            held = group_folds(targets[common], groups[common], max(2, round(1 / fraction)), seed) == 0
            train_idx, val_idx = common[~held], common[held]
    except ValueError as error:
        raise PipelineError(
            f"Cannot hold out val_fraction={fraction} of {len(common)} images stratified over "
            f"{len(np.unique(targets[common]))} classes with two or more images"
            f"{_in_groups(groups, common)} ({error}). Change it with --set val_fraction=..., use "
            f"--folds K, or add images.") from None
    return np.sort(np.concatenate([train_idx, np.flatnonzero(rare)])), np.sort(val_idx)


def _in_groups(groups: np.ndarray | None, rows: np.ndarray) -> str:
    return "" if groups is None else f" in {len(np.unique(groups[rows]))} groups"


def kfold_splits(targets: np.ndarray, folds: int, seed: int,
                 groups: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold indices (each group in one fold). Classes with fewer images than folds
    train in every fold."""
    rare = always_trained(targets, folds, groups)
    common = np.flatnonzero(~rare)
    if len(np.unique(targets[common])) == 0:
        raise PipelineError(f"{folds} folds need at least {folds} images in some class; every class "
                            f"has fewer{'' if groups is None else ', or shares groups with a class that has'}. "
                            f"Use fewer folds (--folds).")
    if groups is None:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        fold = np.empty(len(common), np.int64)
        for f, (_, val_part) in enumerate(splitter.split(common, targets[common])):
            fold[val_part] = f
    else:
        try:
            fold = group_folds(targets[common], groups[common], folds, seed)
        except ValueError as error:
            raise PipelineError(f"Cannot make {folds} folds of {len(common)} images"
                                f"{_in_groups(groups, common)} ({error}). Use fewer folds (--folds).") from None
    return [(np.sort(np.concatenate([common[fold != f], np.flatnonzero(rare)])), common[fold == f])
            for f in range(folds)]


def group_folds(targets: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold of each image, every group whole in one fold, folds stratified by class.
    Groups of one image are dealt by StratifiedKFold, larger groups by StratifiedGroupKFold: its
    loop over groups would take minutes on tens of thousands of single images."""
    if len(np.unique(groups)) < folds:
        raise ValueError(f"{len(np.unique(groups))} groups cannot fill {folds} folds")
    fold = np.empty(len(targets), np.int64)
    _, group_of, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    alone = sizes[group_of] == 1
    for rows, splitter in ((np.flatnonzero(alone), StratifiedKFold),
                           (np.flatnonzero(~alone), StratifiedGroupKFold)):
        if len(np.unique(groups[rows])) < folds:  # too few for the splitter: dealt at random
            units, unit_of = np.unique(groups[rows], return_inverse=True)
            fold[rows] = np.random.default_rng(seed).permutation(max(len(units), folds))[unit_of] % folds
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "least populated class has only n members": expected in a part
            split = list(splitter(n_splits=folds, shuffle=True, random_state=seed)
                         .split(rows, targets[rows], groups[rows]))
        for f, (_, val_part) in enumerate(split):
            fold[rows[val_part]] = f
    return fold


def straddling_groups(groups: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]]) -> list:
    """Groups with images on both sides of some split (none, when the splits are right)."""
    return sorted({g for train_idx, val_idx in splits
                   for g in np.intersect1d(groups[train_idx], groups[val_idx]).tolist()})


def validation_splits(targets: np.ndarray, run,
                      groups: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, validation) index pairs a run trains on: its k folds, or its one hold-out;
    each group of images (if any) on one side of every split."""
    if run.folds > 1:
        return kfold_splits(targets, run.folds, run.seed, groups)
    return [holdout_split(targets, run.val_fraction, run.seed, groups)]


def validated_by(splits, count: int) -> np.ndarray:
    """The fold model that validated each image (-1: none)."""
    folds = np.full(count, -1, np.int64)
    for f, (_, val_idx) in enumerate(splits):
        folds[val_idx] = f
    return folds
