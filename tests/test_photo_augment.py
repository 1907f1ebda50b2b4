"""Photo augmentation, batched (device) and per image (albumentations, loader side), and the
multi-crop test-time views."""
import numpy as np
import pytest
import torch

from compete.augment import TTA, PhotoTransform, colour_jitter, crop_and_rotate, photo_transform, train_transform
from compete.config import Member

from helpers import gen, needs_albumentations


def ramp(n: int = 16, side: int = 32, channels: int = 3) -> torch.Tensor:
    """Images whose value is the column position, 0 at the left edge to 1 at the right."""
    columns = (torch.arange(side) + 0.5) / side
    return columns.view(1, 1, 1, side).expand(n, channels, side, side).contiguous()


def test_no_crop_and_no_rotation_is_the_identity_at_the_same_size():
    images = torch.rand(4, 3, 20, 20)
    assert torch.allclose(crop_and_rotate(images, 1.0, 0.0, 20, gen()), images, atol=1e-5)


def test_random_resized_crops_zoom_into_a_part_of_each_image():
    out = crop_and_rotate(ramp(64), 0.25, 0.0, 24, gen())
    assert out.shape == (64, 3, 24, 24)
    spans = out[:, 0, 12].amax(1) - out[:, 0, 12].amin(1)  # share of the width each crop covers
    assert spans.max() <= 1.0 and spans.min() > 0.35      # area >= 0.25 at aspect <= 4/3
    assert (spans < 0.8).float().mean() > 0.3              # and many are real zooms
    assert torch.all(out[:, 0].diff(dim=-1) >= -1e-6)      # a crop, not a mirror: still left to right


def test_rotation_keeps_the_centre_and_tilts_the_rest():
    images = ramp(32, side=33)
    out = crop_and_rotate(images, 1.0, 30.0, 33, gen())
    assert torch.allclose(out[:, :, 16, 16], images[:, :, 16, 16], atol=1e-5)  # turns about the centre
    column_change = (out[:, 0, 0, :] - out[:, 0, -1, :]).abs().amax(1)       # top row vs bottom row
    assert (column_change > 0.05).float().mean() > 0.8  # vertical lines are no longer vertical


def test_colour_jitter_stays_in_range_and_keeps_gray_gray():
    images = torch.rand(32, 3, 8, 8)
    out = colour_jitter(images, 0.4, gen())
    assert out.min() >= 0 and out.max() <= 1 and not torch.allclose(out, images)
    gray = images[:, :1].expand(-1, 3, -1, -1)
    jittered = colour_jitter(gray, 0.4, gen())
    assert torch.allclose(jittered[:, 0], jittered[:, 1]) and torch.allclose(jittered[:, 1], jittered[:, 2])
    assert torch.allclose(colour_jitter(images, 0.0, gen()), images, atol=1e-6)


def test_train_transform_resizes_photos_to_the_member_side_on_the_device():
    member = Member(crop_scale=0.5, rotate=10, jitter=0.2, pad_crop=0)
    images = (torch.rand(8, 3, 40, 40) * 255).to(torch.uint8)
    out = train_transform(images, member, hflip=True, vflip=False, generator=gen(), photo_size=32)
    assert out.shape == (8, 3, 32, 32) and out.dtype == torch.float32
    assert photo_transform(images.float() / 255, Member(), 40, gen()).shape == (8, 3, 40, 40)


@needs_albumentations
@pytest.mark.parametrize("channels", [1, 3])
def test_albumentations_transform_gives_member_sized_uint8_and_repeats_with_its_seed(channels):
    member = Member(crop_scale=0.3, rotate=15, jitter=0.3)
    batch = (ramp(6, 48, channels).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    transform = PhotoTransform(member, 32)
    first, again, other = transform(batch, 7), transform(batch, 7), transform(batch, 8)
    assert first.shape == (6, 32, 32, channels) and first.dtype == np.uint8
    assert np.array_equal(first, again) and not np.array_equal(first, other)


@needs_albumentations
def test_albumentations_crops_zoom_like_the_batched_ones():
    batch = (ramp(64, 48, 3).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    out = PhotoTransform(Member(crop_scale=0.25), 24)(batch, 0).astype(np.float32) / 255
    spans = out[:, 12, :, 0].max(1) - out[:, 12, :, 0].min(1)
    assert spans.min() > 0.35 and (spans < 0.8).mean() > 0.3


def test_crop_views_keep_the_size_and_look_at_their_corner():
    images = torch.rand(2, 3, 32, 32)
    for name in ("zoom", "crop_tl", "crop_tr", "crop_bl", "crop_br"):
        assert TTA[name](images).shape == images.shape
    right = ramp(1)
    assert TTA["crop_tl"](right).mean() < TTA["zoom"](right).mean() < TTA["crop_tr"](right).mean()
    constant = torch.full((1, 3, 32, 32), 0.3)
    assert torch.allclose(TTA["crop_br"](constant), constant)
