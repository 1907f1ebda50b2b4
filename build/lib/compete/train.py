"""Fit one member on one split: the loop, schedule, EMA, early stopping and the epoch log.

Images come from a batch source (batches.py): resident on the training device, where batches
are gathered by index, or streamed by loader threads; either way each batch is augmented on
the device as one tensor (photo transforms may run on the loader instead, augment.PhotoPlan).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from . import distributed
from .atomic import write_atomically
from .augment import PhotoPlan, has_photo_augment, mix_batch, train_transform
from .batches import as_source
from .config import Member, PipelineError
from .finetune import freeze_batchnorm, parameter_groups, set_backbone_trainable
from .inference import predict_logits, tta_probs
from .losses import criterion as make_criterion, sampling_weights, validation_loss
from .metrics import metric, score
from .modelfiles import load_plain
from .runtime import Runtime
from .targets import Target

@dataclass
class FitResult:
    state_dict: dict                 # the kept weights (EMA weights where EMA is on), on the CPU
    val_probs: np.ndarray | None     # (n_val, outputs) activated outputs of the kept weights
    epoch: int                       # the kept weights' epoch
    score: float | None              # the kept weights' validation value of the competition's
                                     # metric; None unvalidated
    selected: bool = False           # the epoch was chosen by that same validation (optimistic)
    seconds: float = 0.0


def selects_best(member: Member) -> bool:
    """Whether the member keeps its best validation epoch (select: best, or early stopping,
    which needs one) rather than its last."""
    return member.select == "best" or member.patience > 0


def make_optimizer(model, member: Member):
    groups = parameter_groups(model, member.lr, member.lr_decay, member.lr_groups)
    fused = next(model.parameters()).is_cuda  # one kernel per step for all parameters on a GPU
    if member.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=member.lr, momentum=0.9, nesterov=True,
                               weight_decay=member.weight_decay, fused=fused or None)
    if member.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=member.lr, weight_decay=member.weight_decay,
                                 fused=fused or None)
    raise PipelineError(f"Unknown optimizer '{member.optimizer}': use adamw or sgd.")


def _onecycle_warmup(warmup: float, total_steps: int) -> float:
    """OneCycleLR divides by (warmup x total_steps - 1): a warm-up of exactly one step is a
    division by zero (e.g. warmup 0.2 over 5 steps). Take two steps then, or none when too few."""
    if math.isclose(warmup * total_steps, 1.0):
        return 2 / total_steps if total_steps > 2 else 0.0
    return warmup


def _scheduler(optimizer, member: Member, total_steps: int):
    if member.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total_steps,
            pct_start=_onecycle_warmup(member.warmup, total_steps))
    if member.schedule == "cosine":
        warm = max(1, int(member.warmup * total_steps))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(
            (step + 1) / warm, 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))))
    raise PipelineError(f"Unknown schedule '{member.schedule}': use onecycle or cosine.")


def epoch_order(count: int, draw: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    """The epoch's image indices: a permutation, or (balanced sampler) `count` draws with
    replacement by the per-image probabilities `draw`."""
    if draw is None:
        return torch.randperm(count, device=generator.device, generator=generator)
    return torch.multinomial(draw, count, replacement=True, generator=generator)


def epoch_steps(member: Member, images: int) -> int:
    """Batches per epoch: the ragged last batch is dropped (stable BatchNorm), and at most
    member.epoch_steps when set."""
    steps = images // member.batch_size
    return min(steps, member.epoch_steps) if member.epoch_steps else steps


def _train_epoch(training: "Training", net, data: "LabelledImages", positions: torch.Tensor,
                 member: Member, comp, runtime: Runtime, progress: str, pace: "Pace | None" = None):
    """One pass over the images at `positions`. `net` is `training.model`, or its
    DistributedDataParallel wrapper: every process draws the same order (a permutation, or the
    balanced sampler's draws) and takes its own slice of each global batch; with a `pace`, its
    steps and the schedule's rate are the pace's. Returns the loss, the accuracy and the seconds
    spent waiting for batches."""
    model, objective, generator, photo = training.model, training.objective, training.generator, training.photo
    model.train()
    if member.freeze_bn:
        freeze_batchnorm(model.net)
    order = positions[epoch_order(len(positions), objective.draw, generator)]
    steps = pace.steps if pace is not None else epoch_steps(member, len(order))
    while len(order) < steps * member.batch_size:  # a paced epoch may run past one pass
        order = torch.cat([order, positions[epoch_order(len(positions), objective.draw, generator)]])
    shard = slice(distributed.rank(), None, distributed.world_size())
    index_batches = [order[step * member.batch_size:(step + 1) * member.batch_size][shard] for step in range(steps)]
    seeds = None if photo.per_image is None else \
        torch.randint(0, 2 ** 31 - 1, (steps,), device=generator.device, generator=generator).tolist()
    batches = data.images.batches(index_batches, photo.per_image, seeds)
    # running sums stay on the device: reading them every step would stall a GPU
    loss_sum = torch.zeros((), device=generator.device)
    correct = torch.zeros((), device=generator.device, dtype=torch.long)
    waited = 0.0
    context = runtime.autocast()
    bar = tqdm(range(steps), desc=progress, leave=False, unit="batch", mininterval=1.0,
               disable=not distributed.is_main())
    for step in bar:
        asked = time.perf_counter()
        batch = next(batches)
        waited += time.perf_counter() - asked
        labels = data.labels[index_batches[step]]
        logits, loss = train_step(net, training.optimizer, batch, labels, member, comp, context, generator,
                                  objective.criterion, photo.size)
        if pace is not None:
            pace.advance(training.scheduler)
        else:
            training.scheduler.step()
        if training.ema is not None:
            training.ema.update_parameters(model)
        loss_sum += loss.detach() * len(labels)
        correct += objective.target.hits(logits.detach(), labels)
        if step % 50 == 49 and distributed.world_size() == 1:
            seen = (step + 1) * member.batch_size
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}")
    distributed.sum_all(loss_sum)
    distributed.sum_all(correct)
    seen = max(steps * member.batch_size, 1)
    return loss_sum.item() / seen, correct.item() / seen, waited


def train_step(net, optimizer, images: torch.Tensor, labels: torch.Tensor, member: Member, comp,
               context, generator: torch.Generator, criterion, photo_size: int | None = None):
    """One optimizer step on a batch of uint8 images: augment (and mix), forward, loss (the
    target kind's `criterion`), backward, step. With `photo_size`, the photo augmentation runs
    here, ending at that side."""
    batch = train_transform(images, member, comp.hflip, comp.vflip, generator, photo_size)
    partner, keep = None, None
    if member.mixup or member.cutmix:
        batch, partner, keep = mix_batch(batch, member.mixup, member.cutmix, generator)
    batch = batch.contiguous(memory_format=torch.channels_last)  # faster convs, CPU and GPU
    with context():
        logits = net(batch)
    loss = criterion(logits, labels)
    if partner is not None:  # the mixed-in images' labels, by their share of the input
        loss = keep * loss + (1 - keep) * criterion(logits, labels[partner])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return logits, loss


def ema_update(decay: float):
    """AveragedModel's update for an exponential moving average of weights whose decay warms up
    as min(decay, (1 + n) / (10 + n)) after n updates, so that a short run's average forgets the
    random start within a few hundred steps instead of 1 / (1 - decay). Nothing leaves the
    device: the count stays a tensor."""
    @torch.no_grad()
    def update(ema_params: list, params: list, count: torch.Tensor) -> None:
        if not torch.is_floating_point(ema_params[0]):  # integer buffers (BatchNorm step counts)
            torch._foreach_copy_(ema_params, params)
            return
        keep = torch.clamp((1 + count) / (10 + count), max=decay)
        torch._foreach_lerp_(ema_params, params, [(1 - keep).to(ema_params[0].dtype)] * len(params))
    return update


def make_ema(model, member: Member) -> AveragedModel | None:
    """The member's exponential moving average of `model`'s weights, or None when it has none."""
    if not member.ema:
        return None
    return AveragedModel(model, multi_avg_fn=ema_update(member.ema), use_buffers=True)


@dataclass
class Objective:
    """What a fit trains for: the target kind, its loss, and the balanced sampler's per-image
    draw probabilities (None: a permutation per epoch)."""
    target: Target
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    draw: torch.Tensor | None = None


def objective_for(target: Target, member: Member, train_targets: np.ndarray,
                  device: torch.device) -> Objective:
    draw = sampling_weights(target, member, train_targets)
    return Objective(target, make_criterion(target, member, train_targets, device),
                     None if draw is None else torch.as_tensor(draw, dtype=torch.float32, device=device))


@dataclass
class Fold:
    """One split a member is fitted on: its number, its training and validation rows (positions
    in the labelled images) and the seed of its random draws (the model's initial weights are
    seeded from it too, per member)."""
    index: int | None  # None: the refit on every labelled image (train --refit)
    train_idx: np.ndarray
    val_idx: np.ndarray
    seed: int


@dataclass
class LabelledImages:
    """What a member trains and validates on: the images (a batch source of batches.py, or a
    uint8 (N, C, H, W) tensor on the training device), their labels encoded for `target`, on
    the device, and the target kind."""
    images: object
    labels: torch.Tensor
    target: Target = field(default_factory=lambda: Target([]))


@dataclass
class FitLog:
    """Where a fit reports: the label of its printed lines, the epoch log file (None: printed
    only), and the file its state is saved to after every epoch (None: not resumable)."""
    label: str = ""
    log_path: Path | None = None
    resume_path: Path | None = None


@dataclass
class Training:
    """One fit's moving parts: the model and what updates it step by step (saved after every
    epoch, so that a fit resumes exactly), the objective, and where photo augmentation runs."""
    model: torch.nn.Module
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    objective: Objective
    photo: PhotoPlan


@dataclass
class Progress:
    """Where a fit stands after a completed epoch: enough to resume it exactly."""
    epoch: int = 0                   # completed epochs
    best_value: float = -math.inf    # selection value: the metric, sign-adjusted so higher is
                                     # better (selects_best); else the epoch number: the last is kept
    best_epoch: int = 0
    stale: int = 0                   # epochs since the best
    best_state: dict = field(default_factory=dict)
    best_val_probs: np.ndarray | None = None
    pace: "Pace | None" = None       # a fit with a deadline: how its schedule is walked

    def count(self, value: float, model, probs: np.ndarray | None) -> None:
        """Count the epoch just completed; keep its weights and validation outputs when its
        selection value beats the kept one's (the first is always kept: a NaN metric keeps one)."""
        self.epoch += 1
        if value > self.best_value or not self.best_state:
            self.best_value, self.best_epoch, self.stale = value, self.epoch, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            self.best_val_probs = probs
        else:
            self.stale += 1


PACE_PASSES = 2  # a paced epoch takes at most this many passes over the images


@dataclass
class Pace:
    """How a fit with a deadline (train --time-limit) walks its learning-rate schedule: when the
    machine turns out faster or slower than planned, its remaining epochs take more or fewer
    steps (at most PACE_PASSES passes over the images), and the schedule is walked at the rate
    that still brings it to its last step at the end of the last epoch."""
    total: int                       # the schedule's steps (built for the planned epochs x steps)
    steps: int                       # training steps of each remaining epoch
    position: float = 0.0            # schedule steps walked
    rate: float = 1.0                # schedule steps per training step

    def advance(self, scheduler) -> None:
        """One training step: the schedule moves on by `rate` of its steps (never past its end)."""
        self.position = min(self.position + self.rate, self.total)
        if self.rate != 1.0:
            scheduler.last_epoch = self.position - 1  # step() adds the one
        scheduler.step()

    def replan(self, epochs_left: int, step_s: float, epoch_s: float, last_extra_s: float,
               seconds_left: float, most: int) -> None:
        """Steps per remaining epoch that end the fit `seconds_left` from now, given what a step,
        the rest of an epoch (validation, saving) and the last epoch's extra scoring took."""
        if epochs_left <= 0:
            return
        training_s = seconds_left - epochs_left * epoch_s - last_extra_s
        self.steps = max(1, min(most, int(training_s / max(step_s, 1e-9) / epochs_left)))
        self.rate = (self.total - self.position) / (self.steps * epochs_left)


def _save_resume(path: Path, progress: Progress, training: Training) -> None:
    generator, ema = training.generator, training.ema
    state = {"progress": progress_state(progress), "model": training.model.state_dict(),
             "optimizer": training.optimizer.state_dict(), "scheduler": training.scheduler.state_dict(),
             "ema": ema.state_dict() if ema is not None else None,
             "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
             # dropout and mixing strengths draw from the device's global generator
             "cuda_rng": torch.cuda.get_rng_state(generator.device)
             if generator.device.type == "cuda" else None}
    write_atomically(path, lambda file: torch.save(state, file))  # a kill keeps the last epoch's


def _load_resume(path: Path, training: Training) -> Progress:
    state = load_plain(path, "Resume state", "Delete it to train that fit from its start.")  # runs no code
    training.model.load_state_dict(state["model"])
    training.optimizer.load_state_dict(state["optimizer"])
    training.scheduler.load_state_dict(state["scheduler"])
    if training.ema is not None:
        training.ema.load_state_dict(state["ema"])
    training.generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], training.generator.device)
    return progress_from(state["progress"])


def progress_state(progress: Progress) -> dict:
    """Progress as tensors and plain values, which torch.load(weights_only=True) reads back."""
    state = {**vars(progress), "pace": None if progress.pace is None else asdict(progress.pace)}
    if progress.best_val_probs is not None:
        state["best_val_probs"] = torch.from_numpy(np.asarray(progress.best_val_probs))
    return state


def progress_from(state: dict) -> Progress:
    probs = state["best_val_probs"]
    return Progress(**{**state, "best_val_probs": None if probs is None else probs.numpy(),
                       "pace": None if state["pace"] is None else Pace(**state["pace"])})


def _start(model, member: Member, comp, data: LabelledImages, fold: Fold, runtime: Runtime,
           photo: PhotoPlan | None) -> Training:
    """A fit's moving parts, after checking that its batches fit the training images."""
    steps_per_epoch = epoch_steps(member, len(fold.train_idx))
    if member.batch_size % distributed.world_size():
        raise PipelineError(f"batch_size {member.batch_size} does not split evenly over "
                            f"{distributed.world_size()} processes: pick a multiple.")
    if steps_per_epoch == 0:
        raise PipelineError(
            f"batch_size {member.batch_size} is larger than the {len(fold.train_idx)} training images: "
            f"lower it with --batch-size.")
    device = runtime.device
    train_labels = data.labels[torch.as_tensor(fold.train_idx, device=data.labels.device)]
    optimizer = make_optimizer(model, member)
    return Training(model, make_ema(model, member), optimizer,
                    _scheduler(optimizer, member, member.epochs * steps_per_epoch),
                    torch.Generator(device=device).manual_seed(fold.seed),
                    objective_for(data.target, member, train_labels.cpu().numpy(), device),
                    photo or PhotoPlan(size=(member.image_size or comp.image_size)
                                       if has_photo_augment(member) else None))


def fit(model, member: Member, comp, data: LabelledImages, fold: Fold, runtime: Runtime,
        log: FitLog | None = None, photo: PhotoPlan | None = None, deadline: float | None = None) -> FitResult:
    """Train `model` on the fold's training images; keep its final weights, or (selects_best)
    those of the epoch with the best validation metric. `photo` says where the photo
    augmentation runs (on the device when None). With a `deadline` (time.monotonic()), the
    epochs after the first are resized to end by then (Pace).

    With `log.resume_path`, the state after every epoch is saved there, and a fit that finds
    the file continues from it, ending exactly where an uninterrupted fit would.
    """
    started = time.perf_counter()
    torch.set_flush_denormal(True)  # denormal floats are orders of magnitude slower on CPUs
    log = log or FitLog()
    data = LabelledImages(as_source(data.images), data.labels, data.target)
    training = _start(model, member, comp, data, fold, runtime, photo)
    target, ema, val_idx, label = data.target, training.ema, fold.val_idx, log.label
    train_positions = torch.as_tensor(fold.train_idx, device=runtime.device)
    val_targets = data.labels[torch.as_tensor(val_idx, device=data.labels.device)].cpu()
    steps_per_epoch = epoch_steps(member, len(fold.train_idx))
    progress = Progress()
    if log.resume_path is not None and log.resume_path.is_file():
        progress = _load_resume(log.resume_path, training)
        tqdm.write(f"{label}: resuming after epoch {progress.epoch}")
    if deadline is not None and progress.pace is None:
        progress.pace = Pace(total=member.epochs * steps_per_epoch, steps=steps_per_epoch)
    higher_is_better = metric(comp.metric, target.kind).higher_is_better
    net, trainable = model, None
    while progress.epoch < member.epochs:
        if member.patience and progress.stale >= member.patience:
            tqdm.write(f"{label}: early stop after epoch {progress.epoch} (best {progress.best_epoch})")
            break
        epoch = progress.epoch
        if trainable != (epoch >= member.freeze_epochs):  # DDP must see the new trainable set
            trainable = epoch >= member.freeze_epochs
            set_backbone_trainable(model, trainable)
            net = distributed.wrap(model, runtime.device)
        epoch_started = time.perf_counter()
        train_loss, train_acc, waited = _train_epoch(
            training, net, data, train_positions, member, comp, runtime,
            f"{label} epoch {epoch + 1}/{member.epochs}", progress.pace)
        train_seconds = time.perf_counter() - epoch_started
        steps_run = progress.pace.steps if progress.pace is not None else steps_per_epoch
        scored = ema.module if ema is not None else model
        record = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                  "lr": training.optimizer.param_groups[-1]["lr"], "seconds": time.perf_counter() - started,
                  "train_images_per_s": steps_run * member.batch_size / train_seconds,
                  "data_wait": waited / train_seconds,  # share of the training time spent waiting for batches
                  "steps": steps_run}
        probs, value = None, float(epoch)  # the last epoch is kept unless the best is selected
        if len(val_idx):
            views = validation_views(member, last_epoch=epoch + 1 == member.epochs)
            probs, measured = _validate(scored, data, val_idx, val_targets, runtime, views, comp.metric, record)
            if selects_best(member):
                value = -math.inf if math.isnan(measured) else measured if higher_is_better else -measured
        if distributed.is_main():
            _log(record, log.log_path, label)
        progress.count(value, scored, probs)
        if deadline is not None and progress.pace is not None:
            _replan(progress, member, PACE_PASSES * (len(fold.train_idx) // member.batch_size), train_seconds / steps_run,
                    time.perf_counter() - epoch_started - train_seconds, deadline)
        if log.resume_path is not None and distributed.is_main():
            _save_resume(log.resume_path, progress, training)
    kept = progress.best_val_probs
    return FitResult(progress.best_state, kept, progress.best_epoch,
                     None if kept is None else score(comp.metric, target, val_targets.numpy(), kept),
                     selects_best(member) and kept is not None, time.perf_counter() - started)


def _replan(progress: Progress, member: Member, most: int, step_s: float, rest_s: float,
            deadline: float) -> None:
    """Resize the remaining epochs to the deadline, from what this epoch's steps and the rest
    of it (validation, saving) took; the last epoch scores every TTA view of the member."""
    scored_once = member.tta == ["identity"] or selects_best(member)  # every epoch alike
    extra = 0.0 if scored_once else rest_s * len(member.tta)  # the last epoch adds the TTA views
    # every process plans from the main one's clock, so all take the same steps
    step_s, rest_s, extra, seconds = distributed.share((step_s, rest_s, extra, deadline - time.monotonic()))
    progress.pace.replan(member.epochs - progress.epoch, step_s, rest_s, extra, seconds, most)


def validation_views(member: Member, last_epoch: bool) -> list[str]:
    """The TTA views an epoch's weights are scored with: the member's own, which the submission
    uses, wherever those weights may be kept (every epoch when the best is selected, else the
    last); the identity view alone otherwise (the epoch log only)."""
    return member.tta if selects_best(member) or last_epoch else ["identity"]


def _validate(model, data: LabelledImages, val_idx: np.ndarray, val_targets: torch.Tensor,
              runtime: Runtime, views: list[str], metric_name: str, record: dict) -> tuple[np.ndarray, float]:
    """Score `model` on the validation images: the epoch log's loss, accuracy and metric on the
    identity view, and, when `views` are more than that, the metric on the outputs averaged over
    them (inference.tta_probs, as the submission's), logged as val_<metric>_tta. Returns the
    outputs averaged over `views` and their metric."""
    target = data.target
    logits = predict_logits(model, data.images, runtime.device, runtime.precision, positions=val_idx)
    probs = target.activate(logits).numpy()
    record.update(val_loss=validation_loss(target, logits, val_targets),
                  val_acc=target.hits(logits, val_targets).item() / len(val_idx))
    record[f"val_{metric_name}"] = measured = score(metric_name, target, val_targets.numpy(), probs)
    if views != ["identity"]:
        probs = tta_probs(model, data.images, views, runtime.device, runtime.precision, target, val_idx)
        record[f"val_{metric_name}_tta"] = measured = score(metric_name, target, val_targets.numpy(), probs)
    return probs, measured


def _log(record: dict, log_path: Path | None, label: str) -> None:
    shown = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
    tqdm.write(f"{label} {shown}")
    if log_path is not None:
        with open(log_path, "a") as log:
            log.write(json.dumps({"member": label, **record}) + "\n")
