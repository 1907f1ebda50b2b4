"""Learning-rate finder: train on mini-batches while the learning rate grows exponentially, watch
where the loss falls fastest and where it blows up, and suggest a peak learning rate.

Suggestion rule (fastai's original one): the learning rate at the minimum of the smoothed loss,
divided by 10. The minimum is where training is about to become unstable; a tenth of it still
learns fast and leaves room for the schedule's peak. The model and optimizer are restored
exactly afterwards, so a sweep never changes what training starts from. A member that first
trains its new head alone (freeze_epochs) is swept that way too, as its training starts (fastai's
lr_find on a frozen learner). Each step is the member's own training step (train.build_step):
the augmentation, loss and optimizer the sweep measures are the ones that train.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .batches import as_source, open_images, with_rows
from .config import Member, submissions_dir
from .data import training_dataset
from .errors import PipelineError
from .finetune import freeze_batchnorm, set_backbone_trainable
from .models import NetSpec, member_model, member_seed, net_spec
from .inference import batch_rows, model_rows
from .plots import plot_lr_sweep
from .losses import criterion as make_criterion
from .runtime import Session
from .splits import validation_splits
from .train import LabelledImages, TrainStep, build_step

START_LR = 1e-6        # first learning rate of the sweep
END_LR = 1.0           # last learning rate of the sweep
STEPS = 100            # mini-batches, log-spaced between START_LR and END_LR
SMOOTHING = 0.9        # exponential moving average factor of the loss (bias-corrected)
DIVERGENCE = 4.0       # stop once the smoothed loss exceeds this multiple of its minimum
MIN_LR_DIVISOR = 10.0  # suggestion = learning rate at the smoothed minimum / this


@dataclass
class LRSweep:
    lrs: list[float]        # learning rate of each step (of the last parameter group: the head)
    losses: list[float]     # training loss of each step's mini-batch
    smoothed: list[float]   # bias-corrected exponential moving average of the losses
    suggestion: float       # learning rate to train with


def suggest(lrs: list[float], smoothed: list[float]) -> float:
    """The learning rate at the smoothed loss's minimum divided by MIN_LR_DIVISOR, kept inside
    the swept range."""
    best = int(np.argmin(smoothed))
    return float(min(max(lrs[best] / MIN_LR_DIVISOR, lrs[0]), lrs[-1]))


@dataclass(frozen=True)
class SweepRange:
    """The learning rates a sweep walks: `steps` mini-batches, log-spaced from `start` to `end`."""
    start: float = START_LR
    end: float = END_LR
    steps: int = STEPS


def sweep_step(model, member: Member, session: Session, data: LabelledImages, seed: int = 0) -> TrainStep:
    """The member's own training step (train.build_step) for a sweep of `model` on `data`: its
    optimizer (with its discriminative ratios: every group is scaled by the same factor), its
    loss for the data's target kind, its photo augmentation on the device."""
    criterion = make_criterion(data.target, member, data.labels.cpu().numpy(), data.labels.device)
    return build_step(model, member, session, criterion, seed)


def lr_sweep(model, step: TrainStep, data: LabelledImages, span: SweepRange = SweepRange()) -> LRSweep:
    """Sweep the learning rate of `step` (sweep_step) over `span.steps` mini-batches drawn with
    replacement from `data` by the step's generator. Model and optimizer states are restored
    afterwards."""
    member, optimizer = step.member, step.optimizer
    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    was_training = model.training
    was_trainable = [param.requires_grad for param in model.parameters()]
    labels = data.labels
    index_batches = list(torch.randint(len(labels), (span.steps, member.batch_size), device=step.generator.device,
                                       generator=step.generator))
    source = as_source(data.images)
    batches = source.batches(index_batches)
    metadata = model_rows(model, source, step.generator.device)
    try:
        model.train()
        if member.freeze_bn:
            freeze_batchnorm(model.net)
        if member.freeze_epochs:
            set_backbone_trainable(model, False)
        lrs, losses, smoothed = _walk(model, step, (batches, labels, index_batches, metadata), span)
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
        model.train(was_training)
        for param, trainable in zip(model.parameters(), was_trainable):
            param.requires_grad_(trainable)
    if not lrs:
        raise PipelineError(f"The training loss of {member.model} is not finite even at lr {span.start:g}: "
                            f"check the images and the model settings.")
    return LRSweep(lrs, losses, smoothed, suggest(lrs, smoothed))


def _walk(model, step: TrainStep, batches, span: SweepRange) -> tuple[list, list, list]:
    """Train `model` one step per learning rate of the span, until the loss is not finite or
    diverges; the learning rates, losses and smoothed losses walked."""
    batches, labels, index_batches, metadata = batches
    base_lrs = [group["lr"] for group in step.optimizer.param_groups]
    growth = (span.end / span.start) ** (1 / max(span.steps - 1, 1))
    lrs, losses, smoothed, average = [], [], [], 0.0
    for i in range(span.steps):
        lr = span.start * growth ** i
        for group, base in zip(step.optimizer.param_groups, base_lrs):
            group["lr"] = lr * base / base_lrs[-1]
        _, loss = step(model, next(batches), labels[index_batches[i]], *batch_rows(metadata, index_batches[i]))
        loss = loss.item()
        if not math.isfinite(loss):
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(average / (1 - SMOOTHING ** (i + 1)))
        if smoothed[-1] > DIVERGENCE * min(smoothed):
            break
    return lrs, losses, smoothed


def find_lrs(session: Session, data_dir: Path, members: list[int] | None = None) -> dict[int, float]:
    """Sweep each chosen member of the run on the training part of its first split (the hold-out,
    or fold 1's validation images, never take part in choosing the rate); write
    submissions/<name>/lr_find-<m>.png."""
    comp, run, device = session.comp, session.run, session.runtime.device
    chosen = members if members is not None else list(range(len(run.members)))
    if any(not 0 <= m < len(run.members) for m in chosen):
        raise PipelineError(f"--member {chosen}: preset '{run.preset}' has members 0 to {len(run.members) - 1}.")
    dataset = training_dataset(comp, run, data_dir)
    train_idx = validation_splits(dataset.train_targets, run, dataset.groups)[0][0]
    rows = dataset.tables.train_metadata
    spec = net_spec(comp, dataset.train_images, dataset.target.outputs, train_idx, [run.members[m] for m in chosen],
                    rows)
    images = open_images(dataset.train_images.subset(train_idx), run, device)
    data = LabelledImages(with_rows(images, None if rows is None else rows.iloc[train_idx]),
                          torch.from_numpy(dataset.train_targets[train_idx]).to(device), dataset.target)
    out_dir = submissions_dir() / comp.name
    out_dir.mkdir(parents=True, exist_ok=True)
    return {m: _find_lr(session, m, spec, data, out_dir) for m in chosen}


def _find_lr(session: Session, m: int, spec: NetSpec, data: LabelledImages, out_dir: Path) -> float:
    """Member m's suggested learning rate, printed, and its sweep plotted into `out_dir`."""
    member, run = session.run.members[m], session.run
    model = member_model(member, spec, session.runtime.device, member_seed(run.seed, m))
    sweep = lr_sweep(model, sweep_step(model, member, session, data, seed=run.seed), data)
    path = plot_lr_sweep(sweep.lrs, sweep.losses, sweep.smoothed, sweep.suggestion,
                         out_dir / f"lr_find-{m}.png", f"m{m} {member.model}: learning-rate sweep")
    low = sweep.lrs[int(np.argmin(sweep.smoothed))]
    print(f"m{m} {member.model}: suggested lr {sweep.suggestion:.3g} (smoothed loss lowest at "
          f"{low:.3g}, divided by {MIN_LR_DIVISOR:g}; {len(sweep.lrs)} steps); plot {path}")
    return sweep.suggestion


def apply_suggestions(session: Session, data_dir: Path) -> None:
    """`train --lr auto`: every member trains at its finder's suggestion."""
    for m, lr in find_lrs(session, data_dir).items():
        session.run.members[m].lr = lr
