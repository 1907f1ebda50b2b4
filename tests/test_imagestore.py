"""The on-disk image store: resize policies, JPEG draft decoding, parallel filling, row reads,
statistics, and resident memory that does not grow with the rows read."""
import functools
import io
import pickle

import numpy as np
import pytest
from PIL import Image

from compete import imagestore
from compete.imagestore import ImageFile, channel_stats, decode_into, draft, fit_to_size

from helpers import image_bytes, resident_bytes


def stripes(width: int, height: int) -> Image.Image:
    """Red left third, green middle third, blue right third."""
    array = np.zeros((height, width, 3), np.uint8)
    third = width // 3
    array[:, :third, 0] = 255
    array[:, third:2 * third, 1] = 255
    array[:, 2 * third:, 2] = 255
    return Image.fromarray(array)


def test_squash_keeps_the_whole_image_stretched():
    out = np.asarray(fit_to_size(stripes(300, 100), 60, "squash"))
    assert out.shape == (60, 60, 3)
    assert (out[:, 5, 0] == 255).all() and (out[:, 30, 1] == 255).all() and (out[:, 55, 2] == 255).all()


def test_crop_keeps_the_centre_square_of_the_shorter_side():
    out = np.asarray(fit_to_size(stripes(300, 100), 60, "crop"))
    assert out.shape == (60, 60, 3)
    inside = out[:, 2:-2]  # the resampling filter blends the outermost columns with their neighbours
    assert (inside[..., 1] == 255).all() and (inside[..., 0] == 0).all()  # only the middle third


def test_letterbox_keeps_the_aspect_and_pads_the_rest():
    out = np.asarray(fit_to_size(stripes(240, 120), 64, "letterbox"))
    assert out.shape == (64, 64, 3)
    assert (out[:16] == imagestore.LETTERBOX_FILL).all() and (out[48:] == imagestore.LETTERBOX_FILL).all()
    assert (out[16:48, 2, 0] == 255).all() and (out[16:48, 61, 2] == 255).all()  # full width


def test_portrait_letterbox_pads_left_and_right():
    out = np.asarray(fit_to_size(Image.new("L", (50, 100), 200), 40, "letterbox"))
    assert (out[:, :10] == 0).all() and (out[:, 30:] == 0).all() and (out[:, 10:30] == 200).all()


def jpeg(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.BILINEAR)  # smooth, photo-like
    return image_bytes(image, "JPEG", quality=90)


def test_jpeg_draft_decodes_smaller_but_never_below_the_target():
    image = Image.open(io.BytesIO(jpeg(640, 480)))
    draft(image, "RGB", 224)
    assert image.size == (320, 240)  # half scale: both sides still >= 224
    full = np.asarray(fit_to_size(Image.open(io.BytesIO(jpeg(640, 480))).convert("RGB"), 224, "crop"), np.float32)
    drafted = np.asarray(fit_to_size(image.convert("RGB"), 224, "crop"), np.float32)
    assert np.abs(full - drafted).mean() < 4  # same picture, at a quarter of the decoding work


def test_draft_leaves_png_alone():
    image = Image.open(io.BytesIO(image_bytes(Image.new("RGB", (640, 480)))))
    draft(image, "RGB", 224)
    assert image.size == (640, 480)


def decode_value(scale: int, item):
    """A decoder for the tests: item -> an 8x8x3 image of value item * scale; None is unreadable."""
    if item is None:
        raise ValueError("broken on purpose")
    return np.full((8, 8, 3), item * scale % 256, np.uint8), f"value {item % 2}"


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])  # 2: a process pool
def test_decode_into_writes_every_row_and_lists_the_failures(tmp_path, monkeypatch, workers):
    monkeypatch.setattr(imagestore, "POOL_MIN_IMAGES", 0)  # use the pool even for a small set
    monkeypatch.setattr(imagestore, "CHUNK_IMAGES", 7)     # several chunks, the last one ragged
    items = [i if i % 10 else None for i in range(1, 40)]
    with open(tmp_path / "x.npy", "wb") as file:
        bad, formats = decode_into(file, (len(items), 8, 8, 3), items, functools.partial(decode_value, 3),
                                   workers=workers)
    images = np.load(tmp_path / "x.npy")
    for row, item in enumerate(items):
        assert (images[row] == (0 if item is None else item * 3 % 256)).all()
    assert bad == {9: "broken on purpose", 19: "broken on purpose", 29: "broken on purpose"}
    assert formats == {"value 1": 20, "value 0": 16}  # odd and even readable items


def test_image_file_reads_rows_in_the_order_asked(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (30, 5, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", array)
    images = ImageFile(tmp_path / "a.npy")
    rows = np.array([7, 8, 9, 3, 29, 0, 1])  # runs of consecutive rows and jumps
    assert images.shape == array.shape and len(images) == 30
    assert np.array_equal(images[rows], array[rows])
    assert np.array_equal(images[4], array[4]) and np.array_equal(images[5:12], array[5:12])
    out = np.empty((3, 5, 4, 3), np.uint8)
    assert images.read([2, 1, 0], out=out) is out and np.array_equal(out, array[[2, 1, 0]])
    assert np.array_equal(pickle.loads(pickle.dumps(images))[rows], array[rows])  # loader processes
    with pytest.raises(IndexError):
        images[np.array([30])]


def test_channel_stats_match_numpy_and_a_sample_stays_close(monkeypatch):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (300, 6, 6, 3), dtype=np.uint8)
    images[..., 1] //= 2
    exact = images.reshape(-1, 3).astype(np.float64) / 255
    mean, std = channel_stats(images)
    assert np.allclose(mean, exact.mean(0), atol=1e-6) and np.allclose(std, exact.std(0), atol=1e-6)
    rows = np.arange(0, 300, 2)
    assert np.allclose(channel_stats(images, rows)[0], images[rows].reshape(-1, 3).mean(0) / 255, atol=1e-6)
    monkeypatch.setattr(imagestore, "STATS_IMAGES", 60)
    sampled_mean, sampled_std = channel_stats(images)
    assert np.allclose(sampled_mean, exact.mean(0), atol=0.02) and np.allclose(sampled_std, exact.std(0), atol=0.02)


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_reading_every_row_keeps_resident_memory_flat_where_a_memory_map_grows(tmp_path):
    shape = (256, 256, 256, 3)  # 48 MiB of rows
    with open(tmp_path / "big.npy", "wb") as file:
        writer = imagestore.create(file, shape)
    writer.write(0, np.full((256, 256, 256, 3), 7, np.uint8))
    images = ImageFile(tmp_path / "big.npy")
    out = np.empty((16, *shape[1:]), np.uint8)
    before = resident_bytes()
    for start in range(0, 256, 16):
        images.read(np.arange(start, start + 16)[::-1], out=out)
    read_growth = resident_bytes() - before
    mapped = np.load(tmp_path / "big.npy", mmap_mode="r")
    before = resident_bytes()
    total = sum(int(mapped[start:start + 16].sum(dtype=np.int64)) for start in range(0, 256, 16))
    map_growth = resident_bytes() - before
    assert (out == 7).all() and total > 0
    assert read_growth < 8 * 2 ** 20      # a reused batch buffer, no more
    assert map_growth > 30 * 2 ** 20      # the pages a map touched stay resident
