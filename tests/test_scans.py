"""Inputs that are not photos (issue 26): DICOM scans, multi-band TIFFs and one file per channel.

Each decodes to the uint8 array a photo would (rescale, window, MONOCHROME1, the 16-bit range
kept until the window), is refused by name when broken, and goes through init -> check -> train
-> predict with no edits."""
import io

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
import yaml
import pydicom
from pydicom.uid import JPEG2000Lossless, MPEG2MPML, RLELossless

from compete.augment import PhotoTransform
from compete.cli import main
from compete.config import Member, load_competition
from compete.data import decode_file
from compete.errors import PipelineError
from compete.files import DataDir
from compete.models import NetSpec, adapt_stem, build_model
from compete.scans import decode_scan, dicom_bytes

from helpers import image_bytes, pattern, TINY_PRESET

SIDE = 16  # pixels a side of the generated scans


def decoded(raw: bytes, channels: int = 1, window=None, name: str = "scan.dcm") -> np.ndarray:
    array, _ = decode_scan(raw, name, channels, SIDE, "squash", window)
    return array


def ramp(top: int = 4095, side: int = SIDE) -> np.ndarray:
    """A side x side scan whose values climb evenly from 0 to `top`."""
    return np.linspace(0, top, side * side).round().reshape(side, side).astype(np.uint16)


def test_rescale_then_window_maps_the_scan_units_to_0_255():
    pixels = ramp()
    raw = dicom_bytes(pixels, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=1000, WindowWidth=2000)
    units = pixels * 2.0 - 1024  # what the scanner measured, e.g. Hounsfield units
    expected = (np.clip((units - 0) / 2000, 0, 1) * 255).round()
    assert np.array_equal(decoded(raw)[..., 0], expected)


def test_the_yaml_window_wins_over_the_file_and_a_narrow_one_sees_what_8_bits_would_lose():
    pixels = np.full((SIDE, SIDE), 2000, np.uint16)
    pixels[:, SIDE // 2:] = 2010  # ten units apart: one grey level after a 12-bit -> 8-bit cut
    raw = dicom_bytes(pixels, WindowCenter=2048, WindowWidth=4096)
    assert np.ptp(decoded(raw)) <= 1
    narrow = decoded(raw, window=[2005, 20])
    assert narrow[0, 0, 0] < 80 and narrow[0, -1, 0] > 175


def test_monochrome1_is_inverted_after_the_window():
    pixels = ramp()
    plain, inverted = (decoded(dicom_bytes(pixels, PhotometricInterpretation=kind, WindowCenter=2048, WindowWidth=4096))
                       for kind in ("MONOCHROME2", "MONOCHROME1"))
    assert np.array_equal(inverted, 255 - plain)


def test_several_windows_stack_as_channels():
    raw = dicom_bytes(ramp(), WindowCenter=2048, WindowWidth=4096)
    windows = [[500, 1000], [2048, 4096], [3500, 1000]]
    stacked = decoded(raw, channels=3, window=windows)
    for c, window in enumerate(windows):
        assert np.array_equal(stacked[..., c], decoded(raw, window=window)[..., 0])
    assert not np.array_equal(stacked[..., 0], stacked[..., 2])


def test_without_any_window_the_stored_bits_range_maps_alike_for_every_scan():
    dark = decoded(dicom_bytes(ramp(top=1000)))
    assert dark.max() == round(1000 / 4095 * 255)  # never stretched to the scan's own maximum


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_transfer_syntaxes_decode_to_the_same_image(syntax):
    pixels = ramp(side=2 * SIDE)  # openjpeg's default resolutions need 32 pixels a side
    assert np.array_equal(decoded(dicom_bytes(pixels, syntax=syntax)), decoded(dicom_bytes(pixels)))


def test_a_damaged_scan_says_why(tmp_path):
    raw = dicom_bytes(ramp())
    (tmp_path / "cut.dcm").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(ValueError, match="DICOM pixels cannot be decoded"):
        decode_file(DataDir(tmp_path), 1, SIDE, "squash", "cut.dcm")


def test_a_transfer_syntax_without_a_decoder_is_named():
    scan = pydicom.dcmread(io.BytesIO(dicom_bytes(ramp(), syntax=RLELossless)))
    scan.file_meta.TransferSyntaxUID = MPEG2MPML  # a video syntax no installed plug-in decodes
    relabelled = io.BytesIO()
    scan.save_as(relabelled)
    with pytest.raises(ValueError, match=r"DICOM pixels cannot be decoded \(MPEG2 Main Profile"):
        decoded(relabelled.getvalue())


def four_band(rng, label: int, planar: bool = False, dtype=np.uint16) -> bytes:
    """A 4-band TIFF (RGB + near infrared, 16 bits) whose fourth band alone carries the class."""
    bands = rng.integers(0, 20000, (SIDE, SIDE, 4)).astype(dtype)
    bands[..., 3] = pattern(label, 1, SIDE, rng)[..., 0].astype(dtype) * 257
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.moveaxis(bands, -1, 0) if planar else bands,
                     photometric="minisblack", planarconfig="separate" if planar else "contig")
    return buffer.getvalue()


def test_a_4_band_tiff_keeps_every_band_interleaved_or_planar():
    contiguous = decode_scan(four_band(np.random.default_rng(0), 1), "a.tif", 4, SIDE, "squash", None)[0]
    planar = decode_scan(four_band(np.random.default_rng(0), 1, planar=True), "a.tif", 4, SIDE, "squash", None)[0]
    assert contiguous.shape == (SIDE, SIDE, 4) and np.array_equal(contiguous, planar)
    assert contiguous[..., 3].max() == 220  # 220 * 257 in 16 bits: the range scaled, not clipped


def test_a_band_count_other_than_channels_is_named():
    with pytest.raises(ValueError, match="4 channel.*channels is 5"):
        decode_scan(four_band(np.random.default_rng(0), 1), "a.tif", 5, SIDE, "squash", None)


@pytest.mark.parametrize("settings, says", [
    ({"channels": 65}, "from 1 to 64"),
    ({"window": [40, -400]}, "positive width"),
    ({"window": [[40, 400], [500, 2000]], "channels": 3}, "set channels: 2"),
    ({"channel_files": ["{id}_red.png", "{id}_green.png"], "channels": 3}, "must list 3"),
    ({"channel_files": ["../{id}_red.png"], "channels": 1}, "leaves the competition's data folder"),
    ({"channel_files": ["{id}_a.dcm", "{id}_b.dcm"], "channels": 2, "window": [[0, 1], [2, 3]]}, "one window"),
])
def test_scan_settings_that_cannot_describe_an_image_are_refused_on_load(workspace, settings, says):
    (workspace / "competition" / "scan.yaml").write_text(yaml.safe_dump(settings))
    with pytest.raises(PipelineError, match=says):
        load_competition("scan")


def test_a_pretrained_stem_takes_six_bands_as_two_copies_of_rgb():
    import torchvision
    torch.manual_seed(0)
    net = torchvision.models.get_model("mobilenet_v2", weights=None).eval()
    rgb = torch.rand(2, 3, 32, 32)
    expected = net(rgb)
    adapt_stem(net, 6)
    assert torch.allclose(net(torch.cat([rgb, rgb], 1)), expected, atol=1e-5)


def test_members_built_for_many_bands_normalise_each_band():
    spec = NetSpec(channels=5, image_size=16, num_classes=3, mean=[0.1, 0.2, 0.3, 0.4, 0.5], std=[0.2] * 5)
    own = build_model(Member(model="cnn", model_args={"widths": [8]}), spec)
    library = build_model(Member(model="tv/mobilenet_v2", normalize="imagenet"), spec)
    assert own.mean.flatten().tolist() == pytest.approx(spec.mean)
    assert library.mean.shape == (1, 5, 1, 1) and library.net_channels == 5
    assert library(torch.rand(2, 5, 16, 16)).shape == (2, 3)


def test_photo_augmentation_runs_per_band():
    member = Member(crop_scale=0.5, rotate=10, jitter=0.3)
    batch = np.random.default_rng(0).integers(0, 255, (3, SIDE, SIDE, 5), dtype=np.uint8)
    out = PhotoTransform(member, SIDE)(batch, seed=1)
    assert out.shape == batch.shape and not np.array_equal(out, batch)


# --- each kind through init -> check -> train -> predict ---------------------------------------

def write_competition(folder, n_train: int, n_test: int, write) -> list[str]:
    """train.csv, sample_submission.csv and the files `write(split, id, label)` puts in
    train/ and test/; returns the test ids."""
    rng = np.random.default_rng(0)
    labels = [str(i % 3) for i in range(n_train)]
    train = pd.DataFrame({"id": [f"t{i}" for i in range(n_train)], "label": labels})
    test_ids = [f"s{i}" for i in range(n_test)]
    for split, ids, classes in (("train", train["id"], labels),
                                ("test", test_ids, rng.integers(0, 3, n_test).astype(str))):
        (folder / split).mkdir(parents=True)
        for image_id, label in zip(ids, classes):
            for name, content in write(rng, image_id, int(label)).items():
                (folder / split / name).write_bytes(content)
    train.to_csv(folder / "train.csv", index=False)
    pd.DataFrame({"id": test_ids, "label": "0"}).to_csv(folder / "sample_submission.csv", index=False)
    return test_ids


def scan_of(rng, image_id: str, label: int) -> dict:
    """A 12-bit CT-like scan of the class pattern, in Hounsfield-like units (slope 1, intercept
    -1024); every third one MONOCHROME1 (stored inverted), every fifth RLE-compressed."""
    number = int(image_id[1:])
    values = pattern(label, 1, SIDE, rng)[..., 0].astype(np.uint16) * 16
    inverted = number % 3 == 0
    raw = dicom_bytes(4080 - values if inverted else values, syntax=RLELossless if number % 5 == 0 else None,
                      PhotometricInterpretation="MONOCHROME1" if inverted else "MONOCHROME2",
                      RescaleIntercept=-1024, WindowCenter=1016, WindowWidth=4080)  # back to 0..255
    return {f"{image_id}.dcm": raw}


def end_to_end(workspace, capsys, data, test_ids) -> str:
    """init, check, train (1 epoch) and predict with no edits; init's output."""
    assert main(["init", "comp", "--data", str(data)]) == 0
    said = capsys.readouterr().out
    comp_yaml = workspace / "competition" / "comp.yaml"
    written = yaml.safe_load(comp_yaml.read_text())
    written["presets"]["tiny"] = TINY_PRESET
    comp_yaml.write_text(yaml.safe_dump(written))
    assert main(["check", "comp", "--data", str(data)]) == 0, capsys.readouterr().out
    for command in (["train", "--preset", "tiny", "--epochs", "1"], ["predict"]):
        assert main([command[0], "comp", "--data", str(data), "--device", "cpu", *command[1:]]) == 0
    assert main(["report", "comp"]) == 0  # its error grid shows the images
    submission = pd.read_csv(workspace / "submissions" / "comp" / "submission.csv", dtype=str)
    assert submission["id"].tolist() == test_ids and set(submission["label"]) <= {"0", "1", "2"}
    return said


def test_the_report_shows_many_bands_as_their_first_three(tmp_path):
    from compete.plots import plot_errors
    images = np.random.default_rng(0).integers(0, 255, (4, SIDE, SIDE, 7), dtype=np.uint8)
    probs = np.full((4, 2), 0.5)
    assert plot_errors(images, np.array([0, 1, 0, 1]), probs, ["a", "b"], tmp_path / "errors.png").is_file()


@pytest.mark.slow
def test_dicom_competition_from_init_to_submission(workspace, capsys):
    data = workspace / "inputs" / "comp"
    test_ids = write_competition(data, 24, 6, scan_of)
    said = end_to_end(workspace, capsys, data, test_ids)
    assert "DICOM CT 12-bit MONOCHROME1" in said and "DICOM CT 12-bit MONOCHROME2" in said
    assert "DICOM windows [1016, 4080]" in said
    assert load_competition("comp").channels == 1


@pytest.mark.slow
def test_four_band_tiff_competition_from_init_to_submission(workspace, capsys):
    data = workspace / "inputs" / "comp"
    test_ids = write_competition(data, 24, 6, lambda rng, i, label: {f"{i}.tif": four_band(rng, label)})
    said = end_to_end(workspace, capsys, data, test_ids)
    assert "TIFF 4-band uint16" in said and load_competition("comp").channels == 4


def test_check_names_a_damaged_scan_and_why(workspace, capsys):
    data = workspace / "inputs" / "comp"
    write_competition(data, 12, 3, scan_of)
    (data / "train" / "t4.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    spec = {"image_template": "{id}.dcm", "image_size": SIDE}
    (workspace / "competition" / "comp.yaml").write_text(yaml.safe_dump(spec))
    assert main(["check", "comp"]) != 0
    out = capsys.readouterr().out
    assert "t4.dcm (id 't4')" in out and "DICOM" in out


def channel_files_of(rng, image_id: str, label: int) -> dict:
    """Human Protein Atlas style: one gray PNG per stain; only the green one carries the class."""
    green = pattern(label, 1, SIDE, rng)
    noise = {color: rng.integers(0, 60, (SIDE, SIDE, 1), dtype=np.uint8) for color in ("red", "blue", "yellow")}
    return {f"{image_id}_{color}.png": image_bytes(green if color == "green" else noise[color])
            for color in ("red", "green", "blue", "yellow")}


def test_channel_files_stack_in_their_order(workspace):
    data = workspace / "inputs" / "comp"
    write_competition(data, 3, 1, channel_files_of)
    files = tuple(f"train/t1_{color}.png" for color in ("red", "green", "blue", "yellow"))
    array, _ = decode_file(DataDir(data), 4, SIDE, "squash", files)
    green, _ = decode_file(DataDir(data), 1, SIDE, "squash", files[1])
    assert array.shape == (SIDE, SIDE, 4) and np.array_equal(array[..., 1], green[..., 0])


@pytest.mark.slow
def test_channel_files_competition_from_init_to_submission(workspace, capsys):
    data = workspace / "inputs" / "comp"
    test_ids = write_competition(data, 24, 6, channel_files_of)
    end_to_end(workspace, capsys, data, test_ids)
    comp = load_competition("comp")
    assert comp.channels == 4
    assert comp.channel_files == [f"{{id}}_{color}.png" for color in ("red", "green", "blue", "yellow")]
    (data / "test" / "s2_yellow.png").unlink()
    assert main(["check", "comp"]) != 0
    assert "s2_yellow.png not found" in capsys.readouterr().out
