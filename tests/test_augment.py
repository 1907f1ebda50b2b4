"""Batched training augmentation: crops, cutout, and mixing images with their labels."""
import pytest
import torch
import torch.nn.functional as F

from compete.augment import cutout, mix_batch, random_crop

from helpers import gen


def test_each_crop_is_a_window_of_the_padded_image():
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    crops = random_crop(images, 2, gen())
    padded = F.pad(images, (2, 2, 2, 2), mode="reflect")
    assert crops.shape == images.shape
    for i in range(2):
        windows = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(padded[i, :, dy:dy + 6, dx:dx + 6], crops[i])]
        assert windows, f"image {i} is not a shifted window"


def test_cutout_zeroes_one_square_of_the_given_side_inside_the_image():
    images = torch.ones(64, 1, 20, 20)
    out = cutout(images, 5, gen())
    zeroed = (out == 0).sum((1, 2, 3))
    assert zeroed.max() == 25 and zeroed.min() >= 9  # whole squares, or clipped at a border
    rows = (out[:, 0] == 0).any(2).sum(1)
    assert rows.max() <= 5


def two_kinds(n: int = 8, side: int = 16):
    """Half the images all 0, half all 1: where a pixel came from shows in its value."""
    images = torch.zeros(n, 3, side, side)
    images[n // 2:] = 1
    return images


def test_mixup_blends_each_image_with_its_partner_by_the_kept_share():
    images = two_kinds()
    inputs, partner, keep = mix_batch(images, mixup=0.4, cutmix=0.0, generator=gen())
    assert 0 <= keep <= 1
    expected = images * keep + images[partner] * (1 - keep)
    assert torch.allclose(inputs, expected)


@pytest.mark.parametrize("seed", range(5))
def test_cutmix_pastes_one_box_and_weighs_labels_by_its_area(seed):
    images = two_kinds()
    inputs, partner, keep = mix_batch(images, mixup=0.0, cutmix=1.0, generator=gen(seed))
    from_partner = (inputs != images).float()
    differs = images != images[partner]  # where a pasted pixel is visible at all
    box = from_partner.sum((0, 1)) > 0   # the same box for the whole batch
    assert torch.equal(from_partner.bool(), differs & box)
    assert keep.item() == pytest.approx(1 - box.float().mean().item())
    assert inputs.shape == images.shape


def test_with_both_on_each_batch_is_mixed_one_way_or_the_other():
    images = two_kinds()
    kinds = set()
    for seed in range(20):
        inputs, _, _ = mix_batch(images, mixup=0.4, cutmix=1.0, generator=gen(seed))
        blended = ((inputs > 0) & (inputs < 1)).any().item()
        kinds.add("mixup" if blended else "cutmix")
    assert kinds == {"mixup", "cutmix"}


def test_mixing_repeats_with_the_same_seeds():
    images = torch.rand(8, 1, 12, 12)
    torch.manual_seed(0)  # the strengths come from the global generator
    first = mix_batch(images, 0.4, 1.0, gen(3))
    torch.manual_seed(0)
    second = mix_batch(images, 0.4, 1.0, gen(3))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
