"""Code competitions, measured (issue 22): train a preset in a scratch workspace, then
- `predict` timed with the decoded-image cache warm and cold (cache removed first);
- `package`: the dataset's size;
- the packaged kernel run as Kaggle would (a fresh process under `unshare -n`, /kaggle/input laid
  out with the competition's files and the dataset, nothing of src/ on the path), timed, and its
  submission compared with predict's;
- `predict --time-limit L` for each L given: time taken, what it dropped, and how many labels
  agree with the full submission; the hold-out score of the views kept (the epoch log's
  identity-view `val_<metric>` against the member's views, `val_<metric>_tta`).
Appends one JSON line to bench/results.jsonl.

    .venv/bin/python bench/kernel.py bees --data ../shared/datasets/bees --limits 10 20
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from bench import SHARED_TORCH_HOME, SHARED_WEIGHTS, machine  # noqa: E402


def timed(command: list[str], env: dict | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    seconds = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return seconds, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--limits", type=float, nargs="*", default=[], help="predict --time-limit values")
    parser.add_argument("--reuse", help="a scratch workspace of an earlier call: its trained run, no training")
    args = parser.parse_args()
    root = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix=f"kernel-{args.name}-"))
    if not args.reuse:
        (root / "competition").mkdir()
        shutil.copy(REPO / "competition" / f"{args.name}.yaml", root / "competition")
    os.environ.update(COMPETE_ROOT=str(root), PYTHONPATH=str(REPO / "src"))
    os.environ.setdefault("COMPETE_WEIGHTS", str(SHARED_WEIGHTS))
    os.environ.setdefault("TORCH_HOME", str(SHARED_TORCH_HOME))
    compete = [sys.executable, "-m", "compete"]
    data = ["--data", str(Path(args.data).resolve())]
    if args.reuse:
        train_s, run_dir = None, max((root / "submissions" / args.name / "runs").iterdir())
        shutil.rmtree(root / "kaggle-input", ignore_errors=True)
        shutil.rmtree(root / "kaggle-working", ignore_errors=True)
    else:
        train_s, out = timed(compete + ["train", args.name, "--preset", args.preset, *data])
        run_dir = Path(out.strip().splitlines()[-1].split("Run saved in ", 1)[1])
    warm_s, _ = timed(compete + ["predict", args.name, *data])
    shutil.rmtree(root / "inputs" / ".cache")
    cold_s, _ = timed(compete + ["predict", args.name, *data])
    submission = root / "submissions" / args.name / "submission.csv"
    package_s, package_out = timed(compete + ["package", args.name, *data])
    kaggle = root / "submissions" / args.name / "kaggle"
    size = sum(p.stat().st_size for p in (kaggle / "dataset").rglob("*") if p.is_file())
    kernel_s, kernel_out, same = run_kernel(root, kaggle, Path(args.data).resolve())
    full = pd.read_csv(submission)  # every view of every model
    limited = [predict_within(compete, data, args.name, limit, full) for limit in args.limits]
    last = json.loads((run_dir / "log.jsonl").read_text().splitlines()[-1])
    metric = json.loads((run_dir / "summary.json").read_text())["metric"]
    result = {"bench": "kernel", "name": args.name, "preset": args.preset, "machine": machine(),
              "run": run_dir.name, "train_wall_s": train_s and round(train_s, 1),
              "predict_warm_s": round(warm_s, 1), "predict_cold_s": round(cold_s, 1),
              "package_s": round(package_s, 1), "package_mb": round(size / 1e6, 2),
              "expected": [line for line in package_out.splitlines() if line.startswith("Expected")],
              "kernel_s": round(kernel_s, 1), "kernel_same_submission": same,
              "holdout_all_views": last.get(f"val_{metric}_tta"), "holdout_identity_view": last.get(f"val_{metric}"),
              "limited": limited}
    print(json.dumps(result, indent=2))
    with open(REPO / "bench" / "results.jsonl", "a") as log:
        log.write(json.dumps(result) + "\n")


def run_kernel(root: Path, kaggle: Path, data: Path) -> tuple[float, str, bool]:
    """The kernel under unshare -n with /kaggle/input laid out: (seconds, output, same as predict)."""
    inputs, working = root / "kaggle-input", root / "kaggle-working"
    metadata = json.loads((kaggle / "kernel" / "kernel-metadata.json").read_text())
    inputs.mkdir()
    working.mkdir()
    (inputs / metadata["competition_sources"][0]).symlink_to(data)
    (inputs / metadata["dataset_sources"][0].split("/")[1]).symlink_to(kaggle / "dataset")
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
           "COMPETE_KAGGLE_INPUT": str(inputs), "COMPETE_KAGGLE_WORKING": str(working)}
    seconds, out = timed(["unshare", "-n", sys.executable, str(kaggle / "kernel" / metadata["code_file"])], env)
    predicted = root / "submissions" / kaggle.parent.name / "submission.csv"
    return seconds, out, (working / "submission.csv").read_bytes() == predicted.read_bytes()


def predict_within(compete: list[str], data: list[str], name: str, limit: float, full: pd.DataFrame) -> dict:
    """predict --time-limit: the time it took, what it said, and its agreement with the full submission."""
    seconds, out = timed(compete + ["predict", name, "--time-limit", str(limit), *data])
    frame = pd.read_csv(Path(os.environ["COMPETE_ROOT"]) / "submissions" / name / "submission.csv")
    label = frame.columns[1]
    said = next((line for line in out.splitlines() if line.startswith("--time-limit")), "")
    return {"limit_s": limit, "took_s": round(seconds, 1), "said": said,
            "labels_agreeing": round(float((frame[label] == full[label]).mean()), 4)}


if __name__ == "__main__":
    main()
