"""`package`: a trained run as what a Kaggle code competition needs, offline. Writes
submissions/NAME/kaggle/dataset/ (the run's models, settings and decisions, the competition yaml,
the project's own code as a wheel, dataset-metadata.json) and submissions/NAME/kaggle/kernel/
(kernel-metadata.json and the script it names, which installs the wheel from the attached dataset
and runs kernel.py's predict on /kaggle/input).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .batches import with_rows
from .config import PROJECT_ROOT, Competition, competition_path, run_from_dict, submissions_dir
from .errors import PipelineError
from .data import decoder
from .files import DataDir
from .imagestore import worker_count
from .layout import image_paths
from .predict import chosen_checkpoints
from .predictplan import MEASURED_MAX, seconds_per_view
from .runs import RunFolder, find_run, load_checkpoint
from .runtime import Runtime, choose_device
from .tables import load_tables

KERNEL_FILE = "compete_kernel.py"
PACKAGED = "package.json"              # beside dataset/ and kernel/: the run packaged, the two ids
RUN_FOLDER = "run"                      # the run's files inside the dataset
SKIPPED = ("resume_*", "*.png", "report.html", "test_probs.npy", "uploads.json")  # not needed to predict

KERNEL_SCRIPT = '''"""Kaggle kernel written by `./run.sh package {name}`: run {run} predicts the competition's
test images offline and writes submission.csv. COMPETE_KAGGLE_INPUT and COMPETE_KAGGLE_WORKING
override /kaggle/input and /kaggle/working (tests)."""
import os
import subprocess
import sys
from pathlib import Path

DATASET, COMPETITION, NAME, RUN = {dataset!r}, {slug!r}, {name!r}, {run!r}
TIME_LIMIT = {time_limit!r}  # seconds predict may take (package --time-limit); None: no limit

# under the guard: the decoding processes (spawned) import this file again, and must not rerun it
if __name__ == "__main__":
    inputs = Path(os.environ.get("COMPETE_KAGGLE_INPUT", "/kaggle/input"))
    working = Path(os.environ.get("COMPETE_KAGGLE_WORKING", "/kaggle/working"))
    dataset = inputs / DATASET
    lib = working / "compete-lib"  # the project, installed from the dataset's wheel: no index, no network
    wheel = next(dataset.glob("compete-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--disable-pip-version-check", "--target", str(lib), str(wheel)], check=True)
    sys.path.insert(0, str(lib))
    from compete.kernel import main

    sys.exit(main(dataset, inputs / COMPETITION, working, NAME, RUN, TIME_LIMIT))
'''


def package_run(comp: Competition, data_dir: Path, run_id: str | None = None,
                time_limit: float | None = None, test_images: int | None = None) -> Path:
    """Write the dataset and kernel folders for run `run_id` (default: the latest), the kernel
    predicting within `time_limit` seconds where given; print the expected runtime for
    `test_images` hidden test images (default: the public test's count). Returns the kaggle folder."""
    run_dir = find_run(comp.name, run_id)
    RunFolder(run_dir).checkpoints()  # refuses an older compete's pickled run before anything is written
    out = submissions_dir() / comp.name / "kaggle"
    shutil.rmtree(out, ignore_errors=True)
    dataset, kernel = out / "dataset", out / "kernel"
    copy_run(run_dir, dataset / RUN_FOLDER)
    shutil.copy(competition_path(comp.name), dataset / "competition.yaml")
    wheel = build_wheel(dataset)
    user = kaggle_user()
    slug = comp.kaggle or comp.name
    dataset_slug = slugify(f"{comp.name}-compete-models")
    write_json(dataset / "dataset-metadata.json", {
        "title": f"{comp.name} compete models", "id": f"{user}/{dataset_slug}",
        "licenses": [{"name": "CC0-1.0"}]})
    kernel.mkdir(parents=True)
    (kernel / KERNEL_FILE).write_text(KERNEL_SCRIPT.format(name=comp.name, run=run_dir.name, dataset=dataset_slug,
                                                           slug=slug, time_limit=time_limit))
    write_json(kernel / "kernel-metadata.json", {
        "id": f"{user}/{slugify(comp.name + '-compete-kernel')}", "title": f"{comp.name} compete kernel",
        "code_file": KERNEL_FILE, "language": "python", "kernel_type": "script", "is_private": True,
        "enable_gpu": needs_gpu(run_dir), "enable_internet": False,
        "dataset_sources": [f"{user}/{dataset_slug}"], "competition_sources": [slug], "kernel_sources": []})
    write_json(out / PACKAGED, {"run": run_dir.name, "dataset": f"{user}/{dataset_slug}",
                                "kernel": f"{user}/{slugify(comp.name + '-compete-kernel')}", "time_limit": time_limit})
    size = sum(path.stat().st_size for path in dataset.rglob("*") if path.is_file())
    print(f"Packaged run {run_dir.name} into {out}: dataset {size / 1e6:.1f} MB ({wheel.name}, "
          f"{len(list((dataset / RUN_FOLDER / 'members').glob('*')))} model file(s)), kernel {KERNEL_FILE} "
          f"reading /kaggle/input/{slug} and /kaggle/input/{dataset_slug}.")
    print_expected_runtime(comp, data_dir, run_dir, test_images, time_limit)
    if user == PLACEHOLDER_USER:
        print(f"No Kaggle user found (KAGGLE_USERNAME or ~/.kaggle/kaggle.json): replace "
              f"{PLACEHOLDER_USER} in both metadata files before uploading.")
    return out


SAMPLED = 16  # test images decoded to time this machine's decoding


def expected_seconds(comp: Competition, data_dir: Path, run_dir: Path, images: int | None) -> tuple[int, float, float]:
    """(test images, seconds to decode them, seconds to predict them with every view of every
    model predict uses) on this machine: SAMPLED files decoded, inference timed as
    predict --time-limit times it."""
    data = DataDir(data_dir)
    tables = load_tables(comp, data)
    test_ids = tables.test_ids
    count = images or len(test_ids)
    paths = image_paths(comp, "test", comp.test_images, test_ids[:SAMPLED])
    decode = decoder(comp, data)
    started = time.perf_counter()
    for path in paths:
        decode(path)
    decode_s = (time.perf_counter() - started) / len(paths) / worker_count() * count  # decoded in parallel
    run = run_from_dict(RunFolder(run_dir).config()["run"])
    runtime = Runtime(choose_device("auto"), run.precision)
    loaded = [(m, load_checkpoint(path, runtime.device)) for m, path in chosen_checkpoints(run_dir, run)[0]]
    sampled = min(count, 4 * MEASURED_MAX)  # seconds_per_view times a quarter of them at most
    sample = torch.randint(0, 256, (sampled, comp.channels, comp.image_size, comp.image_size), dtype=torch.uint8)
    rows = None if tables.test_metadata is None else tables.test_metadata.iloc[np.arange(sampled) % len(test_ids)]
    per_view = seconds_per_view([(m, model) for m, (model, _) in loaded], with_rows(sample, rows), runtime)
    views = {m: len(member.tta) for m, (_, member) in loaded}
    return count, decode_s, sum(per_view[m] * views[m] for m in per_view) / sampled * count


def print_expected_runtime(comp, data_dir: Path, run_dir: Path, images: int | None, limit: float | None) -> None:
    count, decode_s, predict_s = expected_seconds(comp, data_dir, run_dir, images)
    where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{worker_count()} CPU core(s)"
    print(f"Expected runtime for {count} test images on this machine ({where}): about "
          f"{decode_s + predict_s:.0f} s ({decode_s:.0f} s decoding, {predict_s:.0f} s predicting with "
          f"every view of every model).")
    if limit is not None:
        verdict = "fits" if decode_s + predict_s < limit else "does not fit: predict drops TTA views, then members"
        print(f"The kernel's time limit is {limit:.0f} s: it {verdict}.")


def copy_run(run_dir: Path, target: Path) -> None:
    """The run's files that predict reads: settings, decisions and model files."""
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns(*SKIPPED))


def build_wheel(folder: Path) -> Path:
    """The project as a pure-Python wheel (pyproject.toml), built without an index or network
    from a clean copy of its sources: a build in the checkout would leave build/ and egg-info
    there, and a stale build/ would put deleted modules into the next wheel."""
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "compete"
        shutil.copytree(PROJECT_ROOT / "src", source / "src",
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(PROJECT_ROOT / name, source / name)
        result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
                                 "--no-build-isolation", "--disable-pip-version-check", "-w", str(folder),
                                 str(source)], capture_output=True, text=True)
    wheels = sorted(folder.glob("compete-*.whl"))
    if result.returncode != 0 or not wheels:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise PipelineError(f"Building the project's wheel failed ({last}): pip wheel needs setuptools>=70 "
                            f"installed (pip install 'setuptools>=70').")
    return wheels[-1]


PLACEHOLDER_USER = "KAGGLE_USER"


def kaggle_user() -> str:
    """The Kaggle user name the dataset and kernel ids start with: $KAGGLE_USERNAME, else the
    API token file's."""
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    token = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    try:
        return json.loads(token.read_text())["username"]
    except (OSError, ValueError, KeyError):
        return PLACEHOLDER_USER


def needs_gpu(run_dir: Path) -> bool:
    """The kernel asks for a GPU where the run was set to train on CUDA, or (device auto) where
    this machine, which presumably trained it, has one; a CPU-trained run predicts on a CPU."""
    device = RunFolder(run_dir).config()["run"].get("device", "auto")
    if device == "auto":
        import torch
        return torch.cuda.is_available()
    return device == "cuda"


def slugify(text: str) -> str:
    """Kaggle's slugs: lower-case letters, digits and hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")
