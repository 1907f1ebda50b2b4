"""Layouts: which files hold a competition's images, and what names and labels them.

- `csv` (the default): `train_csv` lists each training image's id and label; the image is
  `train_images/` + the train name template filled with the id.
- `folders`: no train CSV; each folder inside `train_images` is a class and holds its images
  (at any depth): an image's id is its path inside `train_images`, its label the folder's name.

Test images are `test_images/` + the test name template filled with each id the sample
submission lists (checked against `test_csv` when there is one). An id may be a plain name, a
file name with its extension, or a relative path inside the image folder (template "{id}"):
only absolute paths, '..' and control characters are refused. Every reader, in memory or
streaming, goes ids -> `image_paths` -> `DataDir.read_bytes`.
"""
from __future__ import annotations

import re
from pathlib import PurePosixPath, PureWindowsPath

import pandas as pd

from .config import Competition
from .errors import PipelineError
from .files import DataDir, Problems, examples

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".dcm", ".dicom")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_image_name(path: str) -> bool:
    return path.lower().endswith(IMAGE_SUFFIXES)


def unsafe_ids(ids: pd.Series) -> pd.Series:
    """Which ids cannot name a file inside an image folder: control characters, absolute paths
    (also Windows ones), '..' anywhere in the path, or no file name at all ('.', 'a/')."""
    def unsafe(image_id: str) -> bool:
        parts = image_id.split("/")
        return (bool(CONTROL.search(image_id)) or PurePosixPath(image_id).is_absolute()
                or bool(PureWindowsPath(image_id).drive) or image_id.startswith("\\")
                or ".." in parts or parts[-1] in ("", "."))
    return ids.map(unsafe).astype(bool)


def template(comp: Competition, split: str) -> tuple[str, str]:
    """(setting name, template) naming a `split` ("train" or "test") image inside its folder.
    In the folders layout a training id is already the file's path."""
    if split == "train" and comp.layout == "folders":
        return "layout: folders", "{id}"
    own = comp.train_template if split == "train" else comp.test_template
    return (f"{split}_template", own) if own else ("image_template", comp.image_template)


def image_paths(comp: Competition, split: str, folder: str, ids: list[str]) -> list:
    """Relative paths (inside the data folder or its zips) of the images of `ids`; with
    channel_files, a tuple of paths (one per channel) for each id."""
    setting, pattern = template(comp, split)
    prefix = f"{folder.strip('/')}/" if folder.strip("/.") else ""
    try:
        if comp.channel_files:
            setting, pattern = "channel_files", comp.channel_files
            return [tuple(prefix + name.format(id=image_id) for name in comp.channel_files) for image_id in ids]
        return [prefix + pattern.format(id=image_id) for image_id in ids]
    except (KeyError, IndexError, ValueError):
        raise PipelineError(f"{setting} {pattern!r} in competition/{comp.name}.yaml: "
                            f"write {{id}} where the id goes, e.g. '{{id}}.png'.") from None


def files_of(path) -> tuple[str, ...]:
    """The files holding one image: its path, or each of its channel files (image_paths)."""
    return path if isinstance(path, tuple) else (path,)


def class_folders(paths: list[str]) -> dict[str, list[str]]:
    """Class folder name -> its images, from the paths of the files inside a folder."""
    classes: dict[str, list[str]] = {}
    for path in paths:
        label, sep, _ = path.partition("/")
        if sep and is_image_name(path):
            classes.setdefault(label, []).append(path)
    return classes


def folder_rows(comp: Competition, data: DataDir, problems: Problems) -> pd.DataFrame | None:
    """The folders layout's training table: one row (id = path inside train_images, label =
    its class folder) per image; None, reported, when there are no class folders."""
    folder = comp.train_images
    paths = data.walk(folder)
    classes = class_folders(paths)
    where = data.describe(folder)
    if not classes:
        problems.report(f"{where}: no class folders holding images (layout: folders expects "
                        f"{folder}/<class>/<image>). Check train_images in competition/{comp.name}.yaml.")
        return None
    empty = empty_class_folders(data, folder, classes)
    if empty:
        problems.warn(empty)
    left_out = [path for path in paths if "/" not in path or not is_image_name(path)]
    if left_out:
        problems.note(f"{len(left_out)} file(s) in {where} are not images inside a class folder "
                      f"and are left out: {examples(left_out)}.")
    rows = [(path, label) for label, paths in classes.items() for path in paths]
    return pd.DataFrame(sorted(rows), columns=[comp.id_column, comp.label_column])


def empty_class_folders(data: DataDir, folder: str, classes: dict) -> str | None:
    """A warning naming the class folders of `folder` that hold no image (empty, or only hidden
    or other files): their class would vanish without a word. None when there are none."""
    empty = [name for name in data.subfolders(folder) if name not in classes]
    if not empty:
        return None
    return (f"{len(empty)} class folder(s) in {data.describe(folder)} hold no image and are left out "
            f"(no such class is trained): {examples(empty)}. Put their images there, or delete the "
            f"folder(s) if those classes are not wanted.")


def folders_hint(comp: Competition, data: DataDir) -> str:
    """Advice when the train CSV is missing but train_images looks like one folder per class."""
    classes = class_folders(data.walk(comp.train_images))
    if len(classes) < 2:
        return ""
    return (f"{comp.train_images}/ holds one folder per class ({examples(sorted(classes))}): that is "
            f"the folder-per-class layout. Set `layout: folders` in competition/{comp.name}.yaml, or "
            f"let `./run.sh init {comp.name} --force` describe the files.")
