"""Images that are not photos: DICOM scans, multi-band TIFFs and one file per channel.

Each becomes the same uint8 (size, size, channels) array a photo does (data.decode_file routes
the file here), so the image store, augmentation, TTA, predict and the Kaggle kernel never see the
difference. A DICOM keeps its full range (12-16 bits, rescaled by its slope and intercept to the
modality's units, e.g. Hounsfield units) until a window maps it to 0-255: the yaml's `window:`
([center, width], or several of them, one channel each, as CT solutions stack them), else the
file's own window, else the whole range its stored bits can hold. MONOCHROME1 scans store dark as
high values and are inverted after the window.
"""
from __future__ import annotations

import importlib
import io

import numpy as np
from PIL import Image

from .guards import windows_of
from .imagestore import fit_to_size

DICOM_MAGIC = b"DICM"       # bytes 128-131 of a DICOM file with the standard preamble
DICOM_MAGIC_AT = 128
DICOM_SUFFIXES = (".dcm", ".dicom")
TIFF_SIGNATURES = (b"II*\0", b"MM\0*")
INVERTED = "MONOCHROME1"    # photometric interpretation storing dark as high values


def is_dicom(raw: bytes, path: str) -> bool:
    return raw[DICOM_MAGIC_AT:DICOM_MAGIC_AT + 4] == DICOM_MAGIC or path.lower().endswith(DICOM_SUFFIXES)


def is_tiff(raw: bytes) -> bool:
    return raw.startswith(TIFF_SIGNATURES)


def reader(module: str):
    """pydicom or tifffile, imported by scan competitions only (a photo competition's Kaggle
    notebook never needs them); missing, each file says so."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"{module} is not installed (requirements.txt); in an offline notebook, attach a "
                         f"dataset with its wheel and pip install it --no-index") from None


def read_dicom(raw: bytes, pixels: bool = True):
    """The parsed DICOM dataset (its header alone unless `pixels`); a file pydicom cannot parse
    raises ValueError saying so."""
    pydicom = reader("pydicom")
    try:
        return pydicom.dcmread(io.BytesIO(raw), force=True, stop_before_pixels=not pixels)
    except Exception as error:  # noqa: BLE001 - a damaged file can make the parser raise anything
        raise ValueError(f"not a readable DICOM file ({type(error).__name__}: {error})") from None


def dicom_summary(dataset) -> str:
    """What a scan is, for init's and check's counts: "DICOM CT 12-bit MONOCHROME2" (the
    photometric interpretation last, as Pillow's mode ends a photo's)."""
    modality = getattr(dataset, "Modality", None) or "?"
    photometric = getattr(dataset, "PhotometricInterpretation", None) or "?"
    return f"DICOM {modality} {getattr(dataset, 'BitsStored', None) or '?'}-bit {photometric}"


def dicom_size(dataset) -> tuple[int, int]:
    return int(getattr(dataset, "Columns", 0) or 0), int(getattr(dataset, "Rows", 0) or 0)


def file_window(dataset) -> tuple[float, float] | None:
    """The first (center, width) the file carries (the tags may hold several values); None without."""
    from pydicom.multival import MultiValue
    values = [getattr(dataset, "WindowCenter", None), getattr(dataset, "WindowWidth", None)]
    if None in values:
        return None
    center, width = (float(v[0]) if isinstance(v, MultiValue) else float(v) for v in values)
    return (center, width) if width > 0 else None


def _pixels(dataset) -> np.ndarray:
    """The stored pixels in the modality's units (slope and intercept applied), as float64;
    a multi-frame scan gives its middle frame."""
    from pydicom.pixels import apply_modality_lut
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # noqa: BLE001 - no decoder for the transfer syntax, truncated data, ...
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax) or "unknown transfer syntax"
        raise ValueError(f"DICOM pixels cannot be decoded ({name}: {str(error).splitlines()[0]})") from None
    if int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[len(pixels) // 2]
    return np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)


def _stored_range(dataset) -> tuple[float, float]:
    """The whole range the stored bits can hold, in the modality's units: the window of a scan
    that names none (so every scan of a set maps alike, never by its own min and max)."""
    bits = int(getattr(dataset, "BitsStored", 16) or 16)
    signed = int(getattr(dataset, "PixelRepresentation", 0) or 0) == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
    intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return ends[0], ends[1]


def apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Values from center - width/2 (black) to center + width/2 (white), linearly, as uint8."""
    low = center - width / 2
    return (np.clip((values - low) / width, 0, 1) * 255).round().astype(np.uint8)


def dicom_planes(raw: bytes, windows: list[tuple[float, float]]) -> tuple[list[np.ndarray], str]:
    """A DICOM file as uint8 planes (one per window; RGB scans: their three) and its summary."""
    dataset = read_dicom(raw)
    summary = "{} {}x{}".format(dicom_summary(dataset), *dicom_size(dataset))
    values = _pixels(dataset)
    if values.ndim == 3:  # colour (a photo of skin, a slide): pydicom has made it RGB already
        return [np.clip(values[..., c], 0, 255).astype(np.uint8) for c in range(values.shape[-1])], summary
    if not windows:
        stored = _stored_range(dataset)
        windows = [file_window(dataset) or ((stored[0] + stored[1]) / 2, stored[1] - stored[0] or 1)]
    planes = [apply_window(values, center, width) for center, width in windows]
    if getattr(dataset, "PhotometricInterpretation", "") == INVERTED:
        planes = [255 - plane for plane in planes]
    return planes, summary


def scan_header(raw: bytes, path: str) -> tuple[tuple[int, int], str, str | None] | None:
    """((width, height), kind, window) of a DICOM file, or of a TIFF of other than one or three
    bands ("TIFF 4-band uint16"), from its header; None for anything else (a photo, for Pillow)."""
    if is_dicom(raw, path):
        dataset = read_dicom(raw, pixels=False)
        window = file_window(dataset)
        return dicom_size(dataset), dicom_summary(dataset), window and "[{:g}, {:g}]".format(*window)
    if not is_tiff(raw):
        return None
    tifffile = reader("tifffile")
    with tifffile.TiffFile(io.BytesIO(raw)) as tiff:
        page = tiff.pages[0]
        if page.samplesperpixel in (1, 3):
            return None
        return (page.imagewidth, page.imagelength), f"TIFF {page.samplesperpixel}-band {page.dtype}", None


def tiff_planes(raw: bytes) -> tuple[list[np.ndarray], str]:
    """A TIFF's bands (any count, 8 or 16 bits, or floats) as uint8 planes, and its summary.
    Integers are scaled by their type's range, floats in [0, 1] kept, other floats by the
    image's own min and max."""
    tifffile = reader("tifffile")
    try:
        array = tifffile.imread(io.BytesIO(raw))
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"truncated or damaged TIFF ({type(error).__name__}: {error})") from None
    if array.ndim == 2:
        array = array[..., None]
    elif array.ndim == 3 and array.shape[0] < min(array.shape[1:]):  # planar: bands first
        array = np.moveaxis(array, 0, -1)
    if array.ndim != 3:
        raise ValueError(f"a TIFF of shape {array.shape}: expected height x width x bands")
    summary = f"TIFF {array.shape[-1]}-band {array.dtype} {array.shape[1]}x{array.shape[0]}"
    return [to_uint8(array[..., band]) for band in range(array.shape[-1])], summary


def to_uint8(plane: np.ndarray) -> np.ndarray:
    if plane.dtype == np.uint8:
        return plane
    if np.issubdtype(plane.dtype, np.integer):
        info = np.iinfo(plane.dtype)
        return ((plane.astype(np.float64) - info.min) / (info.max - info.min) * 255).round().astype(np.uint8)
    plane = np.nan_to_num(plane.astype(np.float64))
    low, high = (0.0, 1.0) if plane.min() >= 0 and plane.max() <= 1 else (plane.min(), plane.max())
    return (np.clip((plane - low) / max(high - low, 1e-12), 0, 1) * 255).round().astype(np.uint8)


def stack_planes(planes: list[np.ndarray], channels: int, size: int, resize: str, what: str) -> np.ndarray:
    """uint8 planes, each resized by the policy, as (size, size, channels): one plane fills
    three channels (a gray scan for an RGB stem); otherwise the counts must match."""
    if len(planes) == 1 and channels == 3:
        planes = planes * 3
    if len(planes) != channels:
        raise ValueError(f"{what} gives {len(planes)} channel(s), but channels is {channels}: set channels: "
                         f"{len(planes)} in the competition yaml")
    return np.stack([np.asarray(fit_to_size(Image.fromarray(plane), size, resize)) for plane in planes], -1)


def decode_scan(raw: bytes, path: str, channels: int, size: int, resize: str,
                window=None) -> tuple[np.ndarray, str] | None:
    """(uint8 (size, size, channels), its summary) for a DICOM file, or a TIFF whose bands Pillow
    does not read as gray or RGB (channels other than 1 and 3); None: a photo, for Pillow."""
    if is_dicom(raw, path):
        planes, summary = dicom_planes(raw, windows_of(window))
    elif is_tiff(raw) and channels not in (1, 3):
        planes, summary = tiff_planes(raw)
    else:
        return None
    return stack_planes(planes, channels, size, resize, summary), summary


DICOM_DEFAULTS = {"Modality": "CT", "PhotometricInterpretation": "MONOCHROME2", "SamplesPerPixel": 1,
                  "BitsAllocated": 16, "BitsStored": 12, "HighBit": 11, "PixelRepresentation": 0,
                  "RescaleSlope": 1, "RescaleIntercept": 0}  # dicom_bytes' tags: a 12-bit CT slice


def dicom_bytes(pixels: np.ndarray, syntax: str | None = None, **tags) -> bytes:
    """A DICOM file of unsigned 16-bit `pixels` (rows x columns), for the tests and bench/dicom.py:
    known content, written by pydicom as a scanner would. `tags` override DICOM_DEFAULTS (e.g.
    PhotometricInterpretation="MONOCHROME1", WindowCenter=40, WindowWidth=400); `syntax` is a
    transfer syntax UID to compress to (pydicom encodes RLE itself, JPEG 2000 with
    pylibjpeg-openjpeg)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = pixels.shape
    for tag, value in {**DICOM_DEFAULTS, **tags}.items():
        setattr(dataset, tag, value)
    dataset.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    if syntax is not None:
        dataset.compress(syntax)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
