"""Inference over uint8 images (a batch source of batches.py, or a tensor): batched logits, and
probabilities averaged over a member's test-time views. Validation during training and
prediction use the same two."""
from __future__ import annotations

import numpy as np
import torch

from .augment import TTA
from .batches import as_source
from .metadata import encoded
from .runtime import Runtime
from .targets import SINGLE_LABEL, Target

EVAL_BATCH = 1024      # images per inference batch at most (the logits of all stay on the device)
EVAL_PIXELS = 2 ** 22  # and image pixels per batch at most: 83 photos of 224 px, so that memory
                       # for inputs and activations does not grow with the image size


def eval_batch_size(shape: tuple) -> int:
    """Images per inference batch for (N, H, W, C) images."""
    return max(1, min(EVAL_BATCH, EVAL_PIXELS // (shape[1] * shape[2])))


@torch.no_grad()
def view_logits(model, images, runtime: Runtime, transforms: list, positions=None) -> list[torch.Tensor]:
    """Logits (float32, CPU) of each transform's view (None: the images as they are) of the
    images at `positions` (all by default). `images`: a batch source, or a uint8 (N, C, H, W)
    tensor. Each batch is read once for all views."""
    model.eval()
    device, context = runtime.device, runtime.autocast()
    source = as_source(images)
    positions = torch.arange(len(source)) if positions is None else torch.as_tensor(positions)
    metadata = model_rows(model, source, device)
    outputs = [[] for _ in transforms]
    index_batches = list(positions.split(eval_batch_size(source.shape)))
    for index, batch in zip(index_batches, source.batches(index_batches)):
        batch = batch.to(device, non_blocking=True).float().div_(255)
        rows = batch_rows(metadata, index)  # every view of an image beside the same metadata
        for view, transform in zip(outputs, transforms):
            inputs = batch if transform is None else transform(batch)
            with context():
                view.append(model(inputs.contiguous(memory_format=torch.channels_last), *rows).float())
    return [torch.cat(view).cpu() for view in outputs]  # one copy back at the end: no GPU stall per batch


def model_rows(model, images, device: torch.device) -> torch.Tensor | None:
    """The metadata rows beside `images` (a batch source, batches.with_rows) encoded by
    `model`'s own encoder, on `device`; None for a model that reads no metadata."""
    return encoded(getattr(model, "metadata", None), getattr(images, "rows", None), device)


def batch_rows(metadata: torch.Tensor | None, index: torch.Tensor) -> tuple:
    """A batch's encoded metadata rows, as the extra argument of the model (and of the
    training step): none for a model that reads no metadata."""
    return () if metadata is None else (metadata[index.to(metadata.device)],)


def predict_logits(model, images, runtime: Runtime, transform=None, positions=None) -> torch.Tensor:
    """Logits (float32, CPU) of the images at `positions` (all by default), batched."""
    return view_logits(model, images, runtime, [transform], positions)[0]


def tta_probs(model, images, tta: list[str], runtime: Runtime, target: Target = SINGLE_LABEL,
              positions=None) -> np.ndarray:
    """Outputs (probabilities; numbers for regression) averaged over a member's test-time views:
    validation and test alike."""
    activate = target.activate
    views = view_logits(model, images, runtime, [TTA[name] for name in tta], positions)
    return torch.stack([activate(logits) for logits in views]).mean(0).numpy()
