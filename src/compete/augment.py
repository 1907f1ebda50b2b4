"""Batched augmentation on whatever device the images live on, and test-time transforms.

Training batches are augmented as whole tensors (no per-sample Python), so the same code is the
GPU fast path and a cheap CPU path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import PipelineError


def random_crop(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Reflect-pad by `pad` pixels, then crop each image back at its own random offset."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=images.device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=images.device, generator=generator)
    rows = dy + torch.arange(h, device=images.device).view(1, h, 1)
    cols = dx + torch.arange(w, device=images.device).view(1, 1, w)
    batch = torch.arange(n, device=images.device).view(n, 1, 1)
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)  # advanced indexing puts C last


def random_flip(images: torch.Tensor, dim: int, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(images.shape[0], device=images.device, generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(dim), images)


def cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero one random size x size square per image (centres may sit near the border)."""
    n, _, h, w = images.shape
    cy = torch.randint(0, h, (n, 1, 1), device=images.device, generator=generator)
    cx = torch.randint(0, w, (n, 1, 1), device=images.device, generator=generator)
    ys = torch.arange(h, device=images.device).view(1, h, 1)
    xs = torch.arange(w, device=images.device).view(1, 1, w)
    inside = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)
    return images.masked_fill(inside.unsqueeze(1), 0)


def train_transform(images: torch.Tensor, member, hflip: bool, vflip: bool,
                    generator: torch.Generator) -> torch.Tensor:
    """uint8 (N, C, H, W) -> augmented float images in [0, 1]."""
    images = images.float().div_(255)
    if member.pad_crop:
        images = random_crop(images, member.pad_crop, generator)
    if hflip:
        images = random_flip(images, -1, generator)
    if vflip:
        images = random_flip(images, -2, generator)
    if member.cutout:
        images = cutout(images, member.cutout, generator)
    return images


def _beta(alpha: float, device: torch.device) -> torch.Tensor:
    """One Beta(alpha, alpha) draw, from two Gamma(alpha) draws; a tensor, so no GPU sync."""
    gamma = torch._standard_gamma(torch.full((2,), float(alpha), device=device))
    return gamma[0] / gamma.sum()


def mix_batch(images: torch.Tensor, mixup: float, cutmix: float, generator: torch.Generator):
    """Mixup (blend) or CutMix (paste a box) of a float batch with a shuffled copy of itself, one
    Beta(a, a) strength per batch. Returns (inputs, partner, keep): the loss weighs each image's
    own label by `keep`, its partner's by 1 - keep (for CutMix, the share of pixels kept, the box
    clipped at the border). With both on, each batch picks one at random."""
    n, _, h, w = images.shape
    device = images.device
    partner = torch.randperm(n, device=device, generator=generator)
    other = images[partner]
    options = []
    if mixup:
        keep = _beta(mixup, device)
        options.append((images * keep + other * (1 - keep), keep))
    if cutmix:
        side = (1 - _beta(cutmix, device)).sqrt()  # box sides: this fraction of the image's
        cy = torch.randint(0, h, (1, 1), device=device, generator=generator)
        cx = torch.randint(0, w, (1, 1), device=device, generator=generator)
        box = ((torch.arange(h, device=device).view(h, 1) - cy).abs() * 2 < side * h) & \
              ((torch.arange(w, device=device).view(1, w) - cx).abs() * 2 < side * w)
        options.append((torch.where(box, other, images), 1 - box.float().mean()))
    if len(options) == 1:
        return options[0][0], partner, options[0][1]
    pick = torch.rand((), device=device, generator=generator) < 0.5
    return (torch.where(pick, options[0][0], options[1][0]), partner,
            torch.where(pick, options[0][1], options[1][1]))


def _shift(dy: int, dx: int):
    def transform(images):
        pad = max(abs(dy), abs(dx))
        h, w = images.shape[-2:]
        padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
        return padded[..., pad + dy:pad + dy + h, pad + dx:pad + dx + w]
    return transform


TTA = {
    "identity": lambda images: images,
    "hflip": lambda images: images.flip(-1),
    "vflip": lambda images: images.flip(-2),
    "shift_left": _shift(0, 1),
    "shift_right": _shift(0, -1),
    "shift_up": _shift(1, 0),
    "shift_down": _shift(-1, 0),
}


def check_tta(names: list[str], hflip: bool, vflip: bool) -> list[str]:
    """The member's TTA list, refused where empty, unknown, or flipping what the competition says
    a flip changes."""
    if not names:
        raise PipelineError(f"tta is empty: list at least one transform, e.g. [identity]. "
                            f"Known: {', '.join(TTA)}.")
    for name in names:
        if name not in TTA:
            raise PipelineError(f"Unknown TTA transform '{name}'. Known: {', '.join(TTA)}.")
        if (name == "hflip" and not hflip) or (name == "vflip" and not vflip):
            raise PipelineError(
                f"TTA '{name}' is listed but the competition says that flip changes the class "
                f"(hflip/vflip in its yaml): remove it from tta.")
    return names
