"""`submit NAME --kernel`: a code competition's submission through the Kaggle CLI. The dataset
`package` wrote is uploaded (`kaggle datasets create`, or `datasets version` once it exists), the
kernel pushed (`kernels push`) and awaited (`kernels status`), and its output submitted
(`competitions submit SLUG -k USER/KERNEL -v VERSION -f submission.csv -m MESSAGE`), then
recorded in the run's uploads like any submission. Every failed step is one line, and a failure
records nothing.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from .config import Competition, submissions_dir
from .errors import PipelineError
from .history import record_uploads, uploads_of
from .leaderboard import failure_kind, read_scores, run_kaggle
from .package import PACKAGED
from .runs import RunFolder, find_run, read_json

KERNEL_POLL_S = 30     # seconds between reads of the kernel's status
SUBMITTED_FILE = "submission.csv"


def submit_kernel(comp: Competition, message: str | None = None, kernel_wait_s: float = 9 * 3600,
                  score_wait_s: float = 60) -> dict:
    """Upload the packaged dataset, push the kernel, wait up to `kernel_wait_s` for it to run,
    submit its output and read the public score back (up to `score_wait_s`)."""
    if not comp.kaggle:
        raise PipelineError(f"competition/{comp.name}.yaml names no Kaggle competition (kaggle: SLUG): "
                            f"a kernel submits to a Kaggle code competition only.")
    folder, packaged = _packaged(comp)
    run_dir = find_run(comp.name, packaged["run"])
    upload_dataset(folder / "dataset", packaged["dataset"], comp.kaggle, f"run {run_dir.name}")
    wait_for_dataset(packaged["dataset"], comp.kaggle, kernel_wait_s)
    version = push_kernel(folder / "kernel", comp.kaggle)
    wait_for_kernel(packaged["kernel"], version, comp.kaggle, kernel_wait_s)
    message = message or _message(run_dir, packaged["kernel"], version)
    said = run_kaggle(["competitions", "submit", comp.kaggle, "-k", packaged["kernel"], "-v", str(version),
                       "-f", SUBMITTED_FILE, "-m", message], comp.kaggle)
    ref = re.search(r"Submission ref:\s*(\d+)", said)
    upload = {"file": SUBMITTED_FILE, "run": run_dir.name, "message": message,
              "kernel": packaged["kernel"], "kernel_version": version,
              "submitted_at": time.strftime("%Y-%m-%d %H:%M:%S"), "ref": ref.group(1) if ref else None,
              "status": "pending", "public_score": None}
    record_uploads(run_dir, uploads_of(run_dir) + [upload])
    print(f"Submitted the output of kernel {packaged['kernel']} version {version} to {comp.kaggle}: {message}")
    try:
        read_scores(comp, [run_dir], score_wait_s)
    except PipelineError as error:  # the submission stands; only its score is unknown
        print(f"The public score could not be read back: {error} Read it later with ./run.sh scores {comp.name}.")
    return uploads_of(run_dir)[-1]


def upload_dataset(folder: Path, dataset_id: str, slug: str, message: str) -> None:
    """A new dataset the first time (`datasets status` says it is not there), a new version after."""
    try:
        run_kaggle(["datasets", "status", dataset_id], slug)
        exists = True
    except PipelineError as error:
        if failure_kind(str(error)) != "not found":  # credentials, network, ...: stop here
            raise
        exists = False
    if exists:
        run_kaggle(["datasets", "version", "-p", str(folder), "-m", message, "--dir-mode", "zip"], slug)
    else:  # folders (run/) travel zipped; Kaggle unpacks them into the dataset
        run_kaggle(["datasets", "create", "-p", str(folder), "--dir-mode", "zip"], slug)
    print(f"Uploaded {folder} as dataset {dataset_id} ({'new version' if exists else 'created'}).")


def wait_for_dataset(dataset_id: str, slug: str, wait_s: float) -> None:
    """Kaggle processes an upload before a kernel can attach it: poll `datasets status`."""
    deadline = time.monotonic() + wait_s
    while "ready" not in run_kaggle(["datasets", "status", dataset_id], slug).lower():
        if time.monotonic() + KERNEL_POLL_S > deadline:
            raise PipelineError(f"Dataset {dataset_id} was not ready after {wait_s:.0f} s; nothing was "
                                f"submitted: run this again when kaggle datasets status {dataset_id} says ready.")
        time.sleep(KERNEL_POLL_S)


def push_kernel(folder: Path, slug: str) -> int:
    """Push the kernel; the version number Kaggle gave it."""
    said = run_kaggle(["kernels", "push", "-p", str(folder)], slug)
    version = re.search(r"version\s+(\d+)", said, re.I)
    if version is None:
        raise PipelineError(f"kaggle kernels push did not say which version it pushed ({said.strip()[:200]}): "
                            f"check the kernel on kaggle.com and submit its output on the competition's page.")
    print(f"Pushed kernel version {version.group(1)}.")
    return int(version.group(1))


def wait_for_kernel(kernel_id: str, version: int, slug: str, wait_s: float) -> None:
    """Poll `kernels status` until the kernel has run; its failure, or no end in time, stops here."""
    deadline = time.monotonic() + wait_s
    while True:
        said = run_kaggle(["kernels", "status", kernel_id], slug)
        status = re.search(r'status\s+"?(?:KernelWorkerStatus\.)?(\w+)', said, re.I)
        state = status.group(1).lower() if status else "unknown"
        if state == "complete":
            return
        if state in ("error", "cancelrequested", "cancelacknowledged"):
            raise PipelineError(f"Kernel {kernel_id} version {version} ended with status {state} on Kaggle: "
                                f"read its log (kaggle kernels output {kernel_id} -p DIR); nothing was submitted.")
        if time.monotonic() + KERNEL_POLL_S > deadline:
            raise PipelineError(f"Kernel {kernel_id} version {version} was still {state} after {wait_s:.0f} s; "
                                f"nothing was submitted: when it has finished, submit its output on the "
                                f"competition's page (or run this again with a longer --kernel-wait).")
        time.sleep(KERNEL_POLL_S)


def _packaged(comp: Competition) -> tuple[Path, dict]:
    folder = submissions_dir() / comp.name / "kaggle"
    if not (folder / PACKAGED).is_file():
        raise PipelineError(f"No packaged run in {folder}: run ./run.sh package {comp.name} first.")
    return folder, read_json(folder / PACKAGED)


def _message(run_dir: Path, kernel_id: str, version: int) -> str:
    config = RunFolder(run_dir).config()
    models = ",".join(member["model"] for member in config["run"]["members"])
    return f"kernel {kernel_id} v{version} run {run_dir.name} preset {config['run']['preset']} members {models}"
