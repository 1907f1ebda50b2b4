"""Fit one member on one split: the loop, schedule, EMA, early stopping and the epoch log.

Images arrive as one uint8 tensor already on the training device; batches are drawn by index
and augmented there, so no DataLoader or per-sample Python sits in the hot loop.
"""
from __future__ import annotations

import copy
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from .augment import train_transform
from .config import Member, PipelineError
from .models import freeze_batchnorm, parameter_groups, set_backbone_trainable

EVAL_BATCH = 1024  # images per inference batch


def choose_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PipelineError("--device cuda was asked for, but no CUDA GPU is visible. Use --device cpu.")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """bf16 matrix units (AMX or AVX512-BF16) make bf16 autocast pay off on a CPU."""
    capability = torch.backends.cpu.get_cpu_capability()
    return torch.ops.mkldnn._is_mkldnn_bf16_supported() and "AVX512" in capability


def autocast(device: torch.device, precision: str):
    """The autocast context for this device, chosen once: bf16 where it is fast, else none."""
    if precision == "fp32":
        return nullcontext
    if precision == "auto" and device.type == "cpu" and not cpu_has_bf16():
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


@dataclass
class FitResult:
    state_dict: dict                 # best weights (EMA weights where EMA is on), on the CPU
    val_probs: np.ndarray | None     # (n_val, classes) probabilities of the best weights
    best_epoch: int
    best_val_loss: float
    history: list = field(default_factory=list)
    seconds: float = 0.0


def _optimizer(model, member: Member):
    groups = parameter_groups(model, member.lr, member.lr_decay, member.lr_groups)
    if member.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=member.lr, momentum=0.9, nesterov=True,
                               weight_decay=member.weight_decay)
    if member.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=member.lr, weight_decay=member.weight_decay)
    raise PipelineError(f"Unknown optimizer '{member.optimizer}': use adamw or sgd.")


def _scheduler(optimizer, member: Member, total_steps: int):
    if member.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total_steps,
            pct_start=member.warmup)
    if member.schedule == "cosine":
        warm = max(1, int(member.warmup * total_steps))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(
            (step + 1) / warm, 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))))
    raise PipelineError(f"Unknown schedule '{member.schedule}': use onecycle or cosine.")


@torch.no_grad()
def predict_logits(model, images: torch.Tensor, device: torch.device, precision: str,
                   transform=None) -> torch.Tensor:
    """Logits (float32, CPU) for uint8 (N, C, H, W) images, batched."""
    model.eval()
    context = autocast(device, precision)
    outputs = []
    for start in range(0, len(images), EVAL_BATCH):
        batch = images[start:start + EVAL_BATCH].to(device, non_blocking=True).float().div_(255)
        if transform is not None:
            batch = transform(batch)
        batch = batch.contiguous(memory_format=torch.channels_last)
        with context():
            outputs.append(model(batch).float().cpu())
    return torch.cat(outputs)


def _train_epoch(model, ema, optimizer, scheduler, images, targets, member, comp, context,
                 generator, progress: str):
    model.train()
    if member.freeze_bn:
        freeze_batchnorm(model.net)
    order = torch.randperm(len(targets), device=images.device, generator=generator)
    steps = len(order) // member.batch_size  # drop the ragged last batch: stable BatchNorm
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(range(steps), desc=progress, leave=False, unit="batch", mininterval=0.5)
    for step in bar:
        index = order[step * member.batch_size:(step + 1) * member.batch_size]
        batch = train_transform(images[index], member, comp.hflip, comp.vflip, generator)
        labels = targets[index]
        batch = batch.contiguous(memory_format=torch.channels_last)  # faster convs, CPU and GPU
        with context():
            logits = model(batch)
            loss = _loss(logits, labels, member, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        loss_sum += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
    return loss_sum / max(seen, 1), correct / max(seen, 1)


def _loss(logits, labels, member: Member, generator):
    return F.cross_entropy(logits.float(), labels, label_smoothing=member.label_smoothing)


def fit(model, member: Member, comp, images: torch.Tensor, targets: torch.Tensor,
        train_idx: np.ndarray, val_idx: np.ndarray, device: torch.device, precision: str,
        seed: int, log_path: Path | None = None, label: str = "") -> FitResult:
    """Train `model` on images[train_idx]; keep the weights with the lowest validation loss."""
    started = time.perf_counter()
    generator = torch.Generator(device=images.device).manual_seed(seed)
    train_images, train_targets = images[torch.as_tensor(train_idx)], targets[torch.as_tensor(train_idx)]
    val_images, val_targets = images[torch.as_tensor(val_idx)], targets[torch.as_tensor(val_idx)].cpu()
    steps_per_epoch = len(train_idx) // member.batch_size
    if steps_per_epoch == 0:
        raise PipelineError(
            f"batch_size {member.batch_size} is larger than the {len(train_idx)} training images: "
            f"lower it with --batch-size.")
    optimizer = _optimizer(model, member)
    scheduler = _scheduler(optimizer, member, member.epochs * steps_per_epoch)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(member.ema), use_buffers=True) \
        if member.ema else None
    context = autocast(device, precision)
    best = FitResult(state_dict={}, val_probs=None, best_epoch=-1, best_val_loss=math.inf)
    stale = 0
    for epoch in range(member.epochs):
        set_backbone_trainable(model, epoch >= member.freeze_epochs)
        train_loss, train_acc = _train_epoch(
            model, ema, optimizer, scheduler, train_images, train_targets, member, comp, context,
            generator, f"{label} epoch {epoch + 1}/{member.epochs}")
        scored = ema.module if ema is not None else model
        record = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                  "lr": optimizer.param_groups[-1]["lr"], "seconds": time.perf_counter() - started}
        if len(val_idx):
            logits = predict_logits(scored, val_images, device, precision)
            val_loss = F.cross_entropy(logits, val_targets).item()
            record.update(val_loss=val_loss, val_acc=(logits.argmax(1) == val_targets).float().mean().item())
        else:
            logits, val_loss = None, -epoch  # no validation: the last epoch is the best
        best.history.append(record)
        _log(record, log_path, label)
        if val_loss < best.best_val_loss:
            best.best_val_loss, best.best_epoch, stale = val_loss, epoch + 1, 0
            best.state_dict = copy.deepcopy({k: v.detach().cpu() for k, v in scored.state_dict().items()})
            best.val_probs = None if logits is None else logits.softmax(1).numpy()
        else:
            stale += 1
            if member.patience and stale >= member.patience:
                tqdm.write(f"{label}: early stop after epoch {epoch + 1} (best {best.best_epoch})")
                break
    best.seconds = time.perf_counter() - started
    return best


def _log(record: dict, log_path: Path | None, label: str) -> None:
    shown = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
    tqdm.write(f"{label} {shown}")
    if log_path is not None:
        with open(log_path, "a") as log:
            log.write(json.dumps({"member": label, **record}) + "\n")
