"""The two ends of a competitor's loop, through the Kaggle command-line tool: download a
competition's files where the pipeline reads them, upload a submission, and read its public score
back into the run's history (RunFolder.uploads_path).

Every call runs the `kaggle` executable found on PATH (the `kaggle` package; ./run.sh installs it
into .venv on first use, the tests put a stand-in first on PATH), with the argument names of its
documentation: `competitions download SLUG -p DIR`, `competitions submit SLUG -f FILE -m MESSAGE`,
`competitions submissions SLUG -v` (CSV). Its failures become PipelineErrors that say what to do.
"""
from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pandas as pd

from .config import Competition, PipelineError, submissions_dir
from .files import DataDir
from .history import MANIFEST, record_uploads, uploads_of
from .runs import RunFolder, find_run, read_json, runs_dir
from .submission import validate_submission
from .tables import load_tables

KAGGLE = "kaggle"                  # executable name, looked up on PATH
CALL_TIMEOUT_S = 3600              # one kaggle call (a large download) before giving up
POLL_S = 10                        # seconds between reads of the submission list while scoring
CREDENTIALS_URL = "https://www.kaggle.com/settings/api"
ARCHIVES_WE_CANNOT_READ = (".7z", ".rar", ".tar", ".tar.gz", ".tgz")

# What the kaggle tool prints for each failure a user can fix (1.x and 2.x wordings), in the
# order they are tested: an authentication failure also mentions 403, a rules refusal 403 alone.
FAILURES = [
    ("credentials", re.compile(r"authenticat|kaggle\.json|401|unauthori[sz]ed|KAGGLE_USERNAME|"
                               r"access_token", re.I)),
    ("limit", re.compile(r"daily|allowance|submission limit|maximum number of submissions|"
                         r"too many submissions", re.I)),
    ("rules", re.compile(r"rules|403|forbidden", re.I)),
    ("network", re.compile(r"resolve|connection|network is unreachable|timed out|max retries|"
                           r"name or service not known|temporary failure", re.I)),
    ("not found", re.compile(r"404|not found", re.I)),
]


def failure_kind(output: str) -> str | None:
    """Which known failure the kaggle tool's output describes, if any."""
    return next((kind for kind, pattern in FAILURES if pattern.search(output)), None)


def explain(kind: str | None, slug: str, output: str) -> str:
    """The fix for a failed kaggle call, with the tool's own last words."""
    said = " ".join(output.strip().splitlines()[-3:])[-400:]
    fixes = {
        "credentials": f"Kaggle refused the credentials (or found none). Create an API token at "
                       f"{CREDENTIALS_URL} and save it as ~/.kaggle/kaggle.json (or set KAGGLE_USERNAME "
                       f"and KAGGLE_KEY; newer kaggle versions also take KAGGLE_API_TOKEN or "
                       f"~/.kaggle/access_token), then run again.",
        "limit": f"The daily submission limit of '{slug}' is reached: Kaggle resets it at midnight "
                 f"UTC. Submit again then; nothing was recorded.",
        "rules": f"Kaggle refused access to '{slug}': accept the competition's rules first at "
                 f"https://www.kaggle.com/competitions/{slug}/rules ('Join Competition'), then run again.",
        "network": "Cannot reach kaggle.com (no network, or a proxy is needed: set HTTPS_PROXY). "
                   "Check the connection and run again.",
        "not found": f"Kaggle has no competition '{slug}': check `kaggle:` in the competition's yaml "
                     f"(the part after kaggle.com/competitions/ in its address).",
    }
    return fixes.get(kind, f"The kaggle tool failed on '{slug}'.") + f" (kaggle said: {said})"


def run_kaggle(args: list[str], slug: str) -> str:
    """Run `kaggle ARGS`; its standard output, or a PipelineError that says what to do."""
    executable = shutil.which(KAGGLE)
    if executable is None:
        raise PipelineError("The Kaggle command-line tool is not installed (no `kaggle` on PATH). "
                            "./run.sh installs it into .venv on first use; by hand: "
                            ".venv/bin/pip install kaggle six, then put .venv/bin on PATH.")
    try:
        done = subprocess.run([executable, *args], capture_output=True, text=True,
                              timeout=CALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise PipelineError(f"kaggle {' '.join(args[:2])} took over {CALL_TIMEOUT_S} s and was stopped: "
                            f"check the connection and run again.") from None
    if done.returncode:  # the tool exits non-zero on every failure, refusals included
        output = done.stdout + done.stderr
        raise PipelineError(explain(failure_kind(output), slug, output))
    return done.stdout


def download(comp: Competition, folder: Path) -> list[Path]:
    """Fetch the competition's files into `folder` with the kaggle tool (see fetch); a
    competition with no Kaggle slug says where to put the files by hand."""
    if not comp.kaggle:
        print(f"competition/{comp.name}.yaml names no Kaggle competition (kaggle: SLUG), so the files "
              f"come by hand: download them from the competition's page into {folder}/ exactly as "
              f"the site hands them out (zips need no unpacking), then run ./run.sh check {comp.name}.")
        return []
    files = fetch(comp.kaggle, folder)
    print(f"Downloaded {comp.kaggle} into {folder}: {', '.join(p.name for p in files)}. "
          f"Next: ./run.sh check {comp.name}")
    return files


def fetch(slug: str, folder: Path) -> list[Path]:
    """Kaggle competition `slug`'s files downloaded into `folder`; zips stay zipped (the
    pipeline reads them in place), zips inside the downloaded zip are taken out beside it."""
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        run_kaggle(["competitions", "download", slug, "-p", str(folder)], slug)
    except PipelineError:
        if created and not any(folder.iterdir()):
            folder.rmdir()  # no empty inputs/NAME that later commands would take for the data
        raise
    archive = folder / f"{slug}.zip"
    return ([archive] + _unpack_inner_zips(archive)) if archive.is_file() else sorted(folder.iterdir())


def _unpack_inner_zips(archive: Path) -> list[Path]:
    """Zips inside the downloaded zip go beside it (a zip in a zip cannot be read in place);
    archives the pipeline cannot read are named, with what to do."""
    try:
        with zipfile.ZipFile(archive) as outer:
            names = outer.namelist()
            inner = [name for name in names if name.lower().endswith(".zip")]
            for name in inner:
                target = archive.parent / Path(name).name
                with outer.open(name) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
    except zipfile.BadZipFile as error:
        raise PipelineError(f"{archive} is not a readable zip ({error}): delete it and download again.") from None
    for name in names:
        if name.lower().endswith(ARCHIVES_WE_CANNOT_READ):
            print(f"note: {archive.name} holds {name}, which the pipeline cannot read in place: "
                  f"unpack it into {archive.parent}/ (e.g. `7z x` or `tar xf`).")
    return [archive.parent / Path(name).name for name in inner]


def upload_message(run_dir: Path, manifest: dict) -> str:
    """What the leaderboard shows beside the submission: run, preset, members (and which of the
    run's models predicted, where not its fold models), local score, commit."""
    config = RunFolder(run_dir).config()
    models = ",".join(member["model"] for member in config["run"]["members"])
    local = "-" if manifest["score"] is None else f"{manifest['score']:.4f}"
    commit = (manifest.get("git_commit") or "-")[:7] + ("+" if manifest.get("git_dirty") else "")
    if manifest.get("models", "folds") != "folds":
        models += f" ({manifest['models']})"
    return (f"run {manifest['run']} preset {config['run']['preset']} members {models} "
            f"local {manifest['metric']} {local} commit {commit}")


def check_submission(comp: Competition, data_dir: Path, path: Path, run_dir: Path) -> None:
    """The file about to be uploaded, checked once more against the sample submission."""
    if not path.is_file():
        raise PipelineError(f"{path} does not exist: write it with ./run.sh predict {comp.name}.")
    sample = load_tables(comp, DataDir(data_dir)).sample
    try:
        frame = pd.read_csv(path, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise PipelineError(f"{path} does not read as a CSV ({error}): write it again with "
                            f"./run.sh predict {comp.name}.") from None
    try:
        validate_submission(frame, sample, comp.id_column, comp.label_column,
                            RunFolder(run_dir).config()["classes"])
    except PipelineError as error:
        raise PipelineError(f"{path}: {error} Write it again with ./run.sh predict {comp.name}.") from None


def submission_of(comp: Competition, run_id: str | None) -> tuple[Path, Path, dict]:
    """submission.csv, the run that made it (checked against --run) and its manifest."""
    folder = submissions_dir() / comp.name
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise PipelineError(f"No submission to upload in {folder}: run ./run.sh predict {comp.name} first.")
    manifest = read_json(manifest_path)
    if run_id and run_id != manifest["run"]:
        raise PipelineError(f"{folder / 'submission.csv'} was made by run {manifest['run']}, not {run_id}: "
                            f"write run {run_id}'s with ./run.sh predict {comp.name} --run {run_id}, "
                            f"then submit it.")
    return folder / "submission.csv", find_run(comp.name, manifest["run"]), manifest


def submit(comp: Competition, data_dir: Path, run_id: str | None = None, message: str | None = None,
           wait_s: float = 60) -> dict:
    """Check submission.csv, upload it, read its public score back (waiting up to `wait_s` while
    Kaggle scores it) and record the upload in its run's history. A failed upload records nothing."""
    path, run_dir, manifest = submission_of(comp, run_id)
    check_submission(comp, data_dir, path, run_dir)
    message = message or upload_message(run_dir, manifest)
    if not comp.kaggle:
        print(f"competition/{comp.name}.yaml names no Kaggle competition (kaggle: SLUG): {path} is "
              f"checked; upload it by hand on the competition's page.")
        return {}
    said = run_kaggle(["competitions", "submit", comp.kaggle, "-f", str(path), "-m", message], comp.kaggle)
    ref = re.search(r"Submission ref:\s*(\d+)", said)  # printed by kaggle 2.x
    upload = {"file": str(path), "run": run_dir.name, "message": message,
              "submitted_at": time.strftime("%Y-%m-%d %H:%M:%S"), "ref": ref.group(1) if ref else None,
              "status": "pending", "public_score": None}
    record_uploads(run_dir, uploads_of(run_dir) + [upload])  # the upload happened: remember it now
    print(f"Uploaded {path} to {comp.kaggle}: {message}")
    try:
        read_scores(comp, [run_dir], wait_s)
    except PipelineError as error:  # the upload stands; only its score is unknown
        print(f"The public score could not be read back: {error} Read it later with "
              f"./run.sh scores {comp.name}.")
    return uploads_of(run_dir)[-1]


def read_pending_scores(comp: Competition) -> int:
    """`./run.sh scores NAME`: read back the public score of every upload still waiting for one."""
    waiting = [run_dir for run_dir in sorted(runs_dir(comp.name).glob("*"))
               if any(upload["status"] == "pending" for upload in uploads_of(run_dir))]
    if not comp.kaggle or not waiting:
        print(f"No upload of {comp.name} is waiting for its public score "
              f"(./run.sh runs {comp.name} lists them).")
        return 0
    return read_scores(comp, waiting)


def read_scores(comp: Competition, run_dirs: list[Path], wait_s: float = 0) -> int:
    """Read the submission list back and record the public score of every upload of `run_dirs`
    still pending; polls for up to `wait_s` seconds. Returns how many still wait."""
    deadline = time.monotonic() + wait_s
    while True:
        listed = list_submissions(comp.kaggle)
        waiting = 0
        for run_dir in run_dirs:
            scored, pending = _update_uploads(run_dir, listed)
            waiting += pending
            for upload in scored:
                print(f"{run_dir.name}: {upload['status']}, public score {upload['public_score']} "
                      f"(uploaded {upload['submitted_at']})")
        if not waiting or time.monotonic() + POLL_S > deadline:
            break
        time.sleep(POLL_S)
    if waiting:
        print(f"{waiting} upload(s) not scored yet; read the scores later with ./run.sh scores {comp.name}.")
    return waiting


def list_submissions(slug: str) -> list[dict]:
    """The competition's submissions as the kaggle tool lists them (CSV), newest first."""
    text = run_kaggle(["competitions", "submissions", slug, "-v"], slug)
    lines = text.splitlines()
    # 1.x may print a version warning first; the table starts at its header
    start = next((i for i, line in enumerate(lines) if "fileName" in line and "publicScore" in line), None)
    if start is None:
        return []
    return list(csv.DictReader(io.StringIO("\n".join(lines[start:]))))


def _status(row: dict) -> str:
    """'complete', 'pending' or 'error', from 1.x ('complete') or 2.x ('SubmissionStatus.COMPLETE')."""
    return (row.get("status") or "").rsplit(".", 1)[-1].lower() or "pending"


def _score(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _same(upload: dict, row: dict) -> bool:
    """Whether a listed submission is this upload: by ref where both have one (kaggle 2.x),
    else by message."""
    if upload["ref"] and row.get("ref"):
        return row["ref"] == upload["ref"]
    return (row.get("description") or "").strip() == upload["message"].strip()


def _update_uploads(run_dir: Path, listed: list[dict]) -> tuple[list[dict], int]:
    """Fill in the run's pending uploads from the listing (by ref, else by message; each listed
    row matches one upload, newest first). Returns the uploads just scored and how many wait."""
    uploads, unclaimed, scored = uploads_of(run_dir), list(listed), []
    for upload in reversed(uploads):
        if upload["status"] != "pending":
            continue
        row = next((row for row in unclaimed if _same(upload, row)), None)
        if row is None:
            continue
        unclaimed.remove(row)
        upload.update(status=_status(row), public_score=_score(row.get("publicScore")),
                      private_score=_score(row.get("privateScore")), ref=upload["ref"] or row.get("ref"))
        if upload["status"] != "pending":
            scored.append(upload)
    if scored:
        record_uploads(run_dir, uploads)
    return scored, sum(upload["status"] == "pending" for upload in uploads)
