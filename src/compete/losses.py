"""Training losses per target kind, class weights, and the class-balanced sampler's weights.

    single_label  cross_entropy (label smoothing) or focal
    binary        bce (one logit) or focal
    multi_label   bce per tag or focal; class weights weigh each tag's positives
    regression    mse or smooth_l1, on the standardized number

A criterion takes (logits, targets) of a batch and returns the mean loss; class weights multiply
each image's loss by its class's weight (inverse frequency in the training split). A teacher's
soft targets (SoftTargets, teaching.py) add a soft loss per kind, weighed per row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .config import Member
from .errors import PipelineError
from .metrics import BINARY, MULTI, REGRESSION, SINGLE

LOSSES = {SINGLE: ("cross_entropy", "focal"), BINARY: ("bce", "focal"), MULTI: ("bce", "focal"),
          REGRESSION: ("mse", "smooth_l1")}  # the first is each kind's `auto`
WEIGHTINGS = ("none", "balanced", "sqrt")


def loss_name(kind: str, member: Member) -> str:
    name = LOSSES[kind][0] if member.loss == "auto" else member.loss
    if name not in LOSSES[kind]:
        raise PipelineError(f"loss {member.loss!r} does not train a {kind} target: use auto or "
                            f"{' or '.join(LOSSES[kind])}.")
    return name


def inverse_frequency(counts, weighting: str) -> np.ndarray:
    """scikit-learn's 'balanced' weights n / (groups x count), or their square root; an absent
    group weighs as a group of one."""
    counts = np.asarray(counts, dtype=np.float64)
    weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return np.sqrt(weights) if weighting == "sqrt" else weights


def _stratum_counts(target, train_targets: np.ndarray) -> np.ndarray:
    """Training images per class (grade, or number bin), absent ones included."""
    counts = list(target.counts(train_targets).values())
    return np.asarray(counts) if counts else np.bincount(target.strata(train_targets))


def _class_weights(target, member: Member, train_targets: np.ndarray) -> np.ndarray | None:
    """Per class, grade or number bin; per tag for multi_label: the weight of its positives
    against its negatives (BCE's pos_weight: negatives / positives when balanced)."""
    if member.class_weights not in WEIGHTINGS:
        raise PipelineError(f"class_weights {member.class_weights!r}: use {', '.join(WEIGHTINGS)}.")
    if member.class_weights == "none":
        return None
    if target.kind == MULTI:
        positives = train_targets.sum(0)
        ratio = (len(train_targets) - positives) / np.maximum(positives, 1)
        return np.sqrt(ratio) if member.class_weights == "sqrt" else ratio
    return inverse_frequency(_stratum_counts(target, train_targets), member.class_weights)


def _softmax_loss(name: str, member: Member, weights: torch.Tensor | None):
    """Cross-entropy with label smoothing, focal if asked; per image."""
    def loss(logits, targets):
        per_image = F.cross_entropy(logits, targets, label_smoothing=member.label_smoothing, reduction="none")
        if name == "focal":
            per_image = per_image * (1 - logits.softmax(1).gather(1, targets[:, None])[:, 0]) ** member.focal_gamma
        return per_image if weights is None else per_image * weights[targets]
    return loss


def _sigmoid_loss(kind: str, name: str, member: Member, weights: torch.Tensor | None):
    """BCE per output (smoothed towards 1/2), focal if asked; averaged per image. Weights are
    per class (binary) or each tag's positives' (multi_label)."""
    def loss(logits, targets):
        truth = targets.float().reshape(logits.shape)  # binary: (N,) -> (N, 1)
        soft = truth * (1 - member.label_smoothing) + member.label_smoothing / 2
        per_cell = F.binary_cross_entropy_with_logits(logits, soft, reduction="none")
        if name == "focal":
            p_true = torch.where(truth > 0.5, logits.sigmoid(), 1 - logits.sigmoid())
            per_cell = per_cell * (1 - p_true) ** member.focal_gamma
        if weights is not None:
            per_cell = per_cell * (weights[truth.long()] if kind == BINARY
                                   else torch.where(truth > 0.5, weights, torch.ones_like(weights)))
        return per_cell.mean(1)
    return loss


def _number_loss(target, name: str, weights: torch.Tensor | None, edges: torch.Tensor):
    """MSE or smooth L1 of the standardized number; weights per stratum (grade, number bin)."""
    def loss(logits, targets):
        values, wanted = logits[:, 0], target.standardize(targets.float())
        per_image = F.mse_loss(values, wanted, reduction="none") if name == "mse" else \
            F.smooth_l1_loss(values, wanted, reduction="none")
        return per_image if weights is None else per_image * weights[torch.bucketize(targets.float(), edges, right=True)]
    return loss


@dataclass
class SoftTargets:
    """A teacher's per-row targets (teaching.py), beside the labels of the same rows: the
    teacher's outputs (probabilities, already softened by `temperature`; numbers for regression)
    and how much each row's label loss and soft loss weigh (a row without a label, or without a
    teacher output, weighs 0 there)."""
    values: torch.Tensor             # (N, outputs) float
    label_weight: torch.Tensor       # (N,)
    soft_weight: torch.Tensor        # (N,)
    temperature: float = 1.0         # the student's logits are divided by it too

    def rows(self, index: torch.Tensor) -> "SoftTargets":
        index = index.to(self.values.device)
        return SoftTargets(self.values[index], self.label_weight[index], self.soft_weight[index], self.temperature)


def soft_loss(target, logits: torch.Tensor, soft: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per image: cross-entropy to the teacher's class probabilities (single_label), BCE to its
    probabilities per output (binary, multi_label), both on logits / T and times T^2 so that
    the gradient keeps its size; the squared error to its standardized number (regression)."""
    if target.kind == REGRESSION:
        return F.mse_loss(logits[:, 0], target.standardize(soft[:, 0]), reduction="none")
    scaled = logits / temperature
    if target.kind == SINGLE:
        per_image = -(soft * F.log_softmax(scaled, 1)).sum(1)
    else:
        per_image = F.binary_cross_entropy_with_logits(scaled, soft.reshape(scaled.shape), reduction="none").mean(1)
    return per_image * temperature ** 2


def criterion(target, member: Member, train_targets: np.ndarray,
              device: torch.device | None = None) -> Callable[..., torch.Tensor]:
    """The member's training loss for `target` (mean over the batch), with class weights from
    `train_targets`; given a batch's SoftTargets, each image's label loss and its loss to the
    teacher's outputs, weighed as they say."""
    name = loss_name(target.kind, member)
    weights = _class_weights(target, member, train_targets)
    weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=device)
    if target.kind == SINGLE:
        per_image = _softmax_loss(name, member, weights)
    elif target.kind == REGRESSION:  # strata bounds, so that weights are looked up on the device
        edges = torch.as_tensor(target.strata_edges(train_targets), dtype=torch.float32, device=device)
        per_image = _number_loss(target, name, weights, edges)
    else:
        per_image = _sigmoid_loss(target.kind, name, member, weights)

    def loss(logits, targets, soft: SoftTargets | None = None):
        logits = logits.float()
        if soft is None:
            return per_image(logits, targets).mean()
        return (soft.label_weight * per_image(logits, targets) +
                soft.soft_weight * soft_loss(target, logits, soft.values, soft.temperature)).mean()
    return loss


def validation_loss(target, logits: torch.Tensor, truth: torch.Tensor) -> float:
    """The kind's plain loss (no smoothing, no weights): cross-entropy, BCE, or the squared
    error in the target's own units."""
    logits = logits.float()
    if target.kind == SINGLE:
        return F.cross_entropy(logits, truth).item()
    if target.kind == REGRESSION:
        return F.mse_loss(target.activate(logits[:, 0]), truth.float()).item()
    return F.binary_cross_entropy_with_logits(logits, truth.float().reshape(logits.shape)).item()


def sampling_weights(target, member: Member, train_targets: np.ndarray) -> np.ndarray | None:
    """Draw probabilities per training image for the balanced sampler (None: a permutation).
    Each stratum (class, rarest tag, grade) is drawn equally often."""
    if member.sampler == "uniform":
        return None
    if member.sampler != "balanced":
        raise PipelineError(f"sampler {member.sampler!r}: use uniform or balanced.")
    strata = target.strata(train_targets)
    weights = 1.0 / np.bincount(strata)[strata]
    return weights / weights.sum()
