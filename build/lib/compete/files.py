"""Competition files as downloaded: folders or zips, read as bytes or CSV text.

A data folder may hold `train/` and `test/` image folders, or the zips the sites hand out
(`train.zip` holding `train.csv` and `train/<id>.png`, ...), or one `NAME.zip` holding those
zips. Every file is looked up by its relative path, first on disk, then inside any zip of the
folder, so nothing needs unzipping: a zip counts as a folder named after it (`train.zip` holding
`1.png` serves `train/1.png`), and a zip inside a zip is copied out once into the cache folder
(never into the data folder, which may be read-only) and read like the others.

Problems found on the way go to a `Problems`: the first raises a PipelineError, unless a
`./run.sh check` is collecting them all.
"""
from __future__ import annotations

import codecs
import hashlib
import io
import os
import shutil
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .atomic import write_atomically
from .config import PipelineError, cache_dir, inputs_dir

DELIMITERS = ";\t|"  # recognised from the header line when it holds no comma
EXAMPLES = 5         # rows or files named in one message; the rest are counted
ZIP_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError)
DEFAULT_COMPETITION = "digits"  # the embedded one, written on first use
NESTED_ZIPS = 2      # how deep zips inside zips are opened (NAME.zip > train.zip > images)


def data_dir(name: str, given: str | None) -> Path:
    """A competition's data folder: --data DIR, or inputs/NAME (the digits written there first)."""
    if given:
        return Path(given).expanduser().resolve()
    folder = inputs_dir() / name
    if name == DEFAULT_COMPETITION:
        from .digits import ensure_digits
        ensure_digits(folder)
    if not folder.exists():
        raise PipelineError(
            f"No data for '{name}' in {folder}. Put the competition's downloaded files there "
            f"(zips are fine; a symlink to a read-only folder is fine), or pass --data DIR.")
    return folder


class Problems:
    """Where checks report what is wrong with the inputs, and notes that are not wrong."""

    def __init__(self, collect: bool = False):
        self.collect = collect       # False: the first problem raises; True: keep them all
        self.found: list[str] = []
        self.warnings: list[str] = []  # not wrong, but likely to mislead (duplicate images)
        self.notes: list[str] = []

    def report(self, message: str) -> None:
        if not self.collect:
            raise PipelineError(message)
        self.found.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def note(self, message: str) -> None:
        self.notes.append(message)


def examples(items: list, total: int | None = None, sep: str = ", ") -> str:
    """'a, b, c' or 'a, b, c, d, e and 7 more', for messages."""
    total = len(items) if total is None else total
    shown = sep.join(str(item) for item in items[:EXAMPLES])
    return shown + (f" and {total - EXAMPLES} more" if total > EXAMPLES else "")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # names too long for the file system, NUL bytes
        return False


@dataclass(frozen=True)
class Archive:
    """A zip the data folder holds, directly or inside another zip."""
    path: Path      # file to open: the data folder's zip, or the cached copy of an inner one
    label: str      # for messages: "/data/x.zip" or "/data/x.zip:train.zip"
    origin: Path    # the data folder's own zip it comes from (its size and time identify it)
    stem: str       # its name without .zip: the folder its members count as being in


def zip_keys(stem: str, member: str) -> list[str]:
    """Relative paths that find `member` of the zip named `stem`.zip: every tail of its path,
    and of the path under a folder named `stem` when it is not already under one."""
    parts = member.split("/")
    if parts[0] != stem:
        parts = [stem] + parts
    return ["/".join(parts[start:]) for start in range(len(parts))]


class DataDir:
    """Read-only view of a competition's data folder, zips (and zips in zips) included."""

    def __init__(self, root: Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise PipelineError(
                f"Data folder {self.root} does not exist. Put the competition's downloaded files "
                f"there (zips are fine), or pass --data DIR.")
        self._by_suffix: dict[str, tuple[Archive, str]] | None = None
        self._members: list[tuple[str, Archive, str]] = []  # (path as stored, zip, member)
        self._zips: dict[Path, zipfile.ZipFile] = {}
        self._bad_zips: dict[str, str] = {}  # zips that could not be opened, and why

    def __getstate__(self):
        """Pickled for the decoding processes as its folder: each opens the zips itself."""
        return {**self.__dict__, "_by_suffix": None, "_members": [], "_zips": {}}

    def _index(self) -> dict[str, tuple[Archive, str]]:
        """Map every key of every zip member (see zip_keys) to its member; shorter names win."""
        if self._by_suffix is None:
            self._by_suffix = {}
            for zip_path in sorted(self.root.glob("*.zip")):
                self._add_archive(Archive(zip_path, str(zip_path), zip_path, zip_path.stem), depth=0)
        return self._by_suffix

    def _add_archive(self, archive: Archive, depth: int) -> None:
        try:
            names = [name for name in self._open_zip(archive.path).namelist() if not name.endswith("/")]
        except ZIP_ERRORS as error:
            self._bad_zips[archive.label] = str(error)  # a problem only if a file we need is in it
            return
        for name in sorted(names, key=len, reverse=True):
            if name.lower().endswith(".zip") and depth < NESTED_ZIPS:
                inner = self._copy_out(archive, name)
                if inner is not None:
                    label = f"{archive.label}:{name}"
                    self._add_archive(Archive(inner, label, archive.origin, Path(name).stem), depth + 1)
                continue
            keys = zip_keys(archive.stem, name)
            self._members.append((keys[0], archive, name))
            for key in keys:
                self._by_suffix[key] = (archive, name)

    def _copy_out(self, archive: Archive, name: str) -> Path | None:
        """A zip inside a zip, copied once into the cache (reading it in place would decompress
        from its start at every seek)."""
        stat = archive.origin.stat()
        key = f"{archive.origin.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{archive.label}|{name}"
        target = cache_dir() / "zips" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}-{Path(name).name}"
        if target.is_file():
            return target
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with self._open_zip(archive.path).open(name) as source:
                write_atomically(target, lambda file: shutil.copyfileobj(source, file, 1 << 20))
        except ZIP_ERRORS as error:
            self._bad_zips[f"{archive.label}:{name}"] = str(error)
            return None
        return target

    def _open_zip(self, zip_path: Path) -> zipfile.ZipFile:
        if zip_path not in self._zips:
            self._zips[zip_path] = zipfile.ZipFile(zip_path)
        return self._zips[zip_path]

    def bad_zips(self) -> dict[str, str]:
        """Zips of the folder (or inside its zips) that cannot be opened, and why."""
        self._index()
        return self._bad_zips

    def exists(self, relpath: str) -> bool:
        return _is_file(self.root / relpath) or relpath in self._index()

    def describe(self, relpath: str) -> str:
        """Where a file is, for messages: a path on disk or `archive.zip:member`."""
        if _is_file(self.root / relpath) or relpath not in self._index():
            return str(self.root / relpath)
        archive, name = self._index()[relpath]
        return f"{archive.label}:{name}"

    def read_bytes(self, relpath: str) -> bytes:
        path = self.root / relpath
        try:
            if _is_file(path):
                return path.read_bytes()
            if relpath in self._index():
                archive, name = self._index()[relpath]
                return self._open_zip(archive.path).read(name)
        except ZIP_ERRORS as error:
            raise PipelineError(f"Cannot read {self.describe(relpath)} ({error}): download it "
                                f"again, or check its permissions.") from error
        raise PipelineError(self.not_found(relpath))

    def not_found(self, relpath: str) -> str:
        """Why `relpath` is missing and what to do, naming a likely intended file if one exists."""
        message = f"{self.root / relpath} not found, on disk or inside any zip in {self.root}."
        if self.bad_zips():
            message += " Unreadable zip(s), download again: " + ", ".join(
                f"{Path(label).name} ({why})" for label, why in self.bad_zips().items()) + "."
        folder, _, name = relpath.rpartition("/")
        stem = name.split(".")[0].lower()
        similar = [other for other in self.listdir(folder, files_only="." in name)
                   if other.split(".")[0].lower() == stem and other != name and not other.endswith(".zip")]
        if similar:
            return message + f" Found {folder + '/' if folder else ''}{similar[0]} instead: fix the name " \
                             f"pattern (image_template) or the file name in competition/*.yaml."
        return message + " Check the file names in competition/*.yaml against the downloaded files."

    def listdir(self, folder: str, files_only: bool = False) -> list[str]:
        """Names directly inside `folder`, on disk and in the zips (for hints; not fast)."""
        names = set()
        disk = self.root / folder
        if disk.is_dir():
            names.update(p.name for p in disk.iterdir() if not files_only or _is_file(p))
        prefix = f"{folder}/" if folder else ""
        names.update(key[len(prefix):] for key in self._index()
                     if key.startswith(prefix) and "/" not in key[len(prefix):])
        return sorted(names)

    def walk(self, folder: str = "") -> list[str]:
        """Every file under `folder` (all depths), as paths relative to it; hidden files and the
        zips themselves left out. Zip members count where their keys (zip_keys) put them."""
        found = set()
        top = self.root / folder if folder else self.root
        for parent, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            base = Path(parent).relative_to(top).as_posix()
            found.update(name if base == "." else f"{base}/{name}" for name in files
                         if not name.startswith(".") and not name.lower().endswith(".zip"))
        if folder:
            prefix = f"{folder}/"
            found.update(key[len(prefix):] for key in self._index() if key.startswith(prefix))
        else:
            self._index()
            found.update(path for path, _, _ in self._members)
        return sorted(path for path in found if not path.rpartition("/")[2].startswith("."))

    def fingerprint(self, relpaths: list[str]) -> list:
        """Sizes and modification times identifying the current content of these files."""
        stamps, zips = [str(self.root.resolve())], set()
        for relpath in relpaths:
            path = self.root / relpath
            if _is_file(path):
                stat = path.stat()
                stamps.append((relpath, stat.st_size, stat.st_mtime_ns))
            elif relpath in self._index():
                zips.add(self._index()[relpath][0].origin)
        for zip_path in sorted(zips):
            stat = zip_path.stat()
            stamps.append((str(zip_path.resolve()), stat.st_size, stat.st_mtime_ns))
        return stamps

    def read_csv(self, relpath: str) -> pd.DataFrame:
        """Every cell as a stripped string, so ids like '007' stay as written.
        The encoding it was read with is in `frame.attrs["encoding"]`."""
        where = self.describe(relpath)
        text, encoding = decode_text(self.read_bytes(relpath))
        header = text.split("\n", 1)[0]
        delimiter = "," if "," in header else next((d for d in DELIMITERS if d in header), ",")
        try:
            with warnings.catch_warnings():
                # a row with one field too many would silently become the index: refuse it
                warnings.simplefilter("error", pd.errors.ParserWarning)
                frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False,
                                    index_col=False, sep=delimiter)
        except pd.errors.EmptyDataError:
            raise PipelineError(f"{where} is empty: download it again.") from None
        except (pd.errors.ParserError, pd.errors.ParserWarning) as error:
            raise PipelineError(f"{where} is not a valid CSV ({str(error).strip()}). Quote values that contain "
                                f"commas, or download it again.") from None
        frame = frame.fillna("")  # rows with too few fields
        frame.columns = [str(c).strip() for c in frame.columns]
        twice = frame.columns[frame.columns.duplicated()]
        if len(twice):
            raise PipelineError(f"{where}: column {twice[0]!r} appears twice in the header. "
                                f"Rename or remove one of them.")
        frame = frame.apply(lambda column: column.str.strip())
        frame.attrs["encoding"] = encoding
        return frame


def decode_text(raw: bytes) -> tuple[str, str]:
    """CSV bytes to text: UTF-8 (with or without BOM), UTF-16 with BOM, else Windows-1252 or
    Latin-1, the legacy encodings spreadsheets export (Latin-1 maps every byte)."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = ("utf-16",)
    else:
        candidates = ("utf-8-sig", "cp1252", "latin-1")
    for encoding in candidates:
        try:
            return raw.decode(encoding), encoding.replace("-sig", "")
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1", errors="replace"), "latin-1"  # a UTF-16 BOM on broken data
