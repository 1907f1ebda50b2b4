"""Learning from a teacher run (issue 25): pseudo-labels on the test images (`train --pseudo RUN`)
and distillation (`train --distill RUN`).

A teacher is a finished run of the same competition and classes whose `predict` wrote its
calibrated, blended test predictions (test_probs.npy: what its submission was made from). Its
test images join every fold's TRAINING part only, after the labelled rows, with the teacher's
outputs as soft targets; no validation row ever trains, so none sees a teacher's target.
Distillation also gives the train images soft targets: the teacher's out-of-fold outputs, so no
image's target came from a model that saw its label; the labels carry the rest of its loss.

A teacher trained on the same folds as the run (same images, seed and folds: its oof_folds.npy
equals the run's) teaches each fold the test images with its model of that fold
(test_probs_folds.npy), which never trained on that fold's validation images: a pseudo run's local
score is then as honest as its teacher's. Otherwise the blend teaches every fold, and `train` says
how many validation images a model of the teacher trained on.

Each row's targets reach the loss in one place: LabelledImages.soft (losses.SoftTargets).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .config import Competition, RunConfig
from .data import load_test
from .ensemble import blend_oof
from .errors import PipelineError
from .files import DataDir
from .imagestore import JoinedImages
from .losses import SoftTargets
from .metrics import REGRESSION, SINGLE
from .runs import RunFolder, find_run
from .splits import validated_by
from .targets import Target, target_of_run


@dataclass
class Teacher:
    """What a teacher run offers: its blended test outputs and out-of-fold outputs."""
    run: str
    test_outputs: np.ndarray         # (test images, outputs), calibrated and blended
    oof_outputs: np.ndarray          # (train images, outputs); rows it never validated are zeros
    fold_of: np.ndarray              # (train images,) the fold model that validated each (-1: none)
    folds: int                       # its fold models: more than one each saw the others' rows
    fold_test_outputs: np.ndarray | None = None  # (folds, test images, outputs): each fold model's blend
    refit: bool = False              # a model of it trained on every labelled image

    def same_folds(self, splits: list, train_count: int) -> bool:
        """Whether it validated each of these images in the fold of the same number, with a test
        blend per fold: fold f's model then never trained on the run's fold f validation images."""
        return self.fold_test_outputs is not None and np.array_equal(self.fold_of, validated_by(splits, train_count))

    @property
    def validated(self) -> np.ndarray:
        """(train images,) bool: the rows with an out-of-fold output."""
        return self.fold_of >= 0


def teacher_refusal(comp_name: str, run_name: str, config: dict, target: Target) -> str | None:
    """Why run `run_name` (its config.json) cannot teach this competition's `target`; None if it can."""
    if config["competition"]["name"] != comp_name:
        return (f"run {run_name} belongs to competition {config['competition']['name']}, not {comp_name}: "
                f"name a run of {comp_name} (./run.sh runs {comp_name}).")
    theirs = target_of_run(config)
    if theirs.kind != target.kind or config["classes"] != target.classes:
        return (f"run {run_name} was trained for other classes ({theirs.kind}, {len(config['classes'])} "
                f"classes) than this competition's ({target.kind}, {len(target.classes)}): train a teacher "
                f"on the current labels.")
    return None


def read_teacher(comp_name: str, run_id: str, target: Target, train_count: int, test_count: int) -> Teacher:
    """Teacher run `run_id` of competition `comp_name`, refused with one line when it is of
    another competition, has other classes, no test predictions, or other images."""
    run_dir = find_run(comp_name, run_id)
    folder = RunFolder(run_dir)
    config = folder.config()
    refusal = teacher_refusal(comp_name, folder.name, config, target)
    if refusal is None and not folder.test_probs_path.is_file():
        refusal = (f"run {folder.name} has no test predictions ({folder.test_probs_path.name}): write them with "
                   f"./run.sh predict {comp_name} --run {folder.name}.")
    if refusal:
        raise PipelineError(f"Cannot learn from {refusal}")
    test_outputs = np.load(folder.test_probs_path)
    folds = np.load(folder.oof_folds_path)
    if len(test_outputs) != test_count or len(folds) != train_count:
        raise PipelineError(f"Cannot learn from run {folder.name}: it predicted {len(test_outputs)} test and "
                            f"trained on {len(folds)} images, this run has {test_count} and {train_count} "
                            f"(the data, subset or skipped images differ): train the teacher on these images.")
    summary = folder.summary()
    oof = blend_oof([np.load(path) for path in folder.oof_paths()], folds, summary, target)
    per_fold = np.load(folder.test_fold_probs_path) if folder.test_fold_probs_path.is_file() else None
    if per_fold is not None and per_fold.shape[:2] != (summary["folds"], test_count):
        per_fold = None  # (not this run's images: the blend teaches, and the count above refuses)
    return Teacher(folder.name, np.nan_to_num(test_outputs), np.nan_to_num(oof), folds, summary["folds"],
                   None if per_fold is None else np.nan_to_num(per_fold), bool(folder.refits()))


def confidence(target: Target, outputs: np.ndarray) -> np.ndarray:
    """How sure the teacher is of each image: its top class's probability; for yes/no outputs,
    the least sure of them; numbers are all kept (1)."""
    if target.kind == REGRESSION:
        return np.ones(len(outputs))
    if target.kind == SINGLE:
        return outputs.max(1)
    return np.maximum(outputs, 1 - outputs).min(1)


@dataclass
class Lesson:
    """What a teacher adds to a run: the test images that join training (positions in the test
    set), their encoded labels (the teacher's decisions: the log's train_acc, the sampler and
    class weights count them; their label loss weighs 0), and every row's soft targets, the
    labelled rows first."""
    teacher: str
    mode: str                        # pseudo | distill
    test_rows: np.ndarray
    labels: np.ndarray
    values: np.ndarray               # (labelled + joined rows, outputs)
    label_weight: np.ndarray
    soft_weight: np.ndarray
    temperature: float
    fold_test_values: np.ndarray | None = None  # (folds, joined rows, outputs): fold f's own targets

    def soft_targets(self, device: torch.device, fold: int | None = None) -> SoftTargets:
        """Every row's targets; for `fold`, where the teacher has the same folds, the joined test
        rows' from its model of that fold."""
        values = self.values
        if fold is not None and self.fold_test_values is not None:
            values = np.concatenate([values[:len(values) - len(self.test_rows)], self.fold_test_values[fold]])

        def tensor(array):
            return torch.as_tensor(np.asarray(array, dtype=np.float32), device=device)
        return SoftTargets(tensor(values), tensor(self.label_weight), tensor(self.soft_weight), self.temperature)

    def for_fold(self, data, fold: int | None):
        """`data` (train.LabelledImages) as fold `fold` learns from it: with its own test targets
        where the lesson has them per fold; the refit (None) learns the blend."""
        if fold is None or self.fold_test_values is None:
            return data
        return replace(data, soft=self.soft_targets(data.labels.device, fold))

    def train_taught(self, splits: list) -> int:
        """Train images that learn from the teacher's out-of-fold output in some fold's training
        part (a row the teacher validated that this run only validates learns nothing from it)."""
        count = len(self.label_weight) - len(self.test_rows)
        trains = np.zeros(count, bool)
        for train_idx, _ in splits:
            trains[train_idx[train_idx < count]] = True
        return int((trains & (self.soft_weight[:count] > 0)).sum())


def lesson(run: RunConfig, teacher: Teacher, target: Target, train_targets: np.ndarray,
           per_fold: bool = False) -> Lesson:
    """The soft targets of `run`'s mode: pseudo, the test images at least run.pseudo_floor sure
    at weight pseudo_weight; distill, every test image and the teacher's out-of-fold train
    images at distill_weight (labels: the rest), softened by distill_temperature. `per_fold`
    (the teacher has the run's folds): each fold's test targets from its model of that fold too;
    which test images join, and their decided labels, come from the blend."""
    distill = bool(run.distill)
    temperature = run.distill_temperature if distill else 1.0
    floor = 0.0 if distill else run.pseudo_floor
    rows = np.flatnonzero(confidence(target, teacher.test_outputs) >= floor)
    test = teacher.test_outputs[rows]
    labels = np.asarray(target.decide(test, target.default_decisions())).astype(train_targets.dtype)
    count = len(train_targets)
    train_values = np.zeros((count, test.shape[1]), dtype=np.float32)
    train_soft = np.zeros(count)
    if distill:  # rows the teacher validated: no model whose output this is saw its label
        train_values[teacher.validated] = target.calibrate(teacher.oof_outputs[teacher.validated], temperature)
        train_soft[teacher.validated] = run.distill_weight
    weight = run.distill_weight if distill else run.pseudo_weight
    per_fold_values = (np.stack([target.calibrate(outputs[rows], temperature) for outputs in teacher.fold_test_outputs])
                       if per_fold else None)
    return Lesson(teacher.run, "distill" if distill else "pseudo", rows, labels,
                  np.concatenate([train_values, target.calibrate(test, temperature)]),
                  np.concatenate([1 - train_soft, np.zeros(len(rows))]),
                  np.concatenate([train_soft, np.full(len(rows), weight)]), temperature, per_fold_values)


def joined_splits(splits: list, train_count: int, joined: int) -> list:
    """Each split with the `joined` rows after the `train_count` labelled ones added to its
    training part; its validation part unchanged."""
    extra = np.arange(train_count, train_count + joined)
    return [(np.concatenate([train_idx, extra]), val_idx) for train_idx, val_idx in splits]


def teacher_saw(teacher: Teacher, taught: Lesson, splits: list, train_count: int) -> int:
    """How many of this run's validation images a model of the teacher that teaches their fold
    trained on: each of them makes the local score optimistic (its targets carry the label)."""
    validated = validated_by(splits, train_count) >= 0
    if taught.fold_test_values is not None:  # the test targets are clean; distilled train rows'
        # out-of-fold outputs came from the teacher's other folds, which trained on this one
        seen = validated & (taught.mode == "distill" and teacher.folds > 1)
    else:  # the blend: every fold model of the teacher, and its refit, teach every fold
        seen = validated if teacher.folds > 1 or teacher.refit else validated & ~teacher.validated
    return int(seen.sum())


@dataclass
class Taught:
    """A run's training rows once a teacher's images joined them."""
    images: object                   # the labelled images, then the joined test images
    targets: np.ndarray
    splits: list
    lesson: Lesson | None = None
    saw: int = 0                     # validation images a model of the teacher trained on

    def describe(self) -> dict:
        """What summary.json, `runs` and the report keep of its teacher."""
        lesson_ = self.lesson
        return {"run": lesson_.teacher, "mode": lesson_.mode, "test_images": int(len(lesson_.test_rows)),
                "taught_train_images": lesson_.train_taught(self.splits), "temperature": lesson_.temperature,
                "per_fold": lesson_.fold_test_values is not None, "saw_validation_images": self.saw}


def taught_rows(run: RunConfig, comp: Competition, data_dir: Path, dataset, splits: list) -> Taught:
    """The run's training rows: the dataset's alone, or with the teacher's test images joined."""
    teacher_id = run.pseudo or run.distill
    if not teacher_id:
        return Taught(dataset.train_images, dataset.train_targets, splits)
    count, test_images = len(dataset.train_targets), load_test(comp, DataDir(data_dir))[1]
    teacher = read_teacher(comp.name, teacher_id, dataset.target, count, len(test_images))
    taught = lesson(run, teacher, dataset.target, dataset.train_targets, teacher.same_folds(splits, count))
    images = JoinedImages(dataset.train_images, test_images[taught.test_rows] if isinstance(test_images, np.ndarray)
                          else test_images.subset(taught.test_rows))
    return Taught(images, np.concatenate([dataset.train_targets, taught.labels]),
                  joined_splits(splits, count, len(taught.test_rows)), taught, teacher_saw(teacher, taught, splits, count))


def taught_metadata(tables, taught: Taught) -> pd.DataFrame | None:
    """The metadata rows beside the taught images (None without metadata): the train rows, then
    the rows of the test images that joined them, in the same order."""
    rows = tables.train_metadata
    if rows is None or taught.lesson is None:
        return rows
    joined = tables.test_metadata.iloc[taught.lesson.test_rows]
    return pd.concat([rows, joined], ignore_index=True)


def start_note(taught: Taught) -> str | None:
    """The line `train` prints about its teacher; None without one."""
    lesson_ = taught.lesson
    if lesson_ is None:
        return None
    taught_train = taught.describe()["taught_train_images"]
    what = (f"distilling run {lesson_.teacher} (temperature {lesson_.temperature:g}): "
            f"{taught_train} train images' out-of-fold outputs and"
            if lesson_.mode == "distill" else f"pseudo-labels from run {lesson_.teacher}:")
    line = f"{what} {len(lesson_.test_rows)} test images join every fold's training part"
    if lesson_.fold_test_values is not None:
        line += ", each fold taught them by the teacher's model of the same fold"
    if lesson_.mode == "distill" and not taught_train:
        line += ("; no train image learns from it (it validated only this run's validation images: a teacher "
                 "trained with --folds K has out-of-fold outputs on every train image)")
    if taught.saw:
        remedy = ("its other folds' out-of-fold outputs carry their labels: trust a score on images no model "
                  "of either run saw" if lesson_.fold_test_values is not None else
                  "train the teacher with this run's --seed and --folds, then predict with it, so each fold "
                  "learns from the teacher's model of that fold")
        line += (f"; note: the teacher trained on {taught.saw} of this run's validation images, so the "
                 f"local score is optimistic ({remedy})")
    return line
