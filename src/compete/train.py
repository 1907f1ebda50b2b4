"""Fit one member on one split: its training step (TrainStep, the one that lr-find and the time
plan's measure run too), the loop, schedule, EMA, early stopping and the epoch log.

Images come from a batch source (batches.py): resident on the training device, where batches
are gathered by index, or streamed by loader threads; either way each batch is augmented on
the device as one tensor (photo transforms may run on the loader instead, augment.PhotoPlan).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from . import distributed
from .atomic import write_atomically
from .augment import PhotoPlan, mix_batch, photo_plan, train_transform
from .batches import as_source
from .config import Member
from .errors import PipelineError
from .finetune import freeze_batchnorm, parameter_groups, set_backbone_trainable
from .inference import batch_rows, model_rows, predict_logits, tta_probs
from .losses import SoftTargets, criterion as make_criterion, sampling_weights, validation_loss
from .metrics import metric, score
from .modelfiles import load_plain
from .pace import PACE_PASSES, EpochTimes, Pace, meet_deadline
from .runtime import Session
from .targets import SINGLE_LABEL, Target


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
    return torch.optim.AdamW(groups, lr=member.lr, weight_decay=member.weight_decay,
                             fused=fused or None)  # adamw: config.CHOICES allows no other


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
    warm = max(1, int(member.warmup * total_steps))  # cosine: config.CHOICES allows no other
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(
        (step + 1) / warm, 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))))


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


def _train_epoch(training: "Training", net, data: "LabelledImages", positions: torch.Tensor, label: str,
                 pace: Pace | None = None):
    """One pass over the images at `positions`. `net` is `training.model`, or its
    DistributedDataParallel wrapper: every process draws the same order (a permutation, or the
    balanced sampler's draws) and takes its own slice of each global batch; with a `pace`, its
    steps and the schedule's rate are the pace's. Returns the loss, the accuracy and the seconds
    spent waiting for batches."""
    model, step, generator = training.model, training.step, training.generator
    member = step.member
    model.train()
    if member.freeze_bn:
        freeze_batchnorm(model.net)
    index_batches = _index_batches(training, positions, pace)
    steps = len(index_batches)
    seeds = None if training.photo.per_image is None else \
        torch.randint(0, 2 ** 31 - 1, (steps,), device=generator.device, generator=generator).tolist()
    batches = data.images.batches(index_batches, training.photo.per_image, seeds)
    # running sums stay on the device: reading them every step would stall a GPU
    loss_sum = torch.zeros((), device=generator.device)
    correct = torch.zeros((), device=generator.device, dtype=torch.long)
    waited = 0.0
    bar = tqdm(range(steps), desc=label, leave=False, unit="batch", mininterval=1.0,
               disable=not distributed.is_main())
    for i in bar:
        asked = time.perf_counter()
        batch = next(batches)
        waited += time.perf_counter() - asked
        labels = data.labels[index_batches[i]]
        soft = None if data.soft is None else data.soft.rows(index_batches[i])
        logits, loss = step(net, batch, labels, *batch_rows(data.metadata, index_batches[i]), soft=soft)
        if pace is not None:
            pace.advance(training.scheduler)
        else:
            training.scheduler.step()
        if training.ema is not None:
            training.ema.update_parameters(model)
        loss_sum += loss.detach() * len(labels)
        correct += training.objective.target.hits(logits.detach(), labels)
        if i % 50 == 49 and distributed.world_size() == 1:
            seen = (i + 1) * member.batch_size
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}")
    distributed.sum_all(loss_sum)
    distributed.sum_all(correct)
    seen = max(steps * member.batch_size, 1)
    return loss_sum.item() / seen, correct.item() / seen, waited


def _index_batches(training: "Training", positions: torch.Tensor, pace: Pace | None) -> list[torch.Tensor]:
    """The epoch's batches of image positions, this process's slice of each: the epoch's steps
    (the pace's, where it has one) over its order of the images."""
    member, draw, generator = training.step.member, training.objective.draw, training.generator
    order = positions[epoch_order(len(positions), draw, generator)]
    steps = pace.steps if pace is not None else epoch_steps(member, len(order))
    while len(order) < steps * member.batch_size:  # a paced epoch may run past one pass
        order = torch.cat([order, positions[epoch_order(len(positions), draw, generator)]])
    shard = slice(distributed.rank(), None, distributed.world_size())
    return [order[step * member.batch_size:(step + 1) * member.batch_size][shard] for step in range(steps)]


@dataclass
class TrainStep:
    """A member's training step, built once (build_step) and run alike by training, the
    learning-rate finder and the time limit's measure, so that what those two measure is the
    loop that trains: augment (and mix) a batch of uint8 images, forward under the runtime's
    autocast, the target kind's loss, backward, optimizer step."""
    member: Member
    optimizer: torch.optim.Optimizer
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator: torch.Generator       # every random draw: augmentation, mixing, the images' order
    autocast: Callable               # Runtime.autocast(): the context each forward pass runs in
    photo_size: int | None           # the photo augmentation runs in the step, ending at this side;
                                     # None: there is none, or the loader threads run it
    hflip: bool                      # the competition's flips that keep the class
    vflip: bool

    def __call__(self, net, images: torch.Tensor, labels: torch.Tensor, metadata: torch.Tensor | None = None,
                 soft: SoftTargets | None = None):
        return train_step(self, net, images, labels, metadata, soft)  # metadata: inference.batch_rows


def build_step(model, member: Member, session: Session, criterion, seed: int,
               photo: PhotoPlan | None = None) -> TrainStep:
    """`model`'s training step: the member's optimizer over its parameters, the loss
    `criterion`, a generator seeded with `seed` on the session's device, and the photo
    augmentation where `photo` says (None: in the step, on the device)."""
    comp, runtime = session.comp, session.runtime
    photo = photo or photo_plan(member, comp.image_size, "device", runtime.device, streamed=False)
    return TrainStep(member, make_optimizer(model, member), criterion,
                     torch.Generator(device=runtime.device).manual_seed(seed), runtime.autocast(),
                     photo.size, comp.hflip, comp.vflip)


def train_step(step: TrainStep, net, images: torch.Tensor, labels: torch.Tensor,
               metadata: torch.Tensor | None = None, soft: SoftTargets | None = None):
    """One optimizer step of `net` on a batch of uint8 images and their encoded labels (and
    encoded metadata rows, for a model that reads them; and, taught, the teacher's targets of the
    same rows); returns the logits and the loss."""
    member = step.member
    batch = train_transform(images, member, step.hflip, step.vflip, step.generator, step.photo_size)
    partner, keep = None, None
    if member.mixup or member.cutmix:
        batch, partner, keep = mix_batch(batch, member.mixup, member.cutmix, step.generator)
        if metadata is not None:  # mixed as the images are, by their share of the input
            metadata = keep * metadata + (1 - keep) * metadata[partner]
    batch = batch.contiguous(memory_format=torch.channels_last)  # faster convs, CPU and GPU
    with step.autocast():
        logits = net(batch) if metadata is None else net(batch, metadata)
    loss = step.criterion(logits, labels, soft)  # losses.criterion: soft None is the labels alone
    if partner is not None:  # the mixed-in images' labels, by their share of the input
        mixed = step.criterion(logits, labels[partner], None if soft is None else soft.rows(partner))
        loss = keep * loss + (1 - keep) * mixed
    step.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    step.optimizer.step()
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
    in the labelled images), the seed of its random draws (the model's initial weights are
    seeded from it too, per member: models.member_seed) and, in a time-limited run, when the
    fit must end."""
    index: int | None  # None: the refit on every labelled image (train --refit)
    train_idx: np.ndarray
    val_idx: np.ndarray
    seed: int
    deadline: float | None = None  # time.monotonic() by which a time-limited fit ends (budget.Deadlines)


@dataclass
class LabelledImages:
    """What a member trains and validates on: the images (a batch source of batches.py, or a
    uint8 (N, C, H, W) tensor on the training device), their labels encoded for `target`, on
    the device, the target kind, and a teacher's soft targets per row (None: labels alone); for a
    model that reads metadata, the rows beside the images (batches.with_rows) encoded by it,
    (N, features) on the device: fit fills them in."""
    images: object
    labels: torch.Tensor
    target: Target = field(default_factory=lambda: SINGLE_LABEL)
    soft: SoftTargets | None = None
    metadata: torch.Tensor | None = None


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
    step: TrainStep                  # its optimizer and generator are part of the saved state
    scheduler: torch.optim.lr_scheduler.LRScheduler
    objective: Objective
    photo: PhotoPlan

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.step.optimizer

    @property
    def generator(self) -> torch.Generator:
        return self.step.generator


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
    pace: Pace | None = None         # a fit with a deadline: how its schedule is walked

    def close_epoch(self, value: float, model, probs: np.ndarray | None) -> None:
        """Count the epoch just completed; keep its weights and validation outputs when its
        selection value beats the kept one's (the first is always kept: a NaN metric keeps one)."""
        self.epoch += 1
        if value > self.best_value or not self.best_state:
            self.best_value, self.best_epoch, self.stale = value, self.epoch, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            self.best_val_probs = probs
        else:
            self.stale += 1


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


def start_fit(model, member: Member, session: Session, data: LabelledImages, fold: Fold) -> Training:
    """A fit's moving parts, after checking that its batches fit the training images."""
    steps_per_epoch = epoch_steps(member, len(fold.train_idx))
    if member.batch_size % distributed.world_size():
        raise PipelineError(f"batch_size {member.batch_size} does not split evenly over "
                            f"{distributed.world_size()} processes: pick a multiple.")
    if steps_per_epoch == 0:
        raise PipelineError(
            f"batch_size {member.batch_size} is larger than the {len(fold.train_idx)} training images: "
            f"lower it with --batch-size.")
    device = session.runtime.device
    train_labels = data.labels[torch.as_tensor(fold.train_idx, device=data.labels.device)]
    objective = objective_for(data.target, member, train_labels.cpu().numpy(), device)
    photo = photo_plan(member, session.comp.image_size, session.run.photo_augment, device, data.images.streamed)
    step = build_step(model, member, session, objective.criterion, fold.seed, photo)
    return Training(model, make_ema(model, member), step,
                    _scheduler(step.optimizer, member, member.epochs * steps_per_epoch), objective, photo)


def fit(model, member: Member, session: Session, data: LabelledImages, fold: Fold,
        log: FitLog | None = None) -> FitResult:
    """Train `model` on the fold's training images; keep its final weights, or (selects_best)
    those of the epoch with the best validation metric, scored with the member's TTA views.
    With a `fold.deadline`, the epochs after the first are resized to end by then (pace.Pace).

    With `log.resume_path`, the state after every epoch is saved there, and a fit that finds
    the file continues from it, ending exactly where an uninterrupted fit would.
    """
    started = time.perf_counter()
    torch.set_flush_denormal(True)  # denormal floats are orders of magnitude slower on CPUs
    log = log or FitLog()
    images = as_source(data.images)  # with the metadata rows beside them, encoded as this model reads them
    data = replace(data, images=images, metadata=model_rows(model, images, session.runtime.device))
    training = start_fit(model, member, session, data, fold)
    progress = _progress(training, fold, log)
    net, trainable = model, None
    while progress.epoch < member.epochs:
        if member.patience and progress.stale >= member.patience:
            tqdm.write(f"{log.label}: early stop after epoch {progress.epoch} (best {progress.best_epoch})")
            break
        if trainable != (progress.epoch >= member.freeze_epochs):  # DDP must see the new trainable set
            trainable = progress.epoch >= member.freeze_epochs
            set_backbone_trainable(model, trainable)
            net = distributed.wrap(model, session.runtime.device)
        _run_epoch(training, net, session, data, fold, _FitState(progress, log, started))
    kept = progress.best_val_probs
    val_targets = _val_targets(data, fold.val_idx)
    return FitResult(progress.best_state, kept, progress.best_epoch,
                     None if kept is None else score(session.comp.metric, data.target, val_targets.numpy(), kept),
                     selects_best(member) and kept is not None, time.perf_counter() - started)


def _progress(training: Training, fold: Fold, log: FitLog) -> Progress:
    """Where the fit starts: its resume file's state, or the start; with its pace when it has
    a deadline."""
    member = training.step.member
    progress = Progress()
    if log.resume_path is not None and log.resume_path.is_file():
        progress = _load_resume(log.resume_path, training)
        tqdm.write(f"{log.label}: resuming after epoch {progress.epoch}")
    if fold.deadline is not None and progress.pace is None:
        steps_per_epoch = epoch_steps(member, len(fold.train_idx))
        progress.pace = Pace(total=member.epochs * steps_per_epoch, steps=steps_per_epoch)
    return progress


@dataclass
class _FitState:
    """A fit under way: where it stands, where it reports, when it started (perf_counter)."""
    progress: Progress
    log: FitLog
    started: float


def _run_epoch(training: Training, net, session: Session, data: LabelledImages, fold: Fold,
               state: _FitState) -> None:
    """Train one epoch, validate it, log it, count it (keeping its weights when they are the
    ones to keep), resize the rest to the deadline and save the state to resume from."""
    progress, log, member, ema = state.progress, state.log, training.step.member, training.ema
    started, epoch = time.perf_counter(), progress.epoch
    train_loss, train_acc, waited = _train_epoch(
        training, net, data, torch.as_tensor(fold.train_idx, device=session.runtime.device),
        f"{log.label} epoch {epoch + 1}/{member.epochs}", progress.pace)
    train_seconds = time.perf_counter() - started
    steps_run = progress.pace.steps if progress.pace is not None else epoch_steps(member, len(fold.train_idx))
    scored = ema.module if ema is not None else training.model
    record = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
              "lr": training.optimizer.param_groups[-1]["lr"], "seconds": time.perf_counter() - state.started,
              "train_images_per_s": steps_run * member.batch_size / train_seconds,
              "data_wait": waited / train_seconds,  # share of the training time spent waiting for batches
              "steps": steps_run}
    probs, value = None, float(epoch)  # the last epoch is kept unless the best is selected
    if len(fold.val_idx):
        views = validation_views(member, last_epoch=epoch + 1 == member.epochs)
        probs, measured = _validate(scored, session, data, fold.val_idx, views, record)
        value = _selection_value(member, session.comp.metric, data.target, measured, value)
    if distributed.is_main():
        _log(record, log.log_path, log.label)
    progress.close_epoch(value, scored, probs)
    if fold.deadline is not None and progress.pace is not None:
        rest_s = time.perf_counter() - started - train_seconds
        most = PACE_PASSES * (len(fold.train_idx) // member.batch_size)
        meet_deadline(progress.pace, member.epochs - progress.epoch,
                      EpochTimes(train_seconds / steps_run, rest_s, _last_epoch_extra(member, rest_s)),
                      fold.deadline, most)
    if log.resume_path is not None and distributed.is_main():
        _save_resume(log.resume_path, progress, training)


def _selection_value(member: Member, metric_name: str, target: Target, measured: float, epoch: float) -> float:
    """What an epoch's weights are kept by: the metric, sign-adjusted so higher is better (NaN
    last) where the best epoch is selected; else the epoch number, so the last is kept."""
    if not selects_best(member):
        return epoch
    if math.isnan(measured):
        return -math.inf
    return measured if metric(metric_name, target.kind).higher_is_better else -measured


def _last_epoch_extra(member: Member, rest_s: float) -> float:
    """What the last epoch adds to the rest of an epoch: scoring every TTA view of the member,
    unless every epoch already does (selects_best) or it has only the identity view."""
    scored_once = member.tta == ["identity"] or selects_best(member)  # every epoch alike
    return 0.0 if scored_once else rest_s * len(member.tta)


def validation_views(member: Member, last_epoch: bool) -> list[str]:
    """The TTA views an epoch's weights are scored with: the member's own, which the submission
    uses, wherever those weights may be kept (every epoch when the best is selected, else the
    last); the identity view alone otherwise (the epoch log only)."""
    return member.tta if selects_best(member) or last_epoch else ["identity"]


def _val_targets(data: LabelledImages, val_idx: np.ndarray) -> torch.Tensor:
    """The validation images' encoded labels, on the CPU."""
    return data.labels[torch.as_tensor(val_idx, device=data.labels.device)].cpu()


def _validate(model, session: Session, data: LabelledImages, val_idx: np.ndarray, views: list[str],
              record: dict) -> tuple[np.ndarray, float]:
    """Score `model` on the validation images: the epoch log's loss, accuracy and metric on the
    identity view, and, when `views` are more than that, the metric on the outputs averaged over
    them (inference.tta_probs, as the submission's), logged as val_<metric>_tta. Returns the
    outputs averaged over `views` and their metric."""
    target, runtime, metric_name = data.target, session.runtime, session.comp.metric
    val_targets = _val_targets(data, val_idx)
    logits = predict_logits(model, data.images, runtime, positions=val_idx)
    probs = target.activate(logits).numpy()
    record.update(val_loss=validation_loss(target, logits, val_targets),
                  val_acc=target.hits(logits, val_targets).item() / len(val_idx))
    record[f"val_{metric_name}"] = measured = score(metric_name, target, val_targets.numpy(), probs)
    if views != ["identity"]:
        probs = tta_probs(model, data.images, views, runtime, target, val_idx)
        record[f"val_{metric_name}_tta"] = measured = score(metric_name, target, val_targets.numpy(), probs)
    return probs, measured


def _log(record: dict, log_path: Path | None, label: str) -> None:
    shown = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
    tqdm.write(f"{label} {shown}")
    if log_path is not None:
        with open(log_path, "a") as log:
            log.write(json.dumps({"member": label, **record}) + "\n")
