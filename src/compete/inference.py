"""Inference over uint8 images (a batch source of batches.py, or a tensor): batched logits, and
probabilities averaged over a member's test-time views. Validation during training and
prediction use the same two."""
from __future__ import annotations

import numpy as np
import torch

from .augment import TTA
from .batches import as_source
from .runtime import Runtime
from .targets import SINGLE_LABEL, Target

EVAL_BATCH = 1024      # images per inference batch at most (the logits of all stay on the device)
EVAL_PIXELS = 2 ** 22  # and image pixels per batch at most: 83 photos of 224 px, so that memory
                       # for inputs and activations does not grow with the image size


def eval_batch_size(shape: tuple) -> int:
    """Images per inference batch for (N, H, W, C) images."""
    return max(1, min(EVAL_BATCH, EVAL_PIXELS // (shape[1] * shape[2])))


@torch.no_grad()
def view_logits(model, images, runtime: Runtime, transforms: list, positions=None,
                metadata: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Logits (float32, CPU) of each transform's view (None: the images as they are) of the
    images at `positions` (all by default). `images`: a batch source, or a uint8 (N, C, H, W)
    tensor; `metadata`: every image's encoded metadata row, for a model that reads them (the
    same rows in every view). Each batch is read once for all views."""
    model.eval()
    device, context = runtime.device, runtime.autocast()
    source = as_source(images)
    positions = torch.arange(len(source)) if positions is None else torch.as_tensor(positions)
    outputs = [[] for _ in transforms]
    index_batches = list(positions.split(eval_batch_size(source.shape)))
    for index, batch in zip(index_batches, source.batches(index_batches)):
        batch = batch.to(device, non_blocking=True).float().div_(255)
        rows = () if metadata is None else (metadata[index.to(metadata.device)].to(device),)
        for view, transform in zip(outputs, transforms):
            inputs = batch if transform is None else transform(batch)
            with context():
                view.append(model(inputs.contiguous(memory_format=torch.channels_last), *rows).float())
    return [torch.cat(view).cpu() for view in outputs]  # one copy back at the end: no GPU stall per batch


def predict_logits(model, images, runtime: Runtime, transform=None, positions=None,
                   metadata: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (float32, CPU) of the images at `positions` (all by default), batched."""
    return view_logits(model, images, runtime, [transform], positions, metadata)[0]


def tta_probs(model, images, tta: list[str], runtime: Runtime, target: Target = SINGLE_LABEL,
              positions=None, metadata: torch.Tensor | None = None) -> np.ndarray:
    """Outputs (probabilities; numbers for regression) averaged over a member's test-time views:
    validation and test alike."""
    activate = target.activate
    views = view_logits(model, images, runtime, [TTA[name] for name in tta], positions, metadata)
    return torch.stack([activate(logits) for logits in views]).mean(0).numpy()
