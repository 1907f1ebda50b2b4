"""Scores with their uncertainty (issue 27), as a user gets them: a preset trained with several
seeds, each run's hold-out score with its 95% interval, and `compare` between the preset and a
variant of it on the same split.

    seeds     `train NAME --preset P --seed S` for each --seeds; each run's ensemble score and its
              95% interval (summary.json's score_interval), and whether the interval holds --kfold (a 5-fold CV score measured elsewhere)
    compare   the first seed's run against `train ... --seed S VARIANT` (same split): what
              `./run.sh compare NAME A B` prints

Runs go to the project's submissions/ as a user's do; --runs and --variant-run reuse trained runs
instead. Appends one JSON line per run to bench/results.jsonl.

    .venv/bin/python bench/intervals.py apparel --data ../shared/datasets/apparel --seeds 0 1 2 \\
        --variant="--epochs 8" --kfold 0.9370
    .venv/bin/python bench/intervals.py apparel --runs RUN0 RUN1 RUN2 --variant-run RUN --kfold 0.9370
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from bench import REPO, SHARED_WEIGHTS, machine, timed  # bench.py puts src/ on the path
from compete.compare import compare_runs  # noqa: E402
from compete.runs import RunFolder, find_run  # noqa: E402


def train(args, seed: int, *options: str) -> str:
    """`train` with this seed; the new run's id."""
    data = ["--data", args.data] if args.data else []
    _, out = timed([sys.executable, "-m", "compete", "train", args.name, "--preset", args.preset, "--seed",
                    str(seed), "--device", args.device, *data, *options])
    return Path(out.strip().splitlines()[-1].split("Run saved in ", 1)[1]).name


def interval_row(args, seed, run: str) -> dict:
    summary = RunFolder(find_run(args.name, run)).summary()  # as train printed it
    score, interval, images = summary["ensemble_score"], summary["score_interval"], summary["validated"]
    return {"name": args.name, "preset": args.preset, "part": "interval", "seed": seed, "run": run,
            "score": score, "interval": interval, "images": images, "machine": machine(),
            "holds_kfold": None if args.kfold is None else interval[0] <= args.kfold <= interval[1]}


def table(rows: list[dict], kfold: float | None) -> str:
    lines = ["| seed | run | hold-out score | 95% interval | width | holds the 5-fold score |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        low, high = row["interval"]
        holds = "-" if row["holds_kfold"] is None else ("yes" if row["holds_kfold"] else "no")
        lines.append(f"| {row['seed']} | {row['run']} | {row['score']:.4f} | [{low:.4f}, {high:.4f}] | "
                     f"{high - low:.4f} | {holds} |")
    if kfold is not None:
        lines.append(f"| 5-fold CV | (BENCHMARKS, bench/honest.py --parts kfold) | {kfold:.4f} | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", help="the competition's files (default: inputs/NAME)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--variant", default="--epochs 8", help="train options of the run compared with the "
                        "first seed's (same seed, so the same split)")
    parser.add_argument("--runs", nargs="+", help="trained runs, one per --seeds, instead of training")
    parser.add_argument("--variant-run", help="a trained run of the variant instead of training it")
    parser.add_argument("--kfold", type=float, help="the 5-fold CV score to hold the intervals against")
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = str(REPO / "src")
    os.environ.setdefault("COMPETE_WEIGHTS", str(SHARED_WEIGHTS))
    runs = args.runs or [train(args, seed) for seed in args.seeds]
    rows = [interval_row(args, seed, run) for seed, run in zip(args.seeds, runs)]
    variant = args.variant_run or train(args, args.seeds[0], *shlex.split(args.variant))
    with open(REPO / "bench" / "results.jsonl", "a") as log:
        for row in rows:
            log.write(json.dumps(row) + "\n")
    print(f"{machine()}; {args.name} --preset {args.preset}\n\n{table(rows, args.kfold)}\n")
    print(f"./run.sh compare {args.name} {runs[0]} {variant}   (B: {args.variant or 'the variant run'})")
    paired = compare_runs(args.name, runs[0], variant)
    with open(REPO / "bench" / "results.jsonl", "a") as log:
        log.write(json.dumps({"name": args.name, "preset": args.preset, "part": "compare", "a": runs[0],
                              "b": variant, "variant": args.variant, **vars(paired), "machine": machine()}) + "\n")


if __name__ == "__main__":
    main()
