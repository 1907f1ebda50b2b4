"""What a competition's downloaded files hold, found by looking: the sample submission and its
columns, the train and test CSVs, the layout, where the images are and how ids name them, and
the images' sizes and modes. `init` turns a Survey into a competition yaml.
"""
from __future__ import annotations

import io
import statistics
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd
from PIL import Image

from .errors import PipelineError
from .files import DataDir, examples
from .layout import class_folders, empty_class_folders, is_image_name
from .metadata import NUMBER, fit_column
from .scans import scan_header

SAMPLED_IDS = 200        # ids looked up to find the image folder and name template
SAMPLED_IMAGES = 300     # images whose headers give the size and mode statistics
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "MONOCHROME1", "MONOCHROME2"}  # + DICOM's
SIDEWAYS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


@dataclass
class Images:
    """Sizes, modes and formats of a sample of images (headers only)."""
    sizes: list[tuple[int, int]] = field(default_factory=list)   # upright (width, height)
    modes: Counter = field(default_factory=Counter)               # "JPEG RGB" -> count
    unreadable: list[str] = field(default_factory=list)
    windows: Counter = field(default_factory=Counter)             # DICOM: "[40, 400]" or "none" -> count

    def gray(self) -> bool:
        return bool(self.modes) and all(key.split(" ")[-1] in GRAY_MODES for key in self.modes)

    def bands(self) -> int:
        """The most bands a multi-band TIFF of the sample has; 0 when there is none."""
        return max((int(key.split(" ")[1].removesuffix("-band")) for key in self.modes
                    if key.startswith("TIFF ") and key.split(" ")[1].endswith("-band")), default=0)

    def describe(self) -> str:
        if not self.sizes:
            return "no readable images sampled"
        widths, heights = zip(*self.sizes)
        def spread(values):
            return f"{min(values)}-{max(values)} (median {statistics.median(values):g})"
        windows = sum(self.windows.values()) and "; DICOM windows " + examples(
            [f"{k} x{n}" for k, n in self.windows.most_common()])
        return (f"{len(self.sizes)} sampled: width {spread(widths)}, height {spread(heights)}; "
                f"{examples([f'{k} x{n}' for k, n in self.modes.most_common()])}{windows or ''}")


@dataclass
class Survey:
    """Everything `init` found, with the notes the user should confirm."""
    sample_csv: str
    sample: pd.DataFrame
    id_column: str
    label_column: str
    layout: str                        # csv | folders
    train_csv: str | None              # csv layout
    test_csv: str | None
    train_images: str
    test_images: str
    train_template: str
    test_template: str
    train_ids: list[str]
    train_labels: list[str]
    images: Images
    notes: list[str] = field(default_factory=list)
    channel_files: list[str] | None = None  # one file per channel: their templates (channel_set)
    metadata: dict[str, str] = field(default_factory=dict)  # columns of both CSVs besides the id and
                                                             # label -> what they hold (metadata.py)


def shortest_key(data: DataDir, path: str, keep: int = 1) -> str:
    """The shortest tail of `path`, of at least `keep` parts, that still finds the same file
    (a zip's members can carry leading folders: NAME.zip holding NAME/train/1.png)."""
    parts = path.split("/")
    for start in range(len(parts) - keep, 0, -1):
        tail = "/".join(parts[start:])
        if data.exists(tail) and data.describe(tail) == data.describe(path):
            return tail
    return path


def shortest_folder(data: DataDir, folder: str, example: str) -> str:
    """`folder` with leading parts dropped while `folder/example` still finds the same file;
    the folder's own name stays."""
    if not folder:
        return folder
    full = shortest_key(data, f"{folder}/{example}", keep=len(example.split("/")) + 1)
    return full[:-len(example)].rstrip("/")


def _find_sample(data: DataDir, csvs: list[str]) -> str:
    named = [path for path in csvs if "sample" in path.lower().rpartition("/")[2]] or \
            [path for path in csvs if "submission" in path.lower().rpartition("/")[2]]
    if not named:
        raise PipelineError(f"No sample submission found in {data.root} (a CSV named like "
                            f"sample_submission.csv; CSVs seen: {examples(csvs) or 'none'}). init "
                            f"needs it for the test ids and the submission's format: download it too.")
    return min(named, key=len)


def _label_column(train: pd.DataFrame, id_column: str, sample: pd.DataFrame) -> str | None:
    """The train column the submission fills: the sample's own label column, or, when the
    sample has one column per class, the column whose values are those classes."""
    others = [c for c in sample.columns if c != id_column]
    if len(others) == 1 and others[0] in train.columns:
        return others[0]
    candidates = [c for c in train.columns if c != id_column]
    for column in candidates:
        if len(others) > 1 and set(train[column]) <= set(others):
            return column
    return candidates[0] if len(candidates) == 1 else None


def _train_table(data: DataDir, csvs: list[str], sample_csv: str, sample: pd.DataFrame):
    """(path, frame, id column, label column) of the CSV that labels the training images, or None."""
    id_column = sample.columns[0]
    for path in sorted(csvs, key=lambda p: ("train" not in p.lower(), len(p))):
        if path == sample_csv or "test" in path.lower().rpartition("/")[2]:
            continue
        try:
            frame = data.read_csv(path)
        except PipelineError:
            continue
        own_id = id_column if id_column in frame.columns else frame.columns[0]
        label = _label_column(frame, own_id, sample)
        if label and len(frame.columns) >= 2:
            return path, frame, own_id, label
    return None


def _tails(images: list[str]) -> dict[str, list[str]]:
    """Every tail of every image path, with and without its extension -> the paths."""
    index: dict[str, list[str]] = {}
    for path in images:
        parts = path.split("/")
        for start in range(len(parts)):
            tail = "/".join(parts[start:])
            index.setdefault(tail, []).append(path)
            stem, dot, _ = tail.rpartition(".")
            if dot and "/" not in tail[len(stem):]:
                index.setdefault(stem, []).append(path)
                if "_" in stem.rpartition("/")[2]:  # "{id}_red.png": one file of a channel set
                    index.setdefault(stem.rpartition("_")[0], []).append(path)
    return index


def locate(ids: list[str], index: dict[str, list[str]], split: str) -> tuple[str, str, int]:
    """(folder, template, ids found) that name the most of `ids`' images; the folder whose name
    holds `split` ("train" or "test") wins a tie."""
    votes, step = _votes(ids, index)
    if not votes:
        return "", "", 0
    best = max(votes, key=lambda key: (votes[key], split in key[0].lower(), -len(key[0])))
    return best[0], best[1], votes[best] * step


def _votes(ids: list[str], index: dict[str, list[str]]) -> tuple[Counter, int]:
    """(folder, template) -> how many of the sampled ids it names, and the sampling step."""
    step = max(1, len(ids) // SAMPLED_IDS)
    votes = Counter()
    for image_id in ids[::step]:
        for path in set(index.get(image_id, [])):
            folder, _, rest = path.rpartition(image_id)
            if folder.endswith("/") or not folder:
                votes[(folder.rstrip("/"), "{id}" + rest)] += 1
    return votes, step


def channel_set(ids: list[str], index: dict[str, list[str]], folder: str, template: str) -> list[str] | None:
    """The templates of one file per channel ("{id}_red.png", "{id}_green.png", ...) when the
    chosen `template` is one of two or more that name every id alike in `folder`; red, green and
    blue first, in that order (what an RGB stem expects), then the others by name. None otherwise."""
    if not template.startswith("{id}_"):
        return None
    votes, _ = _votes(ids, index)
    suffix = template.rpartition(".")[2]
    siblings = [t for (f, t), n in votes.items() if f == folder and n == votes[(folder, template)]
                and t.startswith("{id}_") and t.endswith("." + suffix) and "/" not in t]
    if len(siblings) < 2 or any(t.startswith("{id}.") for f, t in votes if f == folder):
        return None
    colours = [f"{{id}}_{colour}.{suffix}" for colour in ("red", "green", "blue")]
    return [t for t in colours if t in siblings] + sorted(t for t in siblings if t not in colours)


def _class_folder_root(images: list[str]) -> str | None:
    """The folder whose sub-folders hold the images as classes (two or more), preferring one
    named like 'train', then the one holding the most images."""
    classes: dict[str, set] = {}
    counts = Counter()
    for path in images:
        parts = path.split("/")
        for depth in range(1, len(parts) - 1):
            root = "/".join(parts[:depth])
            classes.setdefault(root, set()).add(parts[depth])
            counts[root] += 1
    candidates = [root for root, names in classes.items() if len(names) >= 2]
    if not candidates:
        return None
    return max(candidates, key=lambda f: ("train" in f.rpartition("/")[2].lower(), counts[f], -len(f)))


def _test_csv(data: DataDir, csvs: list[str], sample_csv: str, id_column: str) -> str | None:
    """A CSV named like 'test' that lists the ids (optional: the sample lists them too)."""
    for path in sorted(csvs, key=len):
        if path != sample_csv and "test" in path.lower().rpartition("/")[2]:
            try:
                if id_column in data.read_csv(path).columns:
                    return path
            except PipelineError:
                continue
    return None


def _metadata_columns(data: DataDir, table, test_csv: str | None, taken: tuple[str, str]) -> dict[str, str]:
    """The train CSV's columns that the test CSV has too, besides the id and label: what a
    model could read beside the image (metadata:), each with what it holds."""
    if table is None or test_csv is None:
        return {}
    _, frame, train_id, _ = table
    test_columns = set(data.read_csv(test_csv).columns)
    found = {}
    for column in frame.columns:
        if column in test_columns and column not in (train_id, *taken):
            code = fit_column(column, frame[column])
            found[column] = "numbers" if code.kind == NUMBER else f"{len(code.categories)} categories"
    return found


def image_stats(data: DataDir, paths: list[str]) -> Images:
    stats = Images()
    step = max(1, len(paths) // SAMPLED_IMAGES)
    for path in paths[::step]:
        try:
            raw = data.read_bytes(path)
            scan = scan_header(raw, path)
            if scan is not None:
                stats.sizes.append(scan[0])
                stats.modes[scan[1]] += 1
                stats.windows[scan[2] or "none"] += scan[1].startswith("DICOM")
                continue
            with Image.open(io.BytesIO(raw)) as image:
                size = image.size
                if image.getexif().get(0x0112, 1) in SIDEWAYS:
                    size = size[::-1]
                stats.sizes.append(size)
                stats.modes[f"{image.format} {image.mode}"] += 1
        except Exception as error:  # noqa: BLE001 - a hostile file (a decompression bomb) may raise anything
            stats.unreadable.append(f"{path} ({str(error).rstrip('.') or type(error).__name__})")
    return stats


@dataclass
class Training:
    """Where the training labels and images are."""
    layout: str
    csv: str | None
    ids: list[str]
    labels: list[str]
    label_column: str
    folder: str
    template: str


def _csv_training(data: DataDir, table, index: dict, id_column: str, notes: list[str]) -> Training:
    train_csv, frame, train_id, label_column = table
    if train_id != id_column:
        notes.append(f"{train_csv} names its ids {train_id!r}, the sample {id_column!r}: rename one.")
    ids, labels = frame[train_id].tolist(), frame[label_column].tolist()
    folder, template, _ = locate(ids, index, "train")
    if not template:
        raise PipelineError(f"No image in {data.root} is named by the ids of {train_csv} (e.g. "
                            f"{examples(ids[:3])}): download the training images.")
    return Training("csv", train_csv, ids, labels, label_column, folder, template)


def _folder_training(data: DataDir, images: list[str], sample: pd.DataFrame, notes: list[str]) -> Training:
    root = _class_folder_root(images)
    if root is None:
        raise PipelineError(f"No training labels found in {data.root}: no CSV besides the sample "
                            f"has an id and a label column, and no folder holds one folder per class.")
    folders = class_folders([path[len(root) + 1:] for path in images if path.startswith(root + "/")])
    empty = empty_class_folders(data, root, folders)
    if empty:
        notes.append(empty)
    rows = sorted((path, label) for label, paths in folders.items() for path in paths)
    others = list(sample.columns[1:])
    return Training("folders", None, [path for path, _ in rows], [label for _, label in rows],
                    others[0] if len(others) == 1 else "label", root, "{id}")


def survey(data: DataDir) -> Survey:
    """Look at every file of the data folder (and its zips) and describe the competition."""
    files = data.walk()
    csvs = [path for path in files if path.lower().endswith(".csv")]
    images = [path for path in files if is_image_name(path)]
    sample_csv = _find_sample(data, csvs)
    sample = data.read_csv(sample_csv)
    id_column, test_ids, notes = sample.columns[0], sample[sample.columns[0]].tolist(), []
    index = _tails(images)
    test_folder, test_template, found = locate(test_ids, index, "test")
    if not test_template:
        raise PipelineError(f"No image in {data.root} is named by the sample's ids (e.g. "
                            f"{examples(test_ids[:3])} in column {id_column!r} of {sample_csv}): "
                            f"download the test images, or write the competition yaml by hand.")
    if found < len(test_ids):
        notes.append(f"only about {found} of {len(test_ids)} test ids have an image in {test_folder}/: "
                     f"`./run.sh check` lists the missing ones.")
    table = _train_table(data, csvs, sample_csv, sample)
    train = _csv_training(data, table, index, id_column, notes) if table is not None else \
        _folder_training(data, images, sample, notes)
    test_csv = _test_csv(data, csvs, sample_csv, id_column)
    train_paths = [f"{train.folder}/{train.template.format(id=i)}".lstrip("/") for i in train.ids]
    metadata = _metadata_columns(data, table, test_csv, (id_column, train.label_column))
    return Survey(
        sample_csv=shortest_key(data, sample_csv), sample=sample, id_column=id_column,
        label_column=train.label_column, layout=train.layout,
        train_csv=train.csv and shortest_key(data, train.csv),
        test_csv=test_csv and shortest_key(data, test_csv),
        train_images=shortest_folder(data, train.folder, train.template.format(id=train.ids[0])),
        test_images=shortest_folder(data, test_folder, test_template.format(id=test_ids[0])),
        train_template=train.template, test_template=test_template, train_ids=train.ids,
        train_labels=train.labels, images=image_stats(data, train_paths), notes=notes,
        channel_files=channel_set(test_ids, index, test_folder, test_template), metadata=metadata)
