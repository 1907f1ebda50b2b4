"""Learning-rate finder: train on mini-batches while the learning rate grows exponentially, watch
where the loss falls fastest and where it blows up, and suggest a peak learning rate.

Suggestion rule (fastai's original one): the learning rate at the minimum of the smoothed loss,
divided by 10. The minimum is where training is about to become unstable; a tenth of it still
learns fast and leaves room for the schedule's peak. The model and optimizer are restored
exactly afterwards, so a sweep never changes what training starts from. A member that first
trains its new head alone (freeze_epochs) is swept that way too, as its training starts (fastai's
lr_find on a frozen learner).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .augment import has_photo_augment
from .batches import as_source, open_images
from .config import Competition, Member, PipelineError, RunConfig, submissions_dir
from .data import training_dataset, validation_splits
from .finetune import freeze_batchnorm, set_backbone_trainable
from .models import input_shape, member_model
from .plots import plot_lr_sweep
from .losses import criterion as make_criterion
from .runtime import Runtime, choose_device, configure_threads
from .train import LabelledImages, make_optimizer, train_step

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


def lr_sweep(model, member: Member, comp: Competition, data: LabelledImages, runtime: Runtime,
             optimizer=None, seed: int = 0, start_lr: float = START_LR, end_lr: float = END_LR,
             steps: int = STEPS) -> LRSweep:
    """Sweep the learning rate over `steps` mini-batches drawn with replacement from `data`.
    `optimizer` defaults to the member's own (with its discriminative ratios: every group is
    scaled by the same factor). The loss is the member's for the data's target kind. Model and
    optimizer states are restored afterwards."""
    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    was_training = model.training
    was_trainable = [param.requires_grad for param in model.parameters()]
    optimizer = optimizer or make_optimizer(model, member)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    growth = (end_lr / start_lr) ** (1 / max(steps - 1, 1))
    labels, device = data.labels, runtime.device
    generator = torch.Generator(device=device).manual_seed(seed)
    context = runtime.autocast()
    criterion = make_criterion(data.target, member, labels.cpu().numpy(), labels.device)
    index_batches = list(torch.randint(len(labels), (steps, member.batch_size), device=device, generator=generator))
    batches = as_source(data.images).batches(index_batches)
    photo_size = (member.image_size or comp.image_size) if has_photo_augment(member) else None
    lrs, losses, smoothed, average = [], [], [], 0.0
    try:
        model.train()
        if member.freeze_bn:
            freeze_batchnorm(model.net)
        if member.freeze_epochs:
            set_backbone_trainable(model, False)
        for step in range(steps):
            lr = start_lr * growth ** step
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = lr * base / base_lrs[-1]
            _, loss = train_step(model, optimizer, next(batches), labels[index_batches[step]], member, comp,
                                 context, generator, criterion, photo_size)
            loss = loss.item()
            if not math.isfinite(loss):
                break
            average = SMOOTHING * average + (1 - SMOOTHING) * loss
            lrs.append(lr)
            losses.append(loss)
            smoothed.append(average / (1 - SMOOTHING ** (step + 1)))
            if smoothed[-1] > DIVERGENCE * min(smoothed):
                break
    finally:
        model.load_state_dict(saved_model)
        if saved_optimizer is not None:
            optimizer.load_state_dict(saved_optimizer)
        model.train(was_training)
        for param, trainable in zip(model.parameters(), was_trainable):
            param.requires_grad_(trainable)
    if not lrs:
        raise PipelineError(f"The training loss of {member.model} is not finite even at lr {start_lr:g}: "
                            f"check the images and the model settings.")
    return LRSweep(lrs, losses, smoothed, suggest(lrs, smoothed))


def find_lrs(comp: Competition, run: RunConfig, data_dir: Path,
             members: list[int] | None = None) -> dict[int, float]:
    """Sweep each chosen member of the run on the training part of its first split (the hold-out,
    or fold 1's validation images, never take part in choosing the rate); write
    submissions/<name>/lr_find-<m>.png."""
    chosen = members if members is not None else list(range(len(run.members)))
    if any(not 0 <= m < len(run.members) for m in chosen):
        raise PipelineError(f"--member {chosen}: preset '{run.preset}' has members 0 to {len(run.members) - 1}.")
    configure_threads(run)
    dataset = training_dataset(comp, run, data_dir)
    train_idx = validation_splits(dataset.train_targets, run, dataset.groups)[0][0]
    device = choose_device(run.device, run.deterministic)
    shape = input_shape(comp, dataset, train_idx, [run.members[m] for m in chosen])
    data = LabelledImages(open_images(dataset.train_images.subset(train_idx), run, device),
                          torch.from_numpy(dataset.train_targets[train_idx]).to(device), dataset.target)
    runtime = Runtime(device, run.precision)
    out_dir = submissions_dir() / comp.name
    out_dir.mkdir(parents=True, exist_ok=True)
    suggestions = {}
    for m in chosen:
        member = run.members[m]
        model = member_model(member, shape, device, run.seed + 1000 * m)
        sweep = lr_sweep(model, member, comp, data, runtime, seed=run.seed)
        path = plot_lr_sweep(sweep.lrs, sweep.losses, sweep.smoothed, sweep.suggestion,
                             out_dir / f"lr_find-{m}.png", f"m{m} {member.model}: learning-rate sweep")
        low = sweep.lrs[int(np.argmin(sweep.smoothed))]
        print(f"m{m} {member.model}: suggested lr {sweep.suggestion:.3g} (smoothed loss lowest at "
              f"{low:.3g}, divided by {MIN_LR_DIVISOR:g}; {len(sweep.lrs)} steps); plot {path}")
        suggestions[m] = sweep.suggestion
    return suggestions


def apply_suggestions(comp: Competition, run: RunConfig, data_dir: Path) -> None:
    """`train --lr auto`: every member trains at its finder's suggestion."""
    for m, lr in find_lrs(comp, run, data_dir).items():
        run.members[m].lr = lr
