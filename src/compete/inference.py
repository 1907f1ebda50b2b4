"""Inference over uint8 images already in memory: batched logits, and probabilities averaged
over a member's test-time views. Validation during training and prediction use the same two."""
from __future__ import annotations

import numpy as np
import torch

from .augment import TTA
from .runtime import autocast
from .targets import Target

EVAL_BATCH = 1024  # images per inference batch (the logits of all of them stay on the device)


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
            outputs.append(model(batch).float())
    return torch.cat(outputs).cpu()  # one copy back at the end: no GPU stall per batch


def tta_probs(model, images: torch.Tensor, tta: list[str], device: torch.device, precision: str,
              target: Target | None = None) -> np.ndarray:
    """Outputs (probabilities; numbers for regression) averaged over a member's test-time views:
    validation and test alike. `target` None: a single_label run."""
    activate = (target or Target([])).activate
    views = [activate(predict_logits(model, images, device, precision, TTA[name])) for name in tta]
    return torch.stack(views).mean(0).numpy()
