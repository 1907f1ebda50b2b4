"""Run history: where each run came from (code commit, input files), the table of a
competition's runs (each score with its 95% interval, and how far public scores fell from local
ones), the manifest that ties a submission file to the run that made it, and the run's uploads
with the public score each got. Reads run folders through runs.RunFolder, which owns
their layout; writes nothing into them but config.json's provenance (through the pipeline) and the
uploads record.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import numpy as np

from .config import PROJECT_ROOT, Competition, load_competition, submissions_dir
from .errors import PipelineError
from .intervals import format_interval, public_interval
from .runs import RunFolder, read_json, run_folders, runs_dir, write_json

MANIFEST = "submission.json"  # beside submission.csv


def git_commit() -> dict:
    """The project's commit and whether tracked files differ from it; None values without git."""
    def git(*args):
        try:
            done = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                  timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": None if changes is None else bool(changes)}


def input_hash(comp: Competition, data_dir: Path) -> str:
    """Identity of the input files, cheap enough for 60,000 PNGs: name, size and modification time
    of the data folder's top-level files (CSVs, zips), plus each image folder's entry count and
    time (a folder's time changes when files are added, removed or renamed). Contents are not read."""
    root = Path(data_dir)
    stamps = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        stat = path.stat()
        if path.is_file():
            stamps.append((path.name, stat.st_size, stat.st_mtime_ns))
        elif path.name in (comp.train_images, comp.test_images):
            stamps.append((path.name, sum(1 for _ in path.iterdir()), stat.st_mtime_ns))
    return hashlib.sha1(json.dumps(stamps).encode()).hexdigest()[:16]


def provenance(comp: Competition, data_dir: Path) -> dict:
    """What config.json records about a run's origin."""
    return {"started": time.time(), "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            **git_commit(), "input_hash": input_hash(comp, data_dir)}


def write_manifest(submission: Path, run_dir: Path, summary: dict, models: str) -> Path:
    """Record beside `submission` which run wrote it and with which of its models (`models`, one
    of config.PREDICTING_MODELS), with the run's scores and weights."""
    manifest = {"run": run_dir.name, "models": models, "written_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                "metric": summary["metric"], "score": summary["ensemble_score"],
                "members": [{"model": row["model"], "score": row["score"]} for row in summary["members"]],
                "weights": summary["weights"], **git_commit()}
    path = submission.with_name(MANIFEST)
    write_json(path, manifest)
    return path


def uploads_of(run_dir: Path) -> list[dict]:
    """The run's uploads, oldest first: file, message, date, status and public score."""
    path = RunFolder(run_dir).uploads_path
    return read_json(path) if path.is_file() else []


def record_uploads(run_dir: Path, uploads: list[dict]) -> None:
    write_json(RunFolder(run_dir).uploads_path, uploads)


def run_rows(competition: str) -> list[dict]:
    """One row per run folder, newest first; unfinished runs (no summary.json) included."""
    rows = []
    for folder in run_folders(competition):
        try:
            config = folder.config()
        except PipelineError as refused:  # an older run format: listed with how to train it again
            rows.append({"run": folder.name, "refused": str(refused), "started": folder.config_path.stat().st_mtime})
            continue
        origin = config["provenance"]
        rows.append({"run": folder.name, "preset": config["run"]["preset"],
                     "started": origin["started"],
                     "models": [m["model"] for m in config["run"]["members"]],
                     "commit": (origin.get("git_commit") or "-")[:7] + ("+" if origin.get("git_dirty") else ""),
                     "summary": folder.summary(), "epochs_logged": folder.epochs_logged(),
                     "time_limit": config["run"]["time_limit"], "public": _public(uploads_of(folder.path)),
                     "public_score": _public_score(uploads_of(folder.path)), "taught": _taught_by(config["run"])})
    return sorted(rows, key=lambda row: row["started"], reverse=True)


def _taught_by(run: dict) -> str:
    """'  taught by RUN (pseudo|distill)' for a run that learned from a teacher (teaching.py); else ''."""
    mode = next((mode for mode in ("pseudo", "distill") if run.get(mode)), None)
    return f"  taught by {run[mode]} ({mode})" if mode else ""


def _public(uploads: list[dict]) -> str:
    """The latest upload's public score, 'pending' while Kaggle scores it, '-' if never uploaded."""
    if not uploads:
        return "-"
    latest = uploads[-1]
    return f"{latest['public_score']:.4f}" if latest.get("public_score") is not None else latest["status"]


def _public_score(uploads: list[dict]) -> float | None:
    return uploads[-1].get("public_score") if uploads else None


def _public_text(row: dict, public_rows: int | None) -> str:
    """The public score, with its own 95% half-width (±) where the yaml gives public_rows."""
    summary = row["summary"]
    if row["public_score"] is None or not public_rows or not summary:
        return row["public"]
    interval = public_interval(summary["metric"], row["public_score"], public_rows,
                               summary.get("score_interval"), summary.get("validated", 0))
    return row["public"] if interval is None else f"{row['public']}±{(interval[1] - interval[0]) / 2:.4f}"


def public_gaps(rows: list[dict]) -> str | None:
    """Public minus local score over the uploaded runs: how far local scores can be trusted on
    this competition (its mean is the local score's bias, its spread the noise of one upload)."""
    gaps = np.array([row["public_score"] - row["summary"]["ensemble_score"] for row in rows
                     if row.get("public_score") is not None and row["summary"]
                     and row["summary"]["ensemble_score"] is not None])
    if not len(gaps):
        return None
    if len(gaps) == 1:
        return f"public - local: {gaps[0]:+.4f} (1 uploaded run; upload more to see its spread)"
    return (f"public - local over {len(gaps)} uploaded runs: mean {gaps.mean():+.4f}, sd {gaps.std(ddof=1):.4f} "
            f"(from {gaps.min():+.4f} to {gaps.max():+.4f}); local differences within a few sd of this "
            f"say little about the leaderboard")


def _taken(summary: dict) -> float:
    """The train command's wall time, start-up and plots included (older runs: training alone)."""
    return summary.get("command_seconds", summary["seconds"])


def _wall(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def format_runs(competition: str, rows: list[dict], submitted: str | None = None,
                public_rows: int | None = None) -> str:
    """The run table as text; `submitted` (a run id) gets a * for having made submission.csv;
    with `public_rows` (the public test's size), each public score shows its own ± (95%)."""
    metrics = {row["summary"]["metric"] for row in rows if row.get("summary")}
    metric = metrics.pop() if len(metrics) == 1 else "score"
    width = max([len(row["run"]) for row in rows] + [3]) + 2
    lines = [f"{competition}: {len(rows)} run(s), newest first" + (" (* made submission.csv)" if submitted else ""),
             f"  {'run':<{width}}{'preset':<10}{metric:>14}  {'95% interval':<18}{'public':>14}  {'members':<24}"
             f"{'folds':>5}{'wall':>9}{'limit':>8}  commit"]
    for row in rows:
        if "refused" in row:
            lines.append(f"  {row['run']:<{width}}{row['refused']}")
            continue
        summary, mark = row["summary"], "*" if row["run"] == submitted else " "
        members = f"{len(row['models'])}: {','.join(row['models'])}"
        limit = _wall(row["time_limit"]) if row["time_limit"] else "-"
        if summary is None:
            lines.append(f"{mark} {row['run']:<{width}}{row['preset']:<10}{'unfinished':>14}  {'-':<18}{'-':>14}  "
                         f"{members:<24}{'-':>5}{'-':>9}{limit:>8}  {row['commit']}  "
                         f"({row['epochs_logged']} epochs logged){row.get('taught', '')}")
            continue
        value = "-" if summary["ensemble_score"] is None else f"{summary['ensemble_score']:.4f}"
        interval = format_interval(summary.get("score_interval"))
        folds = f"{summary['folds']}{'+r' if summary.get('refit') else ''}"  # +r: refit on every image
        lines.append(f"{mark} {row['run']:<{width}}{row['preset']:<10}{value:>14}  {interval:<18}"
                     f"{_public_text(row, public_rows):>14}  {members:<24}{folds:>5}{_wall(_taken(summary)):>9}"
                     f"{limit:>8}  {row['commit']}{row.get('taught', '')}")
    gaps = public_gaps(rows)
    return "\n".join(lines + ([gaps] if gaps else []))


def _public_rows(competition: str) -> int | None:
    """The yaml's public_rows (the public leaderboard's share of the test set); None when not
    given or the yaml is gone."""
    try:
        return load_competition(competition).public_rows
    except PipelineError:
        return None


def print_runs(competition: str | None = None) -> None:
    """Print the run table of one competition, or of every competition with runs."""
    names = [competition] if competition else \
        sorted(p.parent.name for p in submissions_dir().glob("*/runs") if p.is_dir())
    if not names:
        print(f"No runs yet in {submissions_dir()}: train one with ./run.sh train NAME.")
    for name in names:
        rows = run_rows(name)
        if not rows:
            print(f"{name}: no runs in {runs_dir(name)}; train one with ./run.sh train {name}.")
            continue
        manifest = submissions_dir() / name / MANIFEST
        submitted = read_json(manifest)["run"] if manifest.is_file() else None
        print(format_runs(name, rows, submitted, _public_rows(name)))
