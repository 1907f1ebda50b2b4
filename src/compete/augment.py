"""Batched augmentation on whatever device the images live on, per-image photo augmentation
for loader threads, and test-time transforms.

Training batches are augmented as whole tensors (no per-sample Python), so the same code is the
GPU fast path and a cheap CPU path. The photo transforms (random-resized crop, rotation, colour
jitter) exist twice: batched here for a GPU, and per image with albumentations for CPU runs,
where resampling a 224 px batch as one tensor is about 10x slower than albumentations'
OpenCV kernels image by image (BENCHMARKS.md, "photo augmentation").
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import PipelineError

CROP_RATIO = (3 / 4, 4 / 3)     # aspect ratios of random-resized crops (torchvision's default)
ZOOM_SHARE = 0.875              # side share of the zoom and corner TTA crops (224 of 256)
LUMA = (0.299, 0.587, 0.114)    # RGB weights of gray, for contrast and saturation jitter


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


def has_photo_augment(member) -> bool:
    return member.crop_scale < 1 or bool(member.rotate) or bool(member.jitter)


def _uniform(n: int, low: float, high: float, like: torch.Tensor, generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, device=like.device, generator=generator)


def crop_and_rotate(images: torch.Tensor, crop_scale: float, degrees: float, size: int,
                    generator: torch.Generator) -> torch.Tensor:
    """Random-resized crop (area share in [crop_scale, 1], aspect in CROP_RATIO) and rotation
    (up to `degrees` either way) of float (N, C, H, W) square images, as one affine resampling
    per image to size x size; borders reflect."""
    n = images.shape[0]
    area = _uniform(n, crop_scale, 1.0, images, generator)
    log_ratios = [math.log(r) for r in CROP_RATIO] if crop_scale < 1 else [0.0, 0.0]  # 1: no crop
    ratio = _uniform(n, *log_ratios, images, generator).exp()
    width, height = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)
    cx = _uniform(n, -1, 1, images, generator) * (1 - width)  # the crop stays inside the image
    cy = _uniform(n, -1, 1, images, generator) * (1 - height)
    angle = _uniform(n, -degrees, degrees, images, generator) * (math.pi / 180)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos * width, -sin * height, cx], 1),
                         torch.stack([sin * width, cos * height, cy], 1)], 1)
    grid = F.affine_grid(theta, [n, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def colour_jitter(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and (for RGB) saturation scaled per image by factors drawn from
    [1 - strength, 1 + strength]; float images in [0, 1]."""
    n = images.shape[0]
    factors = _uniform(3 * n, 1 - strength, 1 + strength, images, generator).view(3, n, 1, 1, 1)
    images = images * factors[0]
    weights = torch.tensor(LUMA, device=images.device).view(1, 3, 1, 1)
    gray = (images * weights).sum(1, keepdim=True) if images.shape[1] == 3 else images
    images = (images - gray.mean((2, 3), keepdim=True)) * factors[1] + gray.mean((2, 3), keepdim=True)
    if images.shape[1] == 3:
        gray = (images * weights).sum(1, keepdim=True)
        images = gray + (images - gray) * factors[2]
    return images.clamp_(0, 1)


def photo_transform(images: torch.Tensor, member, size: int, generator: torch.Generator) -> torch.Tensor:
    """The member's photo augmentation, batched on the images' device; float in [0, 1]."""
    if member.crop_scale < 1 or member.rotate or images.shape[-1] != size:
        images = crop_and_rotate(images, member.crop_scale, member.rotate, size, generator)
    if member.jitter:
        images = colour_jitter(images, member.jitter, generator)
    return images


class PhotoTransform:
    """The member's photo augmentation per image, with albumentations, for loader threads:
    (N, H, W, C) uint8 batch and a seed -> (N, size, size, C) uint8. Seeded per batch, so the
    result does not depend on which thread ran it; each thread has its own pipeline (their
    random states must not mix)."""

    def __init__(self, member, size: int):
        import cv2
        cv2.setNumThreads(1)  # each loader thread is one core's worth of work
        self.member, self.size, self.local = member, size, threading.local()

    def _compose(self, channels: int):
        import albumentations as A  # imported by photo runs only: it takes seconds
        import cv2
        member, size = self.member, self.size
        steps = [A.RandomResizedCrop(size=(size, size), scale=(member.crop_scale, 1), ratio=CROP_RATIO, p=1)
                 if member.crop_scale < 1 else A.Resize(size, size)]
        if member.rotate:
            steps.append(A.Rotate(limit=member.rotate, border_mode=cv2.BORDER_REFLECT_101, p=1))
        if member.jitter and channels not in (1, 3):  # bands have no saturation: brightness, contrast
            steps.append(A.RandomBrightnessContrast(brightness_limit=member.jitter,
                                                    contrast_limit=member.jitter, p=1))
        elif member.jitter:
            j = member.jitter
            steps.append(A.ColorJitter(brightness=(1 - j, 1 + j), contrast=(1 - j, 1 + j),
                                       saturation=(1 - j, 1 + j), hue=(0, 0), p=1))
        return A.Compose(steps, seed=0)

    def __call__(self, batch: np.ndarray, seed: int) -> np.ndarray:
        if not hasattr(self.local, "compose"):
            self.local.compose = self._compose(batch.shape[-1])
        compose = self.local.compose
        compose.set_random_seed(seed)
        out = [compose(image=image)["image"] for image in batch]
        return np.stack([image.reshape(*image.shape[:2], batch.shape[-1]) for image in out])


@dataclass
class PhotoPlan:
    """Where a member's photo augmentation runs: per image on the loader threads (`per_image`),
    batched on the device ending at side `size`, or nowhere (both None)."""
    per_image: PhotoTransform | None = None
    size: int | None = None


def photo_plan(member, image_size: int, setting: str, device: torch.device, streamed: bool) -> PhotoPlan:
    """The member's PhotoPlan for training on images of side `image_size` (the competition's),
    ending at the member's own size. `setting` is RunConfig.photo_augment; loader-side transforms
    need a streamed source (else they run on the device)."""
    if not has_photo_augment(member):
        return PhotoPlan()
    size = member.image_size or image_size
    if streamed and photo_on_loader(setting, device):
        return PhotoPlan(per_image=PhotoTransform(member, size))
    return PhotoPlan(size=size)


def photo_on_loader(setting: str, device: torch.device) -> bool:
    """RunConfig.photo_augment resolved: "auto" is the loader on a CPU, the device on a GPU."""
    return setting == "loader" or (setting == "auto" and device.type == "cpu")


def train_transform(images: torch.Tensor, member, hflip: bool, vflip: bool,
                    generator: torch.Generator, photo_size: int | None = None) -> torch.Tensor:
    """uint8 (N, C, H, W) -> augmented float images in [0, 1]. With `photo_size`, the member's
    photo augmentation runs here too (else the loader threads did it), ending at that side."""
    images = images.float().div_(255)
    if photo_size is not None:
        images = photo_transform(images, member, photo_size, generator)
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


def _crop_view(top: float, left: float):
    """A ZOOM_SHARE crop at fractional offset (top, left) of the free margin, scaled back to the
    input's side (so models of a fixed input size take it)."""
    def transform(images):
        h, w = images.shape[-2:]
        ch, cw = round(h * ZOOM_SHARE), round(w * ZOOM_SHARE)
        y, x = round((h - ch) * top), round((w - cw) * left)
        crop = images[..., y:y + ch, x:x + cw]
        return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    return transform


TTA = {
    "identity": lambda images: images,
    "zoom": _crop_view(0.5, 0.5),          # the centre: multi-scale with identity
    "crop_tl": _crop_view(0, 0),           # with zoom: the five crops
    "crop_tr": _crop_view(0, 1),
    "crop_bl": _crop_view(1, 0),
    "crop_br": _crop_view(1, 1),
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
